"""weights/quant: the rate budget holds, reconstruction is deterministic and keeps dtypes."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import nzip
from nzip.codecs.weights_quant import from_float32
from nzip.errors import InvalidInputError


def _model(tmp_path, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(256, 128, generator=g) * 0.05,
          "b.weight": torch.randn(128, 256, generator=g) * 0.2,
          "a.bias": torch.randn(256, generator=g) * 0.01,
          "ids": torch.arange(64)}
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    return p, sd


@pytest.mark.parametrize("bpw", [2.0, 4.0, 6.0])
def test_budget_and_fidelity(tmp_path, bpw):
    p, sd = _model(tmp_path)
    out = tmp_path / "q.nz"
    nzip.encode(p, out, codec="weights/quant", bpw=bpw)
    n = sum(v.numel() for v in sd.values())
    assert out.stat().st_size * 8 / n <= bpw
    back = nzip.weights.load(out)
    assert torch.equal(back["ids"], sd["ids"])
    for k in ("a.weight", "b.weight"):
        err = (back[k] - sd[k]).pow(2).mean() / sd[k].pow(2).mean()
        assert err < 4.0 ** -(bpw - 1.5)  # ~6 dB per bit, less what the side arrays take
    nzip.decode(out, tmp_path / "r.safetensors")
    r = load_file(str(tmp_path / "r.safetensors"))
    assert {k: (v.dtype, v.shape) for k, v in r.items()} == {k: (v.dtype, v.shape) for k, v in sd.items()}


def test_bf16_and_determinism(tmp_path):
    p, sd = _model(tmp_path, torch.bfloat16)
    nzip.encode(p, tmp_path / "q.nz", codec="weights/quant", bpw=4)
    a, b = nzip.weights.load(tmp_path / "q.nz"), nzip.weights.load(tmp_path / "q.nz")
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == sd[k].dtype for k in sd)


def test_bf16_rounding_matches_torch():
    x = np.random.default_rng(0).normal(size=10000).astype(np.float32)
    x[:3] = [np.nan, np.inf, -0.0]
    ours = from_float32(x, "BF16").view(np.uint16)
    theirs = torch.from_numpy(x).bfloat16().view(torch.uint16).numpy()
    assert np.array_equal(ours[3:], theirs[3:]) and np.isnan(torch.from_numpy(ours.view(np.int16)).view(torch.bfloat16)[0].item())


def test_needs_a_rate(tmp_path):
    p, _ = _model(tmp_path)
    with pytest.raises(InvalidInputError, match="bpw"):
        nzip.encode(p, tmp_path / "q.nz", codec="weights/quant")
    with pytest.raises(InvalidInputError, match="no room"):
        nzip.encode(p, tmp_path / "q.nz", codec="weights/quant", bpw=0.01)
    assert not (tmp_path / "q.nz").exists()


class _LinearCalib:
    """A two-layer linear model on random inputs: the calibration protocol without a real model."""

    def __init__(self, sd):
        g = torch.Generator().manual_seed(1)
        self.sd = {k: v.float() for k, v in sd.items() if v.is_floating_point()}
        self.x = torch.randn(64, 128, generator=g)
        self.n = 64
        with torch.no_grad():
            self.ref = self.outputs({}, torch.arange(64))

    def outputs(self, params, idx):
        p = {**self.sd, **params}
        h = self.x[idx] @ p["a.weight"].T + p["a.bias"]
        return h @ p["b.weight"].T

    def loss(self, params, idx):
        return (self.outputs(params, idx) - self.ref[idx]).pow(2).mean()


def test_calibration_object(tmp_path):
    p, sd = _model(tmp_path)
    cal = _LinearCalib(sd)
    errs = {}
    for steps in (0, 30):
        out = tmp_path / f"c{steps}.nz"
        nzip.encode(p, out, codec="weights/quant", bpw=3, calib=cal, calib_steps=steps)
        n = sum(v.numel() for v in sd.values())
        assert out.stat().st_size * 8 / n <= 3
        back = nzip.weights.load(out)
        with torch.no_grad():
            errs[steps] = float(cal.loss({k: v.float() for k, v in back.items() if v.is_floating_point()},
                                         torch.arange(64)))
    assert errs[30] < errs[0]  # distillation moved the steps towards the original's outputs
    assert nzip.info(tmp_path / "c30.nz")["params"]["steps"] == "fisher"


class _GramCalib(_LinearCalib):
    def linear_inputs(self, names):
        with torch.no_grad():
            h = self.x @ self.sd["a.weight"].T + self.sd["a.bias"]
        grams = {"a.weight": (self.x.T @ self.x).double().numpy(), "b.weight": (h.T @ h).double().numpy()}
        return {k: v for k, v in grams.items() if k in names}


def test_gptq_rounding_lowers_output_error_within_budget(tmp_path):
    p, sd = _model(tmp_path)
    cal = _GramCalib(sd)
    n = sum(v.numel() for v in sd.values())
    errs = {}
    for rounding in ("nearest", "gptq"):
        out = tmp_path / f"{rounding}.nz"
        nzip.encode(p, out, codec="weights/quant", bpw=3, calib=cal, rounding=rounding)
        assert out.stat().st_size * 8 / n <= 3
        assert nzip.info(out)["params"]["rounding"] == rounding
        back = nzip.weights.load(out)
        with torch.no_grad():
            errs[rounding] = float(cal.loss({k: v.float() for k, v in back.items() if v.is_floating_point()},
                                            torch.arange(64)))
    assert errs["gptq"] < 0.9 * errs["nearest"]
    with pytest.raises(InvalidInputError, match="rounding"):
        nzip.encode(p, tmp_path / "x.nz", codec="weights/quant", bpw=3, calib=_LinearCalib(sd), rounding="gptq")
