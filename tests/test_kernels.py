"""GPU kernels (nzip/kernels) against their CPU twins: bit-exact, under TRITON_INTERPRET=1 on
machines without CUDA (see conftest). Every test here has "kernel" in its name."""
import numpy as np
import pytest
import torch

import nzip
import nzip.weights
from nzip import entropy as E
from nzip import kernels
from nzip.errors import CorruptDataError
from nzip.kernels import floats, gather, pq_scan, rans

pytestmark = pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _blobs(rng):
    """Static blobs of several dtypes, lane counts and block sizes, plus an empty and a constant."""
    vals = [
        rng.integers(0, 7, 3001).astype(np.uint8),
        np.clip(rng.normal(0, 40, 2500), -300, 300).astype(np.int16),
        rng.integers(0, 600, 1500).astype(np.uint16),  # alphabet > 256
        rng.integers(0, 2, 700).astype(bool),
        (rng.geometric(0.05, 900) - 20).astype(np.int32),
        np.zeros(0, np.uint8),
        np.full(333, 5, np.int16),
        rng.integers(0, 256, 64).astype(np.uint8),  # shorter than its lane count
    ]
    cfg = [(8, 1024), (32, 512), (4, 256), (1, 128), (16, 64), (None, None), (None, None), (32, 1024)]
    return vals, [E.encode(v, lanes=ln, block=b) for v, (ln, b) in zip(vals, cfg)]


def test_kernel_rans_static_blobs_match_the_cpu_decoder():
    vals, blobs = _blobs(np.random.default_rng(1))
    got = rans.decode_blobs(blobs, DEV, kernel=True)
    twin = rans.decode_blobs(blobs, DEV, kernel=False)
    for v, g, t in zip(vals, got, twin):
        assert g.dtype == t.dtype and torch.equal(g.cpu(), t.cpu())
        assert np.array_equal(g.cpu().numpy(), v)


def test_kernel_rans_context_blobs_match_the_cpu_decoder():
    rng = np.random.default_rng(2)
    sym = rng.integers(0, 250, 5000).astype(np.uint8)
    ctx = (sym // 50 + rng.integers(0, 2, 5000)).astype(np.uint16) % 5
    big = rng.integers(0, 1000, 800).astype(np.uint16)
    bctx = (big % 3).astype(np.uint16)
    blobs = [E.encode_context(sym, ctx, 5, lanes=32, block=1024), E.encode_context(big, bctx, 3, lanes=8)]
    got = rans.decode_blobs(blobs, DEV, [ctx, torch.from_numpy(bctx.astype(np.int32))], kernel=True)
    twin = rans.decode_blobs(blobs, DEV, [ctx, bctx], kernel=False)
    for g, t, v in zip(got, twin, (sym, big)):
        assert g.dtype == t.dtype and torch.equal(g.cpu(), t.cpu())
        assert np.array_equal(g.cpu().numpy().astype(np.int64), v.astype(np.int64))


@pytest.mark.parametrize("where", ["word", "state"])
def test_kernel_rans_reports_corrupt_blocks_like_the_cpu(where):
    v = np.random.default_rng(3).integers(0, 40, 4000).astype(np.uint8)
    blob = bytearray(E.encode(v, lanes=16, block=1024))
    blob[-7 if where == "word" else len(blob) - 2 * 300] ^= 0x5A
    for use in (True, False):
        try:
            out = rans.decode(bytes(blob), DEV, kernel=use)
        except CorruptDataError as e:
            assert "block" in str(e) or "entropy blob" in str(e)
        else:  # a flip the format cannot see must at least decode to the same on both paths
            assert torch.equal(out.cpu(), rans.decode(bytes(blob), DEV, kernel=not use).cpu())


def test_kernel_float_joins_match_their_twins():
    g = torch.Generator().manual_seed(0)
    e, sm, lo, b0 = (torch.randint(0, 256, (4099,), generator=g, dtype=torch.int32).to(torch.uint8).to(DEV)
                     for _ in range(4))
    for args in ((e, sm, None, 8), (e & 31, sm, lo & 7, 5)):
        assert torch.equal(floats.join16(*args, kernel=True).cpu(), floats.join16(*args, kernel=False).cpu())
    assert torch.equal(floats.join32(e, sm, lo, b0, kernel=True).cpu(),
                       floats.join32(e, sm, lo, b0, kernel=False).cpu())
    x = torch.randn(1000, generator=g).to(torch.bfloat16)  # and the join rebuilds real floats
    u = x.view(torch.int16).to(torch.int32) & 0xFFFF
    e16, sm16 = ((u >> 7) & 0xFF).to(torch.uint8), (((u >> 8) & 0x80) | (u & 0x7F)).to(torch.uint8)
    assert torch.equal(floats.join16(e16.to(DEV), sm16.to(DEV), None, 8, kernel=True).view(torch.bfloat16).cpu(), x)


def test_kernel_codebook_gathers_match_their_twins():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 50, (301, 3), generator=g).to(DEV)
    books = torch.randn(3, 50, 20, generator=g).to(DEV)
    assert torch.equal(gather.rvq(codes, books, kernel=True).cpu(), gather.rvq(codes, books, kernel=False).cpu())
    assert torch.equal(gather.pq(codes, books, kernel=True).cpu(), gather.pq(codes, books, kernel=False).cpu())
    idx = codes[:300, 0].reshape(2, 15, 10)
    assert torch.equal(gather.vq(idx, books[0], kernel=True).cpu(), books[0][idx].cpu())
    with pytest.raises(nzip.NzipError):
        gather.pq(codes + 50, books, kernel=True)
    wide = codes.to(torch.uint16)  # more than 256 centroids: the embedding codecs' codes are uint16
    assert torch.equal(gather.pq(wide, books, kernel=True).cpu(), gather.pq(codes, books, kernel=False).cpu())
    assert torch.equal(gather.rvq(wide, books, kernel=True).cpu(), gather.rvq(codes, books, kernel=False).cpu())


