"""weights/lossless: checkpoints in every supported form come back bit-exact."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import nzip
from nzip.codecs.weights_lossless import decode_tensor, encode_tensor
from nzip.errors import CorruptDataError, InvalidInputError, NzipError


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.0.weight": torch.randn(256, 96, generator=g) * 0.05,
        "layer.0.bias": torch.randn(96, generator=g) * 0.01,
        "emb.weight": torch.randn(500, 64, generator=g) * torch.rand(500, 1, generator=g),
        "norm.weight": torch.ones(64),
        "ids": torch.arange(100, dtype=torch.int64).reshape(1, 100),
        "mask": torch.rand(33, generator=g) > 0.5,
        "half": (torch.randn(40, 40, generator=g) * 0.1).half(),
        "double": torch.randn(50, generator=g, dtype=torch.float64),
        "fp8": (torch.randn(300, generator=g)).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64", "F8_E4M3", "I64", "I32", "BOOL", "U8"])
@pytest.mark.parametrize("mode", ["best", "fast"])
def test_tensor_streams_are_exact(dtype, mode):
    rng = np.random.default_rng(0)
    from nzip.formats.checkpoint import DTYPES

    n = 20_000
    raw = rng.integers(0, 256, n * DTYPES[dtype], dtype=np.uint8)
    if dtype in ("F32", "BF16"):  # realistic floats too, so the context path runs
        t = torch.from_numpy(rng.normal(0, 0.02, n).astype(np.float32))
        t = t.to(torch.bfloat16) if dtype == "BF16" else t
        raw = t.view(torch.uint8).numpy().copy() if dtype == "BF16" else t.numpy().view(np.uint8).copy()
    blob = encode_tensor(dtype, raw, mode)
    assert np.array_equal(decode_tensor(blob, dtype, n, mode), raw)


def test_safetensors_roundtrip_is_byte_identical(tmp_path):
    src, nz, out = tmp_path / "m.safetensors", tmp_path / "m.nz", tmp_path / "back.safetensors"
    save_file(_weights(), str(src), metadata={"format": "pt", "note": "hello"})
    rep = nzip.encode(src, nz)
    assert rep.codec == "weights/lossless"
    nzip.decode(nz, out)
    assert _sha(src) == _sha(out)


def test_bf16_compresses_well_and_lazy_load(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {f"l{i}.weight": (torch.randn(512, 256, generator=g) * 0.02).bfloat16() for i in range(3)}
    src, nz = tmp_path / "b.safetensors", tmp_path / "b.nz"
    save_file(sd, str(src))
    rep = nzip.encode(src, nz)
    assert rep.ratio > 1.45  # Gaussian bf16: the field bound is ~1.5x
    part = nzip.weights.load(nz, names=["l1.weight"])
    assert list(part) == ["l1.weight"] and torch.equal(part["l1.weight"], sd["l1.weight"])
    full = nzip.weights.load(nz)
    assert all(torch.equal(full[k], sd[k]) for k in sd)
    import numba

    t = numba.get_num_threads()
    try:  # one thread: the kernels run inline, not on the pool
        numba.set_num_threads(1)
        one = nzip.weights.load(nz)
    finally:
        numba.set_num_threads(t)
    assert all(torch.equal(one[k], sd[k]) for k in sd)
    rows = nzip.weights.tensors(nz)
    assert [r["name"] for r in rows] == sorted(sd) and all(r["stored_bytes"] < r["raw_bytes"] for r in rows)
    with pytest.raises(InvalidInputError, match="no tensor named"):
        nzip.weights.load(nz, names=["nope"])


def test_pipelined_decode_runs_every_block_and_waits_before_raising():
    """``pipelined`` (the parse of each tensor overlapped with the kernels of those before it):
    every block of every tensor runs once, results come back in order, and an error in a parse
    or in a kernel propagates only after every queued kernel has run (they read the mapped file)."""
    import threading
    import time

    from nzip.codecs.weights_lossless import Started, pipelined

    ran, lock = [], threading.Lock()

    def start(job):
        if job == "bad":
            raise CorruptDataError("bad tensor")

        def run(b0, b1):
            time.sleep(0.02)
            if job == "boom":
                raise ValueError("kernel failed")
            with lock:
                ran.extend((job, b) for b in range(b0, b1))

        if job == "plain":
            return Started(0, None, lambda: np.full(1, 7))
        return Started(5, run, lambda: np.full(1, len(job)))

    done = []
    pipelined(["aa", "plain", "bbb"], start, lambda j, d: done.append((j, int(d[0]))))
    assert done == [("aa", 2), ("plain", 7), ("bbb", 3)]
    assert sorted(ran) == [(j, b) for j in ("aa", "bbb") for b in range(5)]
    ran.clear()
    with pytest.raises(CorruptDataError, match="bad tensor"):
        pipelined(["aa", "bbb", "bad", "cc"], start, lambda j, d: None)
    assert sorted(ran) == [(j, b) for j in ("aa", "bbb") for b in range(5)]  # all ran, none after
    ran.clear()
    with pytest.raises(ValueError, match="kernel failed"):
        pipelined(["boom", "aa"], start, lambda j, d: None)
    from nzip._native import threads

    # on the pool "aa" was queued behind "boom" and ran; on one thread the kernels run inline
    assert sorted(ran) == ([("aa", b) for b in range(5)] if threads() > 1 else [])


def test_torch_state_dict_with_tied_weights(tmp_path):
    sd = _weights()
    sd["tied.weight"] = sd["emb.weight"]  # shares storage
    sd["step"] = 1234
    src, nz, out = tmp_path / "m.pt", tmp_path / "m.nz", tmp_path / "back.pt"
    torch.save(sd, src)
    nzip.encode(src, nz)
    nzip.decode(nz, out)
    back = torch.load(out, weights_only=True)
    assert back.keys() == sd.keys() and back["step"] == 1234
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            assert back[k].dtype == v.dtype and back[k].shape == v.shape
            assert torch.equal(back[k].view(torch.uint8) if v.dtype == torch.float8_e4m3fn else back[k],
                               v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v)
    assert back["tied.weight"].data_ptr() == back["emb.weight"].data_ptr()


def test_non_finite_extras_are_stored_as_strict_json(tmp_path):
    import math
    import zipfile

    sd = {"w": torch.randn(8, 8), "best_loss": float("inf"), "low": float("-inf"), "last": float("nan"),
          "epoch": 3, "name": "run"}
    src, nz, out = tmp_path / "m.pt", tmp_path / "m.nz", tmp_path / "back.pt"
    torch.save(sd, src)
    nzip.encode(src, nz)

    def strict(c):
        raise ValueError(f"non-standard JSON constant {c}")

    with zipfile.ZipFile(nz) as z:
        json.loads(z.read("zarr.json"), parse_constant=strict)  # no NaN / Infinity in the metadata
    nzip.decode(nz, out)
    back = torch.load(out, weights_only=True)
    assert back["best_loss"] == math.inf and back["low"] == -math.inf and math.isnan(back["last"])
    assert back["epoch"] == 3 and back["name"] == "run" and torch.equal(back["w"], sd["w"])


def test_pickled_payload_and_partial_views_are_refused(tmp_path):
    import fractions

    p = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(3), "obj": fractions.Fraction(1, 3)}, p)  # needs real pickle
    with pytest.raises(InvalidInputError, match="pickle"):
        nzip.encode(p, tmp_path / "evil.nz")
    assert not (tmp_path / "evil.nz").exists()
    base = torch.randn(10, 10)
    p2 = tmp_path / "views.pt"
    torch.save({"a": base, "b": base[2:5]}, p2)
    with pytest.raises(InvalidInputError, match="share storage"):
        nzip.encode(p2, tmp_path / "v.nz")


def test_model_folder_with_shards(tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    w = _weights()
    names = sorted(w)
    save_file({k: w[k] for k in names[:5]}, str(src / "model-00001-of-00002.safetensors"))
    save_file({k: w[k] for k in names[5:]}, str(src / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"model-0000{1 + (i >= 5)}-of-00002.safetensors" for i, k in enumerate(names)}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    (src / "config.json").write_text('{"hidden": 64}')
    (src / "sub" / "tokenizer.txt").write_text("a b c\n" * 100)
    nzip.encode(src, tmp_path / "m.nz")
    nzip.decode(tmp_path / "m.nz", tmp_path / "back")
    for f in src.rglob("*"):
        if f.is_file():
            assert _sha(f) == _sha(tmp_path / "back" / f.relative_to(src))
    (src / "model-00002-of-00002.safetensors").unlink()
    (src / "x.safetensors").write_bytes((tmp_path / "back" / "model-00001-of-00002.safetensors").read_bytes())
    with pytest.raises(InvalidInputError, match="missing"):
        nzip.encode(src, tmp_path / "m2.nz")


def test_bad_inputs(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(InvalidInputError, match="not JSON"):
        nzip.encode(p, tmp_path / "o.nz")
    hdr = json.dumps({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}).encode()
    p.write_bytes(len(hdr).to_bytes(8, "little") + hdr + b"\x00")
    with pytest.raises(InvalidInputError, match="dtype F4"):
        nzip.encode(p, tmp_path / "o.nz")
    good = tmp_path / "g.safetensors"
    save_file({"w": torch.randn(1000)}, str(good))
    good.write_bytes(good.read_bytes()[:-10])  # truncated
    with pytest.raises(InvalidInputError, match="does not fit"):
        nzip.encode(good, tmp_path / "o.nz")
    for entry in ({"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]},
                  {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}, {"dtype": ["F32"], "shape": [1],
                                                                               "data_offsets": [0, 4]}):
        hdr = json.dumps({"w": entry}).encode()
        p.write_bytes(len(hdr).to_bytes(8, "little") + hdr + bytes(4))
        with pytest.raises(InvalidInputError, match="malformed header entry"):
            nzip.encode(p, tmp_path / "o.nz")
    (tmp_path / "empty.pt").write_bytes(b"")  # an interrupted download
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")
    for name in ("empty.pt", "text.pt"):
        with pytest.raises(InvalidInputError, match="not a readable torch checkpoint"):
            nzip.encode(tmp_path / name, tmp_path / "o.nz")
    torch.save({"w": torch.empty(3, device="meta")}, tmp_path / "meta.pt")
    with pytest.raises(InvalidInputError, match="meta device"):
        nzip.encode(tmp_path / "meta.pt", tmp_path / "o.nz")
    assert not (tmp_path / "o.nz").exists()


def test_truncated_and_corrupt_archives(tmp_path):
    src, nz = tmp_path / "m.safetensors", tmp_path / "m.nz"
    save_file({"w": torch.randn(5000) * 0.1}, str(src))
    nzip.encode(src, nz)
    data = nz.read_bytes()
    (tmp_path / "t.nz").write_bytes(data[: len(data) // 2])
    with pytest.raises(NzipError):
        nzip.decode(tmp_path / "t.nz", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    blob = encode_tensor("F32", torch.randn(5000).numpy().view(np.uint8).copy())
    for cut in (1, 5, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptDataError):
            decode_tensor(blob[:cut], "F32", 5000)


def test_mapped_reads_check_each_tensor(tmp_path):
    """Tensors are read from the memory-mapped .nz (no copy, the chunk's crc32c checked instead of
    zip's CRC-32): a flipped byte inside one tensor's stored bytes is refused by name, the other
    tensors still load, and a raw (incompressible) tensor does not keep a view of the file."""
    import zipfile

    src, nz = tmp_path / "m.safetensors", tmp_path / "m.nz"
    g = torch.Generator().manual_seed(3)
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=g)
    save_file({"a": torch.randn(64, 64, generator=g) * 0.02, "b": torch.randn(64, 64, generator=g) * 0.02,
               "noise": noise}, str(src))
    nzip.encode(src, nz)
    sd = nzip.weights.load(nz)  # the item is closed again here: the raw tensor must not need it
    assert torch.equal(sd["noise"], noise) and sd["noise"].numpy().flags.writeable
    with zipfile.ZipFile(nz) as zf:
        names = {zf.getinfo(n).header_offset: n for n in zf.namelist() if n.endswith("/c/0")}
        info = zf.getinfo(names[max(names)])
    data = bytearray(nz.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0x20
    bad = tmp_path / "bad.nz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum"):
        nzip.weights.load(bad)
    kept = nzip.weights.load(bad, names=["a"])  # an intact tensor of the damaged file
    assert torch.equal(kept["a"], sd["a"])


def test_cli_roundtrip_and_info(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file(_weights(), str(src))
    run = lambda *a: subprocess.run([sys.executable, "-m", "nzip.cli", *a], capture_output=True, text=True)
    r = run("encode", str(src), str(tmp_path / "m.nz"))
    assert r.returncode == 0, r.stderr
    r = run("info", str(tmp_path / "m.nz"))
    assert "tensor  layer.0.weight: F32 [256, 96]" in r.stdout
    r = run("decode", str(tmp_path / "m.nz"), str(tmp_path / "b.safetensors"))
    assert r.returncode == 0 and _sha(src) == _sha(tmp_path / "b.safetensors")
    r = run("decode", str(tmp_path / "m.nz"), str(tmp_path / "b.pt"))  # restored as it was: not a torch file
    assert r.returncode != 0 and "name the output as a .safetensors file" in r.stderr
    assert not (tmp_path / "b.pt").exists()
    r = run("encode", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.nz"))
    assert r.returncode != 0 and "Traceback" not in r.stderr


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_joint_layout_is_exact_on_both_decoders(dtype, monkeypatch):
    """mode=best codes a matrix's exponent and top 2 mantissa bits as one symbol (the rest raw):
    bit-exact through the C decoder and the numba one, on shapes whose size is not a multiple of
    4, with escaped values (zeros, tiny values; inf and nan), and below the C decoder's size."""
    from nzip.codecs import weights_lossless as W
    from nzip.entropy import coder

    g = torch.Generator().manual_seed(9)
    tdt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[dtype]
    for rows, cols in ((300, 257), (1025, 129), (97, 701)):
        w = torch.randn(rows, cols, generator=g) * torch.rand(rows, 1, generator=g) * 0.05
        w[1] = 0
        w[2, :7] = 1e-30
        w[4, 3] = -0.0
        t = w.to(tdt)
        raw = t.contiguous().view(torch.uint8).numpy().reshape(-1).copy()
        blob = encode_tensor(dtype, raw, "best", [rows, cols])
        assert blob[1] == W.JOINT  # the joint layout was chosen
        assert len(blob) < len(encode_tensor(dtype, raw, "fast", [rows, cols]))
        got = decode_tensor(blob, dtype, rows * cols, "best", shape=[rows, cols])
        assert np.array_equal(got, raw)
        with monkeypatch.context() as m:  # the numba decode and join
            m.setattr(coder.LaneStreams, "jointable", lambda *a: False)
            assert np.array_equal(decode_tensor(blob, dtype, rows * cols, "best", shape=[rows, cols]), raw)
        for cut in (3, len(blob) // 3, len(blob) - 1):
            with pytest.raises(CorruptDataError):
                decode_tensor(blob[:cut], dtype, rows * cols, "best", shape=[rows, cols])
    # inf/nan put the top exponent far above the weights': every weight would escape, so the
    # coder keeps the two fields apart there; still exact
    w[5, 5], w[6, 6] = float("inf"), float("nan")
    raw = w.to(tdt).contiguous().view(torch.uint8).numpy().reshape(-1).copy()
    blob = encode_tensor(dtype, raw, "best", list(w.shape))
    assert np.array_equal(decode_tensor(blob, dtype, w.numel(), "best", shape=list(w.shape)), raw)

@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_fast_mode_fields_decode_on_the_pool(dtype, monkeypatch):
    """mode=fast's order-0 fields of a large tensor are left to the pool like the joint layout's
    (the coded fields' blocks chained into one job, joined in finish): exact, the C job really
    taken, truncations refused."""
    from nzip.codecs import weights_lossless as W
    from nzip.entropy import coder, lanes_c

    g = torch.Generator().manual_seed(4)
    tdt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[dtype]
    w = (torch.randn(300, 257, generator=g) * 0.03).to(tdt)
    w[3, :5] = 0
    raw = w.contiguous().view(torch.uint8).numpy().reshape(-1).copy()
    blob = encode_tensor(dtype, raw, "fast", [300, 257])
    jobs = []
    real = coder.LaneStreams.static_job
    monkeypatch.setattr(coder.LaneStreams, "static_job", lambda self: jobs.append(real(self)) or jobs[-1])
    t = W.start_tensor(blob, dtype, w.numel(), "fast", "t", [300, 257])
    fields = list(jobs)  # (one per coded field: the exponents; fast writes the sign+mantissa bytes raw)
    if lanes_c.simd:
        assert t.nblocks > 0 and fields and all(j is not None for j in fields)
    for b in range(t.nblocks):  # one block at a time, as the pool may
        t.run(b, b + 1)
    assert np.array_equal(t.finish(), raw)
    assert np.array_equal(decode_tensor(blob, dtype, w.numel(), "fast", shape=[300, 257]), raw)
    for cut in (2, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptDataError):
            decode_tensor(blob[:cut], dtype, w.numel(), "fast", shape=[300, 257])


def _put_lo32_flag1(out: bytearray, u: np.ndarray, rows: int) -> None:
    """The low-16-bit layout of files written before flag 2 (every row through the contexts)."""
    from nzip.codecs import weights_lossless as W
    from nzip.entropy import coder as E
    from nzip.entropy._varint import put_uvarint

    lo = (u & 0xFFFF).astype(np.uint32)
    tz = W._row_precision(lo, rows)
    tze = np.repeat(tz, u.size // rows)
    v = lo >> tze.astype(np.uint32)
    keep, high = tze < 16, tze < 8
    out.append(1)
    for blob in (E.encode(tz), E.encode_context((v[keep] & 0xFF).astype(np.uint8), tze[keep], 17),
                 E.encode_context((v[high] >> 8).astype(np.uint8), tze[high], 8)):
        put_uvarint(out, len(blob))
        out += blob


@pytest.mark.parametrize("mode", ["best", "fast"])
def test_low_bytes_per_row_precision(mode):
    """fp32's low 16 bits with per-row precision (flag 2): full rows as plain fields, the others
    coded by their precision; zero rows, rows of tz >= 8 and < 8. Flag 1 (older files) still
    decodes, and flag 2 is no larger on near-uniform low bits."""
    from nzip.codecs import weights_lossless as W
    from nzip.codecs.weights_lossless import Reader

    g = torch.Generator().manual_seed(5)
    w = torch.randn(400, 96, generator=g) * 0.02
    w[::5] = w[::5].half().float()  # tz >= 13
    w[1::9] = w[1::9].bfloat16().float()  # tz 16 (bf16 values have no low 16 bits)
    w[2] = 0
    u = w.numpy().view(np.uint32).reshape(-1).copy()
    u[3 * 96:4 * 96] &= ~np.uint32(15)  # a few spare bits (tz < 8)
    tz = W._row_precision((u & 0xFFFF).astype(np.uint32), 400)
    assert (tz == 0).any() and (tz == 16).any() and ((tz > 0) & (tz < 8)).any() and ((tz >= 8) & (tz < 16)).any()
    new, old = bytearray(), bytearray()
    W._put_lo32(new, u, [400, 96], mode)
    _put_lo32_flag1(old, u, 400)
    assert new[0] == 2 and (mode == "fast" or len(new) <= len(old) + 8)
    for blob in (new, old):
        b1, b0 = W._get_lo32(Reader(bytes(blob), "t"), u.size, [400, 96])
        assert np.array_equal(b1, ((u >> 8) & 0xFF).astype(np.uint8)) and np.array_equal(b0, (u & 0xFF).astype(np.uint8))
    with pytest.raises(CorruptDataError):
        W._get_lo32(Reader(bytes(new[:-3]) if mode == "best" else bytes(new[:len(new) // 2]), "t"), u.size,
                    [400, 96])


def test_row_precision_and_scale_contexts():
    g = torch.Generator().manual_seed(3)
    rows = torch.rand(600, 1, generator=g) * 4
    cols = torch.rand(1, 128, generator=g) * 2
    w = torch.randn(600, 128, generator=g) * rows * cols * 0.02
    w[::7] = w[::7].half().float()  # rows upcast from fp16: 13 spare low bits each
    raw = w.numpy().view(np.uint8).reshape(-1).copy()
    best = encode_tensor("F32", raw, "best", [600, 128])
    plain = encode_tensor("F32", raw, "best", None)  # one row: no row precision, no scale contexts
    assert np.array_equal(decode_tensor(best, "F32", w.numel(), "best", shape=[600, 128]), raw)
    assert np.array_equal(decode_tensor(plain, "F32", w.numel(), "best"), raw)
    assert len(best) < 0.97 * len(plain)
    # a whole checkpoint upcast from fp16 keeps only fp16's information
    up = (torch.randn(512, 256, generator=g) * 0.02).half().float()
    blob = encode_tensor("F32", up.numpy().view(np.uint8).reshape(-1).copy(), "fast", [512, 256])
    assert up.numel() * 4 / len(blob) > 2.2


def test_c_twins_of_the_restore_passes_match_numba():
    """The joins, the escaped-value search and the low-mantissa rebuild run in C where the
    extension is built (so a restore loads no numba): the same bits as their numba kernels, on
    sizes around the parallel threshold's parts and rows of every precision."""
    from nzip.codecs import weights_lossless as W
    from nzip.entropy import lanes_c as LC

    if not LC.available:
        pytest.skip("the C extension was not built")
    rng = np.random.default_rng(3)
    u8 = lambda n: rng.integers(0, 256, n).astype(np.uint8)  # noqa: E731

    def same(reference, variants, args, n, dtype):
        """Every variant writes what the numba reference writes, into a fresh output."""
        want = np.empty(n, dtype)
        reference(*args, want)
        for f in variants:
            got = np.empty(n, dtype)
            f(*args, got)
            assert np.array_equal(got, want), f.__name__
        return want

    for n in (0, 1, 31, 1000, 2 * W.PARALLEL_MIN + 17):
        e, sm, lo3, b1, b0 = u8(n), u8(n), u8(n) & 7, u8(n), u8(n)
        for lo, ebits in ((np.zeros(0, np.uint8), 8), (lo3, 5)):
            same(W._join16_nb, (W._join16_part, W._join16), (e, sm, lo, ebits), n, np.uint16)
        same(W._join32_nb, (W._join32_part, W._join32), (e, sm, b1, b0), n, np.uint32)
        hi = rng.integers(0, 1 << 16, n).astype(np.uint16)
        want = same(W._join32_hi_nb, (W._join32_hi_part, W._join32_hi), (hi, b1, b0), n, np.uint32)
        for v, shift in ((hi, 7), (want, 23)):
            v = v.copy()
            v[::7] &= ~np.array(0xFF << shift, v.dtype)  # some zero fields
            assert np.array_equal(W._zero_fields(v, shift, 0xFF), W._zero_fields_nb(v, shift, 0xFF))
    for rows, per in ((40, 33), (7, 1)):
        tz = rng.integers(0, 18, rows).astype(np.uint8)
        for plain_full in (True, False):
            full = int((tz == 0).sum()) * per if plain_full else 0
            keep = int(((tz > 0) & (tz < 16)).sum() if plain_full else (tz < 16).sum()) * per
            high = int(((tz > 0) & (tz < 8)).sum() if plain_full else (tz < 8).sum()) * per
            args = (tz, per, u8(full), u8(full), u8(keep), u8(high))
            out_c, out_n = (np.empty(rows * per, np.uint8), np.empty(rows * per, np.uint8)), \
                (np.empty(rows * per, np.uint8), np.empty(rows * per, np.uint8))
            LC.lo_join(*args, *out_c, plain_full)
            W._lo_join(*args, *out_n, plain_full)
            assert np.array_equal(out_c[0], out_n[0]) and np.array_equal(out_c[1], out_n[1])


def test_restoring_a_checkpoint_file_loads_neither_numba_nor_zarr(tmp_path):
    """Where the C decoder is built, `nzip decode model.nz model.safetensors` runs no numba kernel
    and no zarr code, so neither is imported (~1 s of a command-line restore): the restore is
    bit-exact all the same, for bf16, fp16 and fp32 tensors of every size class."""
    from nzip.entropy import lanes_c as LC

    if not LC.available:
        pytest.skip("the C extension was not built")
    g = torch.Generator().manual_seed(4)
    sd = {"emb": torch.randn(3000, 64, generator=g) * 0.05, "ln": torch.ones(64) + 0.01 * torch.randn(64, generator=g),
          "w16": (torch.randn(300, 130, generator=g) * 0.02).to(torch.float16),
          "b16": (torch.randn(70, 1000, generator=g) * 0.02).to(torch.bfloat16),
          "small": torch.randn(5, 7, generator=g).to(torch.bfloat16), "ids": torch.arange(512)}
    for name, mode in (("m", "best"), ("f", "fast")):
        src = tmp_path / f"{name}.safetensors"
        save_file(sd, str(src))
        nzip.encode(src, tmp_path / f"{name}.nz", mode=mode)
        code = ("import sys, nzip; nzip.decode(sys.argv[1], sys.argv[2]); "
                "print(*(m in sys.modules for m in ('numba', 'zarr', 'torch')))")
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.nz"),
                            str(tmp_path / f"{name}.back.safetensors")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["False", "False", "False"], (mode, r.stdout)
        assert (tmp_path / f"{name}.back.safetensors").read_bytes() == src.read_bytes()


def test_info_json_is_strict_json_with_non_finite_extras(tmp_path, capsys):
    from nzip import cli

    torch.save({"w": torch.ones(3), "best_loss": float("inf"), "lr": float("nan")}, tmp_path / "c.pt")
    nzip.encode(tmp_path / "c.pt", tmp_path / "c.nz")
    assert cli.main(["info", "--json", str(tmp_path / "c.nz")]) == 0

    def refuse(name):
        raise ValueError(name)

    info = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert info["source"]["extras"] == {"best_loss": "Infinity", "lr": "NaN"}
    back = torch.load(nzip.decode(tmp_path / "c.nz", tmp_path / "b.pt") and tmp_path / "b.pt", weights_only=True)
    assert back["best_loss"] == float("inf") and back["lr"] != back["lr"]  # the file keeps the floats
