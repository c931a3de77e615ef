"""The container: stores, plain zarr reads, atomic writes, corruption, format versions."""
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import nzip
from nzip.errors import (CorruptDataError, InvalidInputError, OutputExistsError,
                         UnknownCodecError, UnsupportedFormatError)

DATA = os.path.join(os.path.dirname(__file__), "data")


def _arr(shape=(300, 40), lo=-50, hi=50, seed=0, dtype=np.int32):
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("name", ["a.nz", "a.zarr"])
def test_roundtrip_local(tmp_path, name):
    a = _arr()
    dst = tmp_path / name
    rep = nzip.encode(a, dst, codec="array/rans", chunk=3000)
    assert rep.stored_bytes < a.nbytes / 2
    assert np.array_equal(nzip.decode(dst), a)
    info = nzip.info(dst)
    assert info["codec"] == "array/rans" and info["arrays"][0]["n_chunks"] == 4


def test_roundtrip_memory_url():
    a = _arr(seed=3)
    for url in ("memory://nzip-test/a.nz", "memory://nzip-test/dir"):
        nzip.encode(a, url, codec="array/rans", chunk=1000)
        assert np.array_equal(nzip.decode(url), a)


def test_plain_zarr_reads_symbols(tmp_path):
    a = _arr(seed=4)
    nzip.encode(a, tmp_path / "a.nz", codec="array/rans", chunk=5000)
    nzip.encode(a, tmp_path / "a.zarr", codec="array/rans", chunk=5000)
    g = zarr.open_group(zarr.storage.ZipStore(tmp_path / "a.nz", mode="r"), mode="r")
    assert np.array_equal(g["symbols"][...], a)
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert np.array_equal(g["symbols"][100:150], a[100:150])
    assert g.attrs["nzip"]["codec"] == "array/rans"


def test_random_access_reads_one_chunk(tmp_path):
    a = _arr((1000, 10), seed=5)
    nzip.encode(a, tmp_path / "a.nz", codec="array/rans", chunk=1000)
    with nzip.open(tmp_path / "a.nz") as item:
        assert np.array_equal(item.read("symbols", (slice(500, 510),)), a[500:510])


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.uint64, np.bool_])
def test_dtypes_and_wide_values(tmp_path, dtype):
    rng = np.random.default_rng(6)
    if dtype == np.bool_:
        a = rng.random((50, 7)) < 0.3
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min // 2, info.max // 2, (50, 7), dtype=dtype)  # wide: byte planes
    nzip.encode(a, tmp_path / "a.nz", codec="array/rans")
    out = nzip.decode(tmp_path / "a.nz")
    assert out.dtype == a.dtype and np.array_equal(out, a)


@pytest.mark.parametrize("predict", ["none", "delta", "med"])
def test_big_endian_and_0d_arrays_come_back_as_they_were(tmp_path, predict):
    for a in (np.array([[0, 2**64 - 1, 5], [7, 1, 2**63]], ">u8"), np.arange(-6, 6, dtype=">i4").reshape(3, 4),
              np.array([[1, -2], [300, 4]], ">i2"), np.array(5, "i4"), np.array(-3, ">i8")):
        if predict == "med" and (a.ndim < 2 or a.dtype.itemsize > 4):
            continue
        np.save(tmp_path / "a.npy", a)
        nzip.encode(tmp_path / "a.npy", tmp_path / "a.nz", predict=predict, overwrite=True)
        nzip.decode(tmp_path / "a.nz", tmp_path / "b.npy", overwrite=True)
        b = np.load(tmp_path / "b.npy")
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b), (a, b)
        assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


