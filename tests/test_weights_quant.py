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


@pytest.mark.parametrize("codec", ["weights/quant", "weights/lr2vq"])
def test_lossy_codecs_keep_what_float16_cannot_hold_and_refuse_bad_rates(tmp_path, codec):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(256, 128, generator=g) * 0.05
    w[3] = 0  # a zero row (a padding embedding): lr2vq's row scale must stay > 0 in float16
    sd = {"a.weight": w, "b.weight": torch.randn(128, 256, generator=g) * 0.2,
          "huge.weight": torch.randn(64, 128, generator=g) * 1e5,  # beyond float16: kept exactly
          "nan.weight": torch.full((64, 128), float("nan")),
          "bn.running_var": torch.full((64,), 1e6), "attn.masked_bias": torch.tensor(-1e9)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    nzip.encode(tmp_path / "m.safetensors", tmp_path / "q.nz", codec=codec, bpw=12)
    back = nzip.weights.load(tmp_path / "q.nz")
    for k in ("huge.weight", "bn.running_var", "attn.masked_bias"):
        assert torch.equal(back[k], sd[k]), k
    assert torch.isnan(back["nan.weight"]).all() and torch.isfinite(back["a.weight"]).all()
    assert back["a.weight"][3].abs().max() < 1e-6  # the zero row stays (nearly) zero
    assert torch.nn.functional.cosine_similarity(back["b.weight"].flatten(), sd["b.weight"].flatten(), 0) > 0.95
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(InvalidInputError, match="positive number of bits"):
            nzip.encode(tmp_path / "m.safetensors", tmp_path / "r.nz", codec=codec, bpw=bad)
    with pytest.raises(InvalidInputError, match="no room|below its smallest rate"):
        nzip.encode(tmp_path / "m.safetensors", tmp_path / "r.nz", codec=codec, bpw=0.5)
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(InvalidInputError, match="no tensor values"):
        nzip.encode(tmp_path / "empty.safetensors", tmp_path / "r.nz", codec=codec, bpw=4)
    (tmp_path / "m2" / "unet").mkdir(parents=True)
    (tmp_path / "m2" / "vae").mkdir()
    for sub in ("unet", "vae"):  # a diffusers-style folder: two files share tensor names
        save_file({"conv_in.weight": torch.randn(128, 64, generator=g)}, str(tmp_path / "m2" / sub / "m.safetensors"))
    with pytest.raises(InvalidInputError, match="both hold a tensor named"):
        nzip.encode(tmp_path / "m2", tmp_path / "r.nz", codec=codec, bpw=8)
    assert not (tmp_path / "r.nz").exists()


def test_load_keys_tensors_that_files_of_a_folder_share_by_file(tmp_path, capsys):
    g = torch.Generator().manual_seed(3)
    parts = {}
    for sub in ("unet", "vae"):
        (tmp_path / "m" / sub).mkdir(parents=True)
        parts[sub] = {"conv_in.weight": torch.randn(8, 4, generator=g), f"{sub}.only": torch.ones(2)}
        save_file(parts[sub], str(tmp_path / "m" / sub / "m.safetensors"))
    nzip.encode(tmp_path / "m", tmp_path / "m.nz")
    sd = nzip.weights.load(tmp_path / "m.nz")
    assert sorted(sd) == ["unet.only", "unet/m.safetensors:conv_in.weight", "vae.only",
                          "vae/m.safetensors:conv_in.weight"]
    for sub in ("unet", "vae"):
        assert torch.equal(sd[f"{sub}/m.safetensors:conv_in.weight"], parts[sub]["conv_in.weight"])
    one = nzip.weights.load(tmp_path / "m.nz", names="vae/m.safetensors:conv_in.weight")  # a single name
    assert list(one) == ["vae/m.safetensors:conv_in.weight"]
    assert torch.equal(one["vae/m.safetensors:conv_in.weight"], parts["vae"]["conv_in.weight"])
    keys = {r["key"] for r in nzip.weights.tensors(tmp_path / "m.nz")}
    assert keys == set(sd)
    from nzip import cli

    cli.main(["info", str(tmp_path / "m.nz")])
    assert "tensor  vae/m.safetensors:conv_in.weight: F32 [8, 4]" in capsys.readouterr().out