def test_kernel_pq_scan_ranks_like_the_cpu_scan():
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 16, (1500, 8), generator=g).to(torch.uint8)
    lut = torch.randn(7, 8 * 16, generator=g).round(decimals=1)  # coarse values: many tied scores
    offs = np.arange(8) * 16
    ik, sk = pq_scan.topk(codes.to(DEV), offs, lut.to(DEV), 12, kernel=True)
    it, st = pq_scan.topk(codes, offs, lut, 12, kernel=False)
    assert torch.equal(ik.cpu(), it) and torch.equal(sk.cpu(), st)
    ref = pq_scan.scores_twin(codes, offs, lut)
    assert torch.equal(sk.cpu(), torch.gather(ref, 1, ik.cpu()))
    scale = torch.rand(1500, generator=g) + 0.5  # cosine scores of a normalised index
    ik, sk = pq_scan.topk(codes.to(DEV), offs, lut.to(DEV), 12, kernel=True, scale=scale.to(DEV))
    it, st = pq_scan.topk(codes, offs, lut, 12, kernel=False, scale=scale)
    assert torch.equal(ik.cpu(), it) and torch.equal(sk.cpu(), st)


def test_kernel_pq_scan_merges_slices(monkeypatch):
    monkeypatch.setattr(pq_scan, "SLICE_KEYS", 3 * 128 * 2)  # 2 queries: slices of 384 codes
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (1000, 4), generator=g).to(torch.uint8)
    lut = torch.randn(2, 32, generator=g)
    offs = np.arange(4) * 8
    ik, sk = pq_scan.topk(codes.to(DEV), offs, lut.to(DEV), 20, kernel=True)
    it, st = pq_scan.topk(codes, offs, lut, 20, kernel=False)
    assert torch.equal(ik.cpu(), it) and torch.equal(sk.cpu(), st)