@pytest.mark.parametrize("predict", ["none", "delta", "med"])
def test_rows_decode_alone_with_any_predictor(tmp_path, predict):
    rng = np.random.default_rng(3)
    img = np.cumsum(rng.integers(-3, 4, (300, 40, 3)), axis=1).astype(np.int16)
    line = np.cumsum(rng.integers(-3, 4, 5000)).astype(">i4")
    for a in (img, line):
        if predict == "med" and a.ndim < 2:
            continue
        nzip.encode(a, tmp_path / "a.nz", codec="array/rans", chunk=999, predict=predict, overwrite=True)
        with nzip.open(tmp_path / "a.nz") as it:
            for sel in (slice(100, 110), slice(7, 250, 13), slice(250, 7, -13), slice(5, 5), -1, ...):
                got = it.rows(sel)
                assert np.array_equal(got, a[sel]), (predict, a.shape, sel)
                assert got.dtype == a[sel].dtype  # numpy's scalars are native-endian, like numpy's own
            with pytest.raises(InvalidInputError, match="out of range"):
                it.rows(len(a))
            sel = (slice(None, None, -3), 1) if a.ndim > 1 else (slice(None, None, -3),)  # stored symbols
            assert np.array_equal(it.read("symbols", sel), it.read("symbols")[sel])
            with pytest.raises(InvalidInputError, match="bad selection"):  # the file is fine
                it.read("symbols", (len(a),))
            mask = np.arange(len(a)) % 3 == 0  # masks and new axes: numpy's meaning
            assert np.array_equal(it.read("symbols", (mask,)), it.read("symbols")[mask])
            assert it.read("symbols", (None, slice(0, 2))).shape == (1, 2, *a.shape[1:])


def test_delta_predictor_is_exact(tmp_path):
    a = np.cumsum(_arr((40, 500), -3, 4, seed=8), axis=1).astype(np.int16)
    a[0, :3] = [32767, -32768, 5]  # wrapping differences
    nzip.encode(a, tmp_path / "d.nz", codec="array/rans", predict="delta")
    nzip.encode(a, tmp_path / "p.nz", codec="array/rans")
    assert np.array_equal(nzip.decode(tmp_path / "d.nz"), a)
    assert os.path.getsize(tmp_path / "d.nz") < os.path.getsize(tmp_path / "p.nz")


def test_small_item_overhead(tmp_path):
    from nzip import entropy

    a = _arr((1000,), 0, 1024, seed=9, dtype=np.int16)
    nzip.encode(a, tmp_path / "s.nz", codec="array/rans")
    overhead = os.path.getsize(tmp_path / "s.nz") - len(entropy.encode(a))
    assert overhead < 700, overhead


def test_committed_v1_container_still_decodes():
    out = nzip.decode(os.path.join(DATA, "v1_array.nz"))
    assert np.array_equal(out, np.load(os.path.join(DATA, "v1_array_expected.npy")))


def test_refuses_overwrite_and_input_as_output(tmp_path):
    a = _arr()
    nzip.encode(a, tmp_path / "a.nz", codec="array/rans")
    with pytest.raises(OutputExistsError):
        nzip.encode(a, tmp_path / "a.nz", codec="array/rans")
    np.save(tmp_path / "x.npy", a)
    with pytest.raises(OutputExistsError):
        nzip.encode(tmp_path / "x.npy", tmp_path / "x.npy")
    nzip.encode(a + 1, tmp_path / "a.nz", codec="array/rans", overwrite=True)
    assert np.array_equal(nzip.decode(tmp_path / "a.nz"), a + 1)


