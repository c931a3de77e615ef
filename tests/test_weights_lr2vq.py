"""weights/lr2vq: shared codebooks, rate budget, deterministic reconstruction, calibration."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import nzip
from nzip.codecs.weights_lr2vq import effective_codebook
from nzip.errors import InvalidInputError


def _model(tmp_path):
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(8, 64, generator=g)  # low-dimensional structure VQ can find
    sd = {f"encoder.layer.{i}.dense.weight": (torch.randn(512, 8, generator=g) @ basis) * 0.05
          for i in range(2)}
    sd["encoder.layer.0.dense.bias"] = torch.randn(512, generator=g) * 0.01
    sd["ids"] = torch.arange(32)
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    return p, sd


def test_roundtrip_budget_and_shared_codebook(tmp_path):
    p, sd = _model(tmp_path)
    out = tmp_path / "v.nz"
    nzip.encode(p, out, codec="weights/lr2vq", bpw=2.0)
    n = sum(v.numel() for v in sd.values())
    assert out.stat().st_size * 8 / n <= 2.0
    info = nzip.info(out)
    assert info["params"]["groups"] == 1  # both layers share one codebook
    a, b = nzip.weights.load(out), nzip.weights.load(out)
    assert torch.equal(a["ids"], sd["ids"])
    for k in ("encoder.layer.0.dense.weight", "encoder.layer.1.dense.weight"):
        assert torch.equal(a[k], b[k]) and a[k].shape == sd[k].shape
        rel = (a[k] - sd[k]).pow(2).mean() / sd[k].pow(2).mean()
        assert rel < 0.5


def test_effective_codebook_is_exact_float64_sum():
    rng = np.random.default_rng(0)
    cb, up, mu = (rng.normal(size=s).astype(np.float16) for s in ((16, 4), (4, 8), (8,)))
    ref = (cb.astype(np.float64) @ up.astype(np.float64) + mu.astype(np.float64)).astype(np.float32)
    assert np.allclose(effective_codebook(cb, up, mu), ref, atol=1e-6)


class _Calib:
    def __init__(self, sd):
        g = torch.Generator().manual_seed(2)
        self.sd = {k: v for k, v in sd.items() if v.is_floating_point()}
        self.x = torch.randn(48, 64, generator=g)
        self.n = 48
        with torch.no_grad():
            self.ref = self.outputs({}, torch.arange(48))

    def outputs(self, params, idx):
        p = {**self.sd, **params}
        return self.x[idx] @ p["encoder.layer.0.dense.weight"].T + self.x[idx] @ p["encoder.layer.1.dense.weight"].T

    def loss(self, params, idx):
        return (self.outputs(params, idx) - self.ref[idx]).pow(2).mean()


def test_calibration_and_errors(tmp_path):
    p, sd = _model(tmp_path)
    cal = _Calib(sd)
    losses = []
    for steps in (0, 40):
        out = tmp_path / f"c{steps}.nz"
        nzip.encode(p, out, codec="weights/lr2vq", k=16, calib=cal, calib_steps=steps)
        back = {k: v for k, v in nzip.weights.load(out).items() if v.is_floating_point()}
        with torch.no_grad():
            losses.append(float(cal.loss(back, torch.arange(48))))
    assert losses[1] < losses[0]
    with pytest.raises(InvalidInputError, match="rate"):
        nzip.encode(p, tmp_path / "x.nz", codec="weights/lr2vq")
    with pytest.raises(InvalidInputError, match="rank"):
        nzip.encode(p, tmp_path / "x.nz", codec="weights/lr2vq", k=16, rank=99)