def test_kernel_dispatch_weights_load(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(4)
    sd = {"w": (torch.randn(300, 256, generator=g) * 0.02).to(torch.bfloat16),  # context models
          "h": torch.randn(40, 30, generator=g).half(), "f": torch.randn(64, 48, generator=g),
          "i": torch.arange(12), "t": torch.zeros(0)}
    sd["f"][:8] = sd["f"][:8].half().float()  # fp32 rows with spare precision
    sd["w"][7] = 0  # escaped values of the joint layout (zeros)
    save_file(sd, tmp_path / "m.safetensors")
    for mode in ("best", "fast"):
        nzip.encode(tmp_path / "m.safetensors", tmp_path / f"{mode}.nz", mode=mode)
        monkeypatch.setenv("NZIP_KERNELS", "1" if DEV == "cpu" else "")
        got = nzip.weights.load(tmp_path / f"{mode}.nz", device=DEV)
        for k, v in sd.items():
            assert got[k].device.type == torch.device(DEV).type
            assert got[k].dtype == v.dtype and torch.equal(got[k].cpu(), v), k
        part = nzip.weights.load(tmp_path / f"{mode}.nz", names=["h"], device=DEV)
        assert list(part) == ["h"] and torch.equal(part["h"].cpu(), sd["h"])


def test_kernel_weights_joint_layout_fp32_fp16(tmp_path, monkeypatch):
    """mode=best's joint layout on fp32 (escapes, rows with spare precision) and fp16 matrices
    decodes on the device path (torch ops around the rANS kernel) to the same bits."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(6)
    sd = {"wf": torch.randn(256, 256, generator=g) * 0.05, "wh": (torch.randn(256, 256, generator=g) * 0.1).half()}
    sd["wf"][3, :5] = 0
    sd["wf"][:16] = sd["wf"][:16].half().float()
    from nzip.codecs.weights_lossless import JOINT, encode_tensor

    for k, dt in (("wf", "F32"), ("wh", "F16")):  # the layout under test is the one chosen
        raw = sd[k].view(torch.uint8).numpy().reshape(-1).copy()
        assert encode_tensor(dt, raw, "best", list(sd[k].shape))[1] == JOINT
    save_file(sd, tmp_path / "m.safetensors")
    nzip.encode(tmp_path / "m.safetensors", tmp_path / "m.nz", mode="best")
    monkeypatch.setenv("NZIP_KERNELS", "1" if DEV == "cpu" else "")
    got = nzip.weights.load(tmp_path / "m.nz", device=DEV)
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k].cpu(), v), k

def test_kernel_dispatch_search_and_decode(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(700, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    nzip.encode(x, tmp_path / "e.nz", codec="embedding/opq", bytes=4)
    q = x[:9] + 0.01 * rng.normal(size=(9, 16)).astype(np.float32)
    cpu_ids, cpu_s = nzip.search(tmp_path / "e.nz", q, k=5)
    cpu_y = nzip.decode(tmp_path / "e.nz")
    monkeypatch.setenv("NZIP_KERNELS", "1" if DEV == "cpu" else "")
    index = nzip.open_index(tmp_path / "e.nz", device=DEV)
    assert index._kernel
    ids, s = index.search(q, k=5)
    assert np.array_equal(ids, cpu_ids) and np.array_equal(s, cpu_s)
    y = nzip.decode(tmp_path / "e.nz", device=DEV)
    assert np.allclose(y, cpu_y, atol=1e-6)


def test_kernel_switch(monkeypatch):
    monkeypatch.setenv("NZIP_KERNELS", "0")
    assert not kernels.use_kernel("cpu") and not kernels.use_kernel("cuda")
    monkeypatch.setenv("NZIP_KERNELS", "")
    assert not kernels.use_kernel("cpu")  # the CPU runs the twins unless told otherwise
    # launches switch to the data's GPU (Triton launches on the current one); nothing on the CPU
    guard = kernels.on_device(torch.device("cuda:1"))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(kernels.on_device("cpu"), torch.cuda.device)


def test_kernel_benchmark_script_runs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(script), "--smoke", "--json", str(out)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 9 and all(row["GB/s"] > 0 for row in rows)
    r = subprocess.run([sys.executable, str(script), "--host", "--scale", "0.001", "--repeat", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [ln.split("|")[1].strip() for ln in r.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()] \
        == ["4096", "65536"]


def test_kernel_dispatch_residual_decode(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    nzip.encode(x, tmp_path / "r.nz", codec="embedding/rq", bytes=3, k=32)
    cpu = nzip.decode(tmp_path / "r.nz")
    monkeypatch.setenv("NZIP_KERNELS", "1" if DEV == "cpu" else "")
    assert np.array_equal(nzip.decode(tmp_path / "r.nz", device=DEV), cpu)  # same sums, same order


def test_a_forged_symbol_count_is_refused_before_allocating():
    from nzip.entropy import coder

    blob = coder.encode(np.arange(1000, dtype=np.int16) % 7)
    assert torch.equal(rans.decode_blobs([blob], DEV, limits=[1000])[0].cpu(), torch.arange(1000, dtype=torch.int16) % 7)
    with pytest.raises(CorruptDataError, match="declares 1000 symbols, more than the 999 expected"):
        rans.decode_blobs([blob], DEV, limits=[999], what="t")