def test_outputs_never_swallow_the_input_and_are_readable(tmp_path):
    a = _arr()
    sub = tmp_path / "sub"
    sub.mkdir()
    np.save(sub / "a.npy", a)
    (sub / "notes.txt").write_text("keep")
    for dst in (sub, tmp_path):  # a folder output holding the input would replace (delete) it
        with pytest.raises(OutputExistsError, match="holds the input"):
            nzip.encode(sub / "a.npy", dst, overwrite=True)
    with pytest.raises(OutputExistsError, match="inside the input folder"):  # read back as input
        nzip.encode(sub, sub / "d.nzip", codec="array/rans")
    nzip.encode(sub / "a.npy", tmp_path / "a.nz")
    (tmp_path / "folder.nz").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("mine")
    with pytest.raises(OutputExistsError, match="is a folder"):
        nzip.encode(sub / "a.npy", tmp_path / "folder.nz", overwrite=True)
    (tmp_path / "o.npy").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        nzip.decode(tmp_path / "a.nz", tmp_path / "o.npy", overwrite=True)
    with pytest.raises(InvalidInputError, match="writes .npy files"):  # an array never hides under another suffix
        nzip.decode(tmp_path / "a.nz", tmp_path / "a.safetensors")
    with pytest.raises(OutputExistsError, match="not an nzip item"):  # a user's folder is not replaced
        nzip.encode(sub / "a.npy", tmp_path / "out", overwrite=True)
    assert sorted(os.listdir(sub)) == ["a.npy", "notes.txt"] and (tmp_path / "out" / "x").read_text() == "mine"
    old = os.umask(0o022)
    try:  # outputs get the permissions a plain open() gives, not the temporary file's 0600
        nzip.encode(sub / "a.npy", tmp_path / "b.nz")
        nzip.decode(tmp_path / "b.nz", tmp_path / "b.npy")
        nzip.encode(sub / "a.npy", tmp_path / "b.zarr")
    finally:
        os.umask(old)
    assert [os.stat(tmp_path / n).st_mode & 0o777 for n in ("b.nz", "b.npy", "b.zarr")] == [0o644, 0o644, 0o755]


def test_failed_encode_leaves_nothing(tmp_path):
    with pytest.raises(InvalidInputError):
        nzip.encode(np.zeros(10, np.float32), tmp_path / "f.nz", codec="array/rans")
    with pytest.raises(InvalidInputError):
        nzip.encode(_arr(), tmp_path / "f.zarr", codec="array/rans", bogus=1)
    with pytest.raises(UnknownCodecError):
        nzip.encode(_arr(), tmp_path / "f.nz", codec="image/none")
    assert os.listdir(tmp_path) == []


def _rewrite_zip(src, dst, fn):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, fn(info.filename, zin.read(info.filename)))


def test_corrupt_chunk_is_named(tmp_path):
    a = _arr((400, 10), seed=10)
    nzip.encode(a, tmp_path / "a.zarr", codec="array/rans", chunk=1000)
    chunk = tmp_path / "a.zarr" / "symbols" / "c" / "2" / "0"
    b = bytearray(chunk.read_bytes())
    b[len(b) // 2] ^= 0x10
    chunk.write_bytes(bytes(b))
    with pytest.raises(CorruptDataError, match=r"chunk 2\.0 .*checksum"):
        nzip.decode(tmp_path / "a.zarr")


def test_damaged_metadata_of_a_directory_item(tmp_path):
    """A directory item opens from its zarr.json and reads nzip.rans arrays without zarr; damaged
    metadata still gives one clear error, and a sound array stays bit-exact."""
    a = _arr((300, 7), seed=11)
    nzip.encode(a, tmp_path / "a.zarr", codec="array/rans", chunk=500, predict="delta")
    assert np.array_equal(nzip.decode(tmp_path / "a.zarr"), a)
    for where, text, match in (("zarr.json", "{oops", "not an nzip container"),
                               ("symbols/zarr.json", '{"a": 1}', "array 'symbols' has bad metadata"),
                               ("zarr.json", '{"zarr_format": 3, "node_type": "group"}', "no nzip attributes")):
        shutil.rmtree(tmp_path / "b.zarr", ignore_errors=True)
        shutil.copytree(tmp_path / "a.zarr", tmp_path / "b.zarr")
        (tmp_path / "b.zarr" / where).write_text(text)
        with pytest.raises(CorruptDataError, match=match):
            nzip.decode(tmp_path / "b.zarr")
    shutil.rmtree(tmp_path / "b.zarr" / "symbols" / "c")
    (tmp_path / "b.zarr" / "zarr.json").write_bytes((tmp_path / "a.zarr" / "zarr.json").read_bytes())
    (tmp_path / "b.zarr" / "symbols" / "zarr.json").write_bytes(
        (tmp_path / "a.zarr" / "symbols" / "zarr.json").read_bytes())
    with pytest.raises(CorruptDataError, match=r"chunk 0\.0 is missing"):
        nzip.decode(tmp_path / "b.zarr")


def test_forged_array_params_are_corrupt_not_wrong(tmp_path):
    """array/rans checks its metadata against the stored array: an unknown predictor (it returned
    the residuals), a source dtype or shape the array does not have, a chunk that is not a number."""
    a = _arr((20, 30), seed=3)
    nzip.encode(a, tmp_path / "a.zarr", codec="array/rans", chunk=90, predict="med")
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    forged = {"predict": ("params", "predict", "bogus"), "chunk": ("params", "chunk", "abc"),
              "dtype": ("source", "dtype", "i2"), "float": ("source", "dtype", "f8"),
              "shape": ("source", "shape", [30, 20])}
    for part, key, value in forged.values():
        shutil.rmtree(tmp_path / "b.zarr", ignore_errors=True)
        shutil.copytree(tmp_path / "a.zarr", tmp_path / "b.zarr")
        m = json.loads(json.dumps(meta))
        m["attributes"]["nzip"][part][key] = value
        (tmp_path / "b.zarr" / "zarr.json").write_text(json.dumps(m))
        with pytest.raises(CorruptDataError):
            nzip.decode(tmp_path / "b.zarr")
        with nzip.open(tmp_path / "b.zarr") as it, pytest.raises(CorruptDataError):
            it.rows(slice(2, 5))
    with nzip.open(tmp_path / "a.zarr") as it:
        assert np.array_equal(it.rows(slice(2, 5)), a[2:5])


def test_truncated_and_foreign_files(tmp_path):
    a = _arr()
    nzip.encode(a, tmp_path / "a.nz", codec="array/rans")
    data = (tmp_path / "a.nz").read_bytes()
    for cut in (10, len(data) // 2, len(data) - 5):
        (tmp_path / "t.nz").write_bytes(data[:cut])
        with pytest.raises(CorruptDataError):
            nzip.decode(tmp_path / "t.nz")
    (tmp_path / "x.nz").write_bytes(b"hello")
    with pytest.raises(CorruptDataError):
        nzip.decode(tmp_path / "x.nz")
    with pytest.raises(InvalidInputError, match="does not exist"):
        nzip.decode(tmp_path / "missing.nz")


def test_future_format_version_is_refused(tmp_path):
    nzip.encode(_arr(), tmp_path / "a.nz", codec="array/rans")

    def bump(name, data):
        if name == "zarr.json":
            meta = json.loads(data)
            meta["attributes"]["nzip"]["format"] = 99
            return json.dumps(meta).encode()
        return data

    _rewrite_zip(tmp_path / "a.nz", tmp_path / "b.nz", bump)
    with pytest.raises(UnsupportedFormatError, match="format 99"):
        nzip.decode(tmp_path / "b.nz")


def test_forged_chunk_shape_is_refused(tmp_path):
    """A chunk that declares more values than its array's chunk shape is refused, not allocated."""
    from nzip.entropy import coder
    nzip.encode(_arr((10,), seed=1), tmp_path / "a.nz", codec="array/rans")
    big = bytes([0]) + coder.encode(np.zeros(10**6, np.int32) + np.arange(10**6) % 3)

    import google_crc32c
    crc = np.uint32(google_crc32c.value(big)).tobytes()  # a valid checksum: only the size check is left

    def swap(name, data):
        return big + crc if name == "symbols/c/0" else data

    _rewrite_zip(tmp_path / "a.nz", tmp_path / "b.nz", swap)
    with pytest.raises(CorruptDataError, match="chunk 0 .*more than the 10 expected"):
        nzip.decode(tmp_path / "b.nz")


@pytest.mark.parametrize("forge", ["params", "version", "shape", "chunks"])
def test_forged_metadata_is_corrupt_data(tmp_path, forge):
    nzip.encode(_arr((100,), seed=2), tmp_path / "a.nz", codec="array/rans", chunk=30)

    def edit(name, data):
        doc = json.loads(data)
        if name == "zarr.json":
            meta = doc["attributes"]["nzip"]
            if forge == "params":
                meta["params"] = "x"
            elif forge == "version":
                meta["codec_version"] = "2"
            elif forge == "shape":
                meta["source"]["shape"] = ["100"]
        elif name == "symbols/zarr.json" and forge == "chunks":
            doc["chunk_grid"]["configuration"]["chunk_shape"] = [0]
        return json.dumps(doc).encode()

    _rewrite_zip(tmp_path / "a.nz", tmp_path / "b.nz", lambda n, d: edit(n, d) if n.endswith("zarr.json") else d)
    with pytest.raises(CorruptDataError):
        nzip.decode(tmp_path / "b.nz")
    if forge == "chunks":
        with pytest.raises(CorruptDataError):
            nzip.info(tmp_path / "b.nz")


def test_cli_answers_an_unforeseen_error_in_one_line(tmp_path, monkeypatch, capsys):
    from nzip import cli

    def boom(*a, **k):
        raise ZeroDivisionError("x")

    monkeypatch.setattr(cli, "_cmd_codecs", boom)
    assert cli.main(["codecs"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nzip: internal error: ZeroDivisionError: x at ")
    monkeypatch.setenv("NZIP_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["codecs"])

    def full(*a, **k):
        raise OSError(28, "No space left on device", "/data/out.nz")

    monkeypatch.setattr(cli, "_cmd_codecs", full)
    assert cli.main(["codecs"]) == 74
    assert capsys.readouterr().err == "nzip: error: No space left on device (/data/out.nz)\n"


@pytest.mark.parametrize("name", ["i.nz", "i_dir", "memory://inline/i.nz"])
def test_inline_streams(tmp_path, name):
    from nzip.formats.container import ArraySpec, INLINE_MAX, nz_size, open_item, write_item

    dst = name if "://" in name else str(tmp_path / name)
    small = np.frombuffer(os.urandom(1400), np.uint8)
    big = np.frombuffer(os.urandom(INLINE_MAX + 1), np.uint8)
    arrays = {"s": ArraySpec(small, symbols=False, inline=True), "b": ArraySpec(big, symbols=False, inline=True)}
    attrs = {"codec": "array/rans", "codec_version": 1}
    write_item(dst, attrs, arrays)
    with open_item(dst) as it:
        assert it.inline_names() == ["s"] and it.array_names() == ["b"]  # too big to inline
        assert bytes(it.read_blob("s")) == small.tobytes() and bytes(it.read_blob("b")) == big.tobytes()
        assert np.array_equal(it.read("s"), small)
    if name == "i.nz":
        assert os.path.getsize(dst) == nz_size(attrs, arrays)
        plain = {"s": ArraySpec(small, symbols=False), "b": arrays["b"]}
        assert nz_size(attrs, plain) - nz_size(attrs, arrays) > 250  # what inlining saves
        info = nzip.info(dst)
        assert {a["name"] for a in info["arrays"]} == {"s", "b"}


def test_blobs_are_views_of_the_mapped_file(tmp_path):
    """A .nz's stored arrays come back as views of its memory mapping, checked by their crc32c;
    closing the item while a view is held neither fails nor spoils the view, and a flipped byte
    is refused by name."""
    from nzip.formats.container import ArraySpec, INLINE_MAX, open_item, write_item

    dst = str(tmp_path / "m.nz")
    big = np.frombuffer(os.urandom(INLINE_MAX + 4321), np.uint8)
    write_item(dst, {"codec": "array/rans", "codec_version": 1}, {"b": ArraySpec(big, symbols=False)})
    it = open_item(dst)
    view = it.read_blob("b")
    held = np.frombuffer(view, np.uint8)
    assert isinstance(view, memoryview) and view.readonly and np.array_equal(held, big)
    it.close()
    assert np.array_equal(held, big)
    with zipfile.ZipFile(dst) as zf:
        info = zf.getinfo("b/c/0")
    data = bytearray(Path(dst).read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 1
    Path(dst).write_bytes(bytes(data))
    with open_item(dst) as it, pytest.raises(CorruptDataError, match="'b' chunk 0 is corrupt .checksum"):
        it.read_blob("b")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32"])
def test_med_predictor_round_trips_and_keeps_chunks_independent(tmp_path, dtype):
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (23, 17, 3), dtype=dtype, endpoint=True)  # extremes wrap
    nzip.encode(a, tmp_path / "m.nz", codec="array/rans", predict="med", chunk=17 * 3 * 4)
    assert np.array_equal(nzip.decode(tmp_path / "m.nz"), a)
    with nzip.open(tmp_path / "m.nz") as it:  # a chunk decodes alone: its rows predict from the left
        assert it.array("symbols").chunks[0] == 4
        stored = it.read("symbols")
    # the residuals are LOCO-I's, in the input's width (a numpy twin of the kernel; the format)
    v = a.view(f"u{a.dtype.itemsize}").astype(np.int64)
    left, up, ul = np.zeros_like(v), np.zeros_like(v), np.zeros_like(v)
    left[:, 1:], up[1:], ul[1:, 1:] = v[:, :-1], v[:-1], v[:-1, :-1]
    lo, hi = np.minimum(left, up), np.maximum(left, up)
    pred = np.where(ul >= hi, lo, np.where(ul <= lo, hi, left + up - ul))
    pred[::4] = left[::4]
    want = ((v - pred) & ((1 << (8 * a.dtype.itemsize)) - 1)).astype(f"u{a.dtype.itemsize}")
    assert np.array_equal(stored.view(want.dtype), want)
    smooth = np.add.outer(np.arange(64), np.arange(48)).astype(dtype) // 3
    nzip.encode(smooth, tmp_path / "s.nz", codec="array/rans", predict="med")
    nzip.encode(smooth, tmp_path / "n.nz", codec="array/rans")
    assert os.path.getsize(tmp_path / "s.nz") < os.path.getsize(tmp_path / "n.nz")
    assert np.array_equal(nzip.decode(tmp_path / "s.nz"), smooth)


def test_med_predictor_refuses_what_it_cannot_predict(tmp_path):
    with pytest.raises(InvalidInputError, match="predict=med"):
        nzip.encode(np.arange(10), tmp_path / "a.nz", codec="array/rans", predict="med")


@pytest.mark.parametrize("name", ["a.nz", "a_dir"])
def test_info_of_a_local_item_reads_its_metadata_without_zarr(tmp_path, name, monkeypatch):
    """nzip.info and nzip.weights.tensors of a local item list arrays, shapes, chunks and stored
    bytes from the zarr.json files and the listing alone: the same figures as through zarr, and in
    a fresh process zarr is never imported."""
    import subprocess
    import sys

    from safetensors.numpy import save_file

    from nzip.formats import container as C

    dst = tmp_path / name
    nzip.encode(_arr(), dst, codec="array/rans", chunk=3000)
    src = tmp_path / "m.safetensors"
    save_file({"w": np.random.default_rng(1).normal(0, 0.02, (300, 70)).astype(np.float32),
               "b": np.zeros(70, np.float32)}, str(src))
    wdst = tmp_path / ("w.nz" if name.endswith(".nz") else "w_dir")
    nzip.encode(src, wdst)
    fast = nzip.info(dst), nzip.info(wdst), nzip.weights.tensors(wdst)
    assert fast[0]["arrays"][0]["n_chunks"] == 4 and fast[0]["arrays"][0]["stored_bytes"] > 0
    with monkeypatch.context() as m:  # the same through zarr
        m.setattr(C.Item, "_array_doc", lambda self, n: None)
        m.setattr(C.Item, "_local_children", lambda self: None)
        assert (nzip.info(dst), nzip.info(wdst), nzip.weights.tensors(wdst)) == fast
    code = ("import sys, nzip; nzip.info(sys.argv[1]); nzip.weights.tensors(sys.argv[2]); "
            "print('zarr' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(dst), str(wdst)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_damaged_nz_files_raise_only_nzip_errors(tmp_path):
    """Random byte flips and cuts of a weights and an array .nz: info, the tensor list and the
    decode either succeed or raise an NzipError (zipfile's and zlib's own errors on a damaged
    entry, zarr's on damaged metadata and an exception with no message were escaping)."""
    import warnings

    from safetensors.numpy import save_file

    from nzip.errors import NzipError

    rng = np.random.default_rng(3)
    save_file({"w": rng.normal(0, 0.02, (200, 130)).astype(np.float32), "b": np.zeros(130, np.float32),
               "i": np.arange(50)}, str(tmp_path / "m.safetensors"))
    nzip.encode(tmp_path / "m.safetensors", tmp_path / "m.nz")
    np.save(tmp_path / "a.npy", rng.integers(-50, 50, (300, 40)).astype(np.int16))
    nzip.encode(tmp_path / "a.npy", tmp_path / "a.nz", chunk=3000)
    sources = [(tmp_path / "m.nz").read_bytes(), (tmp_path / "a.nz").read_bytes()]
    refused = 0
    for trial in range(500):
        k = trial % 2
        b = bytearray(sources[k])
        if rng.random() < 0.85:
            i = int(rng.integers(0, len(b)))
            b[i] ^= int(rng.integers(1, 256))
        else:
            b = b[:int(rng.integers(1, len(b)))]
        bad = tmp_path / f"bad{trial}.nz"
        bad.write_bytes(bytes(b))
        out = tmp_path / (f"out{trial}.safetensors" if k == 0 else f"out{trial}.npy")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (zarr warns about the nodes it cannot read)
                nzip.info(bad)
                if k == 0:
                    nzip.weights.tensors(bad)
                nzip.decode(bad, out)
        except NzipError:
            refused += 1
    assert refused > 400


def test_api_takes_what_users_pass_and_refuses_the_rest(tmp_path):
    import torch

    rep = nzip.encode(torch.arange(12, dtype=torch.int16).reshape(3, 4), tmp_path / "t.nz", codec="array/rans")
    assert rep.raw_bytes == 24 and np.array_equal(nzip.decode(os.fsencode(tmp_path / "t.nz")),
                                                  np.arange(12, dtype=np.int16).reshape(3, 4))
    with pytest.raises(InvalidInputError, match="device must be"):
        nzip.decode(tmp_path / "t.nz", device="gpu0")
    with nzip.open(tmp_path / "t.nz") as it:
        with pytest.raises(InvalidInputError, match="bad row selection"):
            it.rows(slice(0, 2, 0))
        it.read("symbols")  # its zip and mapping are open now
        import pickle

        again = pickle.loads(pickle.dumps(it))  # e.g. into a DataLoader worker under 'spawn'
        assert np.array_equal(again.rows(...), np.arange(12, dtype=np.int16).reshape(3, 4))
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2), "b": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    nzip.encode(tmp_path / "w.safetensors", tmp_path / "w.nz")
    assert list(nzip.weights.load(tmp_path / "w.nz", names=(n for n in ["b"]))) == ["b"]  # a generator
    with pytest.raises(InvalidInputError, match="name the output as a .safetensors file"):
        nzip.decode(tmp_path / "w.nz", tmp_path / "w.npy")
