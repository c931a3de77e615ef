"""Data sets (nzip.dataset) and the PyTorch datasets over them (nzip.data)."""
import glob
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import nzip
from nzip import dataset as D
from nzip.data import Compressed, ContainerDataset, StreamingDataset, collate
from nzip.errors import CorruptDataError, InvalidInputError, OutputExistsError


def _folder(root, n=40, seed=0):
    rng = np.random.default_rng(seed)
    src = root / "src"
    for i in range(n):
        sub = src / ("odd" if i % 2 else "even")
        sub.mkdir(parents=True, exist_ok=True)
        np.save(sub / f"x{i:03d}.npy", rng.integers(-60, 60, (12, 10)).astype(np.int16))
    (src / "README.txt").write_text("not an array")  # ignored: array/rans reads .npy
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    src = _folder(root)
    rep = nzip.encode(src, root / "d.nzip", codec="array/rans", shard_size=6)
    return src, root / "d.nzip", rep


def _keys(loader):
    return [k for b in loader for k in b["key"]]


def test_build_and_random_access(built, tmp_path):
    src, path, rep = built
    assert rep.codec == "array/rans" and rep.raw_bytes == 40 * 12 * 10 * 2
    ds = ContainerDataset(path)
    assert len(ds) == 40 and ds.keys()[0] == "even/x000.npy"
    # reading an item touches only that item: the others can be gone
    copy = tmp_path / "copy.nzip"
    shutil.copytree(path, copy)
    for p in (copy / "items").glob("*/*"):
        if p.is_dir() and p.name != "00003":
            shutil.rmtree(p)
    item = ContainerDataset(copy)[3]
    assert np.array_equal(item["data"], np.load(src / item["key"]))
    info = nzip.api.info(path)
    assert info["dataset"] and info["source"]["n_items"] == 40 and info["source"]["n_shards"] == 7


def test_map_style_loader_and_decode_to_folder(built, tmp_path):
    src, path, _ = built
    batches = list(DataLoader(ContainerDataset(path), batch_size=8, num_workers=2, collate_fn=collate))
    assert batches[0]["data"].shape == (8, 12, 10) and batches[0]["data"].dtype == torch.int16
    assert sorted(_keys(batches)) == sorted(D.open_dataset(path).keys)
    nzip.decode(path, tmp_path / "out")
    for key in D.open_dataset(path).keys:
        assert np.array_equal(np.load(tmp_path / "out" / key), np.load(src / key))


def test_exactly_once_over_workers_and_ranks(built):
    _, path, _ = built
    seen = []
    for rank in range(2):
        ds = StreamingDataset(path, seed=3, rank=rank, world_size=2, shuffle_buffer=4, batch_size=3)
        keys = _keys(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate))
        assert len(keys) == len(ds)
        seen += keys
    assert sorted(seen) == sorted(D.open_dataset(path).keys)


def test_order_is_seeded_by_epoch(built):
    _, path, _ = built

    def run(seed, epoch):
        ds = StreamingDataset(path, seed=seed, shuffle_buffer=8, batch_size=4)
        ds.set_epoch(epoch)
        return _keys(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate))

    a = run(1, 0)
    assert a == run(1, 0) and sorted(a) == sorted(D.open_dataset(path).keys)
    assert a != run(1, 1) and a != run(2, 0)
    plain = StreamingDataset(path, shuffle=False)
    assert [b["key"] for b in plain] == D.open_dataset(path).keys


@pytest.mark.parametrize("workers,stop", [(0, 3), (2, 3), (2, 2)])  # stop=2: worker 1's turn comes next
def test_resume_mid_epoch(built, workers, stop):
    _, path, _ = built
    bs = 4

    def loader(ds):
        return DataLoader(ds, batch_size=bs, num_workers=workers, collate_fn=collate)

    ds = StreamingDataset(path, seed=5, shuffle_buffer=6, batch_size=bs)
    ds.set_epoch(2)
    full = _keys(loader(ds))
    done = []
    for step, b in enumerate(loader(ds)):
        done += b["key"]
        if step == stop:
            break
    state = ds.state_dict(samples_seen=None if workers == 0 else len(done))
    assert state["samples_seen"] == len(done) == bs * (stop + 1)
    fresh = StreamingDataset(path, seed=5, shuffle_buffer=6, batch_size=bs)
    fresh.load_state_dict(state)
    assert done + _keys(loader(fresh)) == full


def test_corrupt_chunk_is_named_or_skipped(built, tmp_path):
    _, path, _ = built
    bad = tmp_path / "bad.nzip"
    shutil.copytree(path, bad)
    chunk = next((bad / "items" / "00001" / "00002" / "symbols" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=r"item 8 .*chunk 0"):
        ContainerDataset(bad)[8]
    ds = StreamingDataset(bad, shuffle=False, on_error="skip")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        keys = [b["key"] for b in ds]
    assert len(keys) == 39 and any("item 8" in str(x.message) for x in w)


def test_interrupted_build_resumes(tmp_path):
    src = _folder(tmp_path, n=12)
    dst = tmp_path / "r.nzip"
    nzip.encode(src, dst, codec="array/rans", shard_size=5)
    shutil.rmtree(dst / "items" / "00001")  # as if the build had stopped in shard 1
    (dst / "items" / "00002" / "zarr.json").unlink()
    with pytest.raises(CorruptDataError):
        ContainerDataset(dst).keys()
    r = D.build(src, dst, "array/rans", shard_size=5)
    assert r.skipped_shards == 1 and r.n_shards == 3
    assert len(ContainerDataset(dst).keys()) == 12
    with pytest.raises(OutputExistsError):  # other settings: refused without overwrite
        D.build(src, dst, "array/rans", shard_size=4)
    assert D.build(src, dst, "array/rans", shard_size=4, overwrite=True).n_shards == 3
    first = ContainerDataset(dst)[0]["key"]
    np.save(src / first, np.full(3, 77, np.int16))  # an input changes
    with pytest.raises(OutputExistsError):  # not resumed past the change
        D.build(src, dst, "array/rans", shard_size=4)
    r = D.build(src, dst, "array/rans", shard_size=4, overwrite=True)  # replaced whole, never resumed
    assert r.skipped_shards == 0
    assert np.array_equal(ContainerDataset(dst)[0]["data"].numpy(), np.full(3, 77, np.int16))
    with pytest.raises(InvalidInputError):  # a failed -f rebuild keeps the data set it would replace
        D.build(src, dst, "array/rans", shard_size=4, overwrite=True, predict="mde")
    assert np.array_equal(ContainerDataset(dst)[0]["data"].numpy(), np.full(3, 77, np.int16))
    assert sorted(os.listdir(tmp_path)) == ["r.nzip", "src"]
    with pytest.raises(OutputExistsError, match="is the input"):
        nzip.decode(dst, dst)
    with pytest.raises(OutputExistsError, match="inside the input"):
        nzip.decode(dst, dst / "items", overwrite=True)


def test_dask_local_cluster_build(tmp_path):
    pytest.importorskip("dask.distributed")
    src = _folder(tmp_path, n=10)
    r = D.build(src, tmp_path / "k.nzip", "array/rans", workers=2, shard_size=3)
    assert r.n_items == 10 and r.n_shards == 4
    ds = ContainerDataset(tmp_path / "k.nzip")
    assert all(np.array_equal(ds[i]["data"], np.load(src / ds[i]["key"])) for i in range(10))
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl:
        r2 = D.build(src, tmp_path / "s.nzip", "array/rans", scheduler=cl.scheduler_address, shard_size=4)
    assert r2.n_shards == 3 and ContainerDataset(tmp_path / "s.nzip").keys() == ds.keys()


def test_batched_gpu_decode_in_collate(built, monkeypatch):
    """Workers hand over compressed chunks; collate decodes the batch in one rANS kernel launch
    (under the interpreter here), with array/rans's delta predictor undone on the device."""
    src, path, _ = built
    raw = StreamingDataset(path, shuffle=False, decode_device="cuda")
    items = [it for _, it in zip(range(5), raw)]
    assert all(isinstance(it["data"], Compressed) for it in items)
    monkeypatch.setenv("NZIP_KERNELS", "1" if not torch.cuda.is_available() else "")
    out = collate(items, device="cuda" if torch.cuda.is_available() else "cpu")
    for key, t in zip(out["key"], out["data"]):
        assert torch.equal(t.cpu(), torch.from_numpy(np.load(src / key)))
    dsrc = src.parent / "delta"
    dsrc.mkdir()
    a = np.cumsum(np.random.default_rng(1).integers(-3, 4, (3, 50, 40)), -1).astype(np.int16)
    np.save(dsrc / "a.npy", a)
    nzip.encode(dsrc, src.parent / "delta.nzip", codec="array/rans", predict="delta", chunk=512)
    item = next(iter(StreamingDataset(src.parent / "delta.nzip", decode_device="cuda")))
    assert len(item["data"].blobs) > 1
    assert torch.equal(collate([item], device="cpu")["data"][0], torch.from_numpy(a))
    # nzip.data.DataLoader: workers send the chunks, the main process decodes each batch
    from nzip.data import DataLoader as Loader

    for b in Loader(StreamingDataset(path, seed=2, batch_size=4, decode_device="cuda"), num_workers=2):
        assert b["data"].shape[0] == len(b["key"])
        for key, t in zip(b["key"], b["data"]):
            assert torch.equal(t.cpu(), torch.from_numpy(np.load(src / key)))


def test_s3_round_trip_through_moto(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                     "AWS_ENDPOINT_URL_S3": endpoint}.items():
            monkeypatch.setenv(k, v)
        fsspec.config.conf["s3"] = {"client_kwargs": {"endpoint_url": endpoint}}
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("nzip-test")
        src = _folder(tmp_path, n=9)
        url = "s3://nzip-test/data/a.nzip"
        rep = nzip.encode(src, url, codec="array/rans", shard_size=4)
        assert rep.raw_bytes == 9 * 240 and rep.stored_bytes > 0
        ds = ContainerDataset(url)
        assert len(ds) == 9
        for i in (0, 8):
            assert np.array_equal(ds[i]["data"], np.load(src / ds[i]["key"]))
        keys = [b["key"] for b in StreamingDataset(url, seed=0)]
        assert sorted(keys) == sorted(D.list_inputs(str(src), nzip.registry.get("array/rans")))
        nzip.encode(tmp_path / "src" / "even" / "x000.npy", "s3://nzip-test/one.nz")  # single items too
        assert np.array_equal(nzip.decode("s3://nzip-test/one.nz"), np.load(src / "even" / "x000.npy"))
    finally:
        fsspec.config.conf.pop("s3", None)
        server.stop()


def test_cli_builds_inspects_and_decodes_a_data_set(tmp_path):
    src = _folder(tmp_path, n=7)
    nz = [sys.executable, "-m", "nzip.cli"]
    r = subprocess.run([*nz, "encode", str(src), str(tmp_path / "c.nzip"), "--codec", "array/rans",
                        "--shard-size", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*nz, "info", str(tmp_path / "c.nzip")], capture_output=True, text=True)
    assert "data set" in r.stdout and '"n_items": 7' in r.stdout
    r = subprocess.run([*nz, "decode", str(tmp_path / "c.nzip"), str(tmp_path / "back")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and len(list((tmp_path / "back").rglob("*.npy"))) == 7
    r = subprocess.run([*nz, "encode", str(src), str(tmp_path / "c.nz"), "--codec", "array/rans",
                        "--workers", "2"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not a .nz file" in r.stderr


def test_build_refuses_what_it_cannot_store(tmp_path):
    src = _folder(tmp_path, n=3)
    (tmp_path / "file.nzip").write_text("precious")
    with pytest.raises(OutputExistsError):
        D.build(src, tmp_path / "file.nzip", "array/rans")
    assert (tmp_path / "file.nzip").read_text() == "precious"
    with pytest.raises(nzip.errors.InvalidInputError, match="plain values"):
        D.build(src, tmp_path / "p.nzip", "array/rans", chunk=np.arange(3))
    with pytest.raises(nzip.errors.InvalidInputError, match="inside the input"):
        D.build(src, src / "in.nzip", "array/rans")
    with pytest.raises(nzip.errors.InvalidInputError, match="does not exist|not an nzip data set"):
        ContainerDataset(tmp_path / "nothing.nzip")


def test_ring_loader_never_overwrites_a_held_batch(built):
    """nzip.data.DataLoader: every batch kept (more than the workers' buffers: the rest are copies)
    still holds its own items; the order and keys are torch's DataLoader's."""
    from nzip.data import RING_SLOTS
    from nzip.data import DataLoader as Loader

    src, path, _ = built
    held = list(Loader(ContainerDataset(path), batch_size=1, num_workers=2))
    assert len(held) == 40 > 2 * RING_SLOTS
    for b in held:
        assert b["data"].shape == (1, 12, 10) and b["data"].dtype == torch.int16
        assert np.array_equal(b["data"][0].numpy(), np.load(src / b["key"][0]))
    ref = _keys(DataLoader(StreamingDataset(path, seed=4, batch_size=3), batch_size=3, num_workers=2,
                           collate_fn=collate))
    ds = StreamingDataset(path, seed=4, batch_size=3)
    views = []
    loader = Loader(ds, num_workers=2)
    for b in loader:
        views.append((b["key"], b["data"][-1].numpy()))  # only a numpy view of the last item survives
    assert [k for keys, _ in views for k in keys] == ref and len(views) == len(loader)
    bad = [keys[-1] for keys, v in views if not np.array_equal(v, np.load(src / keys[-1]))]
    assert not bad, (bad, len(views))
    for it in (iter(Loader(ds, num_workers=2)), iter(Loader(ContainerDataset(path), batch_size=2, num_workers=2))):
        next(it)
        it.close()  # a loop left early: batches in flight are never read
    assert not glob.glob(f"/dev/shm/nzip-batch-{os.getpid()}-*")  # no buffer left behind
    for bad in (dict(batch_size=4), dict(shuffle=True)):
        with pytest.raises(nzip.errors.InvalidInputError):
            Loader(ds, **bad)
    with pytest.raises(nzip.errors.InvalidInputError, match="ContainerDataset or StreamingDataset"):
        Loader([1, 2, 3])
    own = Loader(ContainerDataset(path), batch_size=8, num_workers=2, collate_fn=collate)  # torch's path
    assert sorted(_keys(own)) == sorted(D.open_dataset(path).keys)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="the batch ring lives in /dev/shm (Linux)")
def test_ring_buffers_are_reused_only_when_released():
    """In one process: a buffer goes back to its worker's ring exactly when nothing refers to the
    batch built in it (tensor, view, numpy array); the next batch then reuses it."""
    import gc

    from nzip.data import RING_SLOTS, _lease, _Ring, _unlink_unread

    prefix = f"nzip-batch-test-{os.getpid()}-"
    ring = _Ring(prefix)
    maps = {}
    items = [torch.full((2, 3), float(i)) for i in range(4)]
    msg = ring.stack(items)
    assert ring.flag(0) == 1 and os.path.exists(msg["path"])
    batch = _lease({"key": list("abcd"), "_ring": msg}, maps)
    assert not os.path.exists(msg["path"])  # mapped on both sides: the name is gone at once
    assert "_ring" not in batch and torch.equal(batch["data"][2], items[2]) and batch["data"].shape == (4, 2, 3)
    view = batch["data"][1:].numpy()
    del batch
    gc.collect()
    assert ring.flag(0) == 1  # the numpy view still holds it
    assert ring.stack(items)["path"] == ring.bufs[1][0]  # so the next batch goes elsewhere
    assert np.array_equal(view[0], items[1].numpy())
    del view
    gc.collect()
    assert ring.flag(0) == 0 and ring.stack(items[:2])["path"] == ring.bufs[0][0]
    for s in range(2, RING_SLOTS):
        assert ring.stack(items)["path"] == ring.bufs[s][0]
    assert ring.stack(items) is None  # every buffer out: the caller falls back to a copy
    assert ring.stack is not None and ring.flag(5) == 1
    ring.bufs[5][1][:4].view(torch.int32)[0] = 0
    bigger = ring.stack([torch.zeros(5, 5)] * 4)  # a larger batch: a new file replaces buffer 5's
    assert bigger["drop"] is not None and bigger["path"] == ring.bufs[5][0] != bigger["drop"]
    _unlink_unread(prefix)
    assert not glob.glob(f"/dev/shm/{prefix}*")


def test_persistent_workers_follow_set_epoch(built):
    from nzip.data import DataLoader as Loader

    _, path, _ = built

    def fresh(epoch):
        ds = StreamingDataset(path, seed=1, shuffle_buffer=8, batch_size=4)
        ds.set_epoch(epoch)
        return _keys(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate))

    ds = StreamingDataset(path, seed=1, shuffle_buffer=8, batch_size=4)
    loader = Loader(ds, num_workers=2, persistent_workers=True)
    got = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        got.append(_keys(loader))
    assert got == [fresh(0), fresh(1)] and got[0] != got[1]


def test_small_batches_travel_in_groups_in_torch_order(built, tmp_path):
    """nzip.data.DataLoader sends small batches of a ContainerDataset several to a message: the
    batches, their order (same generator), their number and len() are torch's DataLoader's, with
    drop_last, a partial last batch, items skipped inside a group, and compressed items."""
    from nzip.data import DataLoader as Loader

    src, path, _ = built
    ds = ContainerDataset(path)
    for bs, drop in ((3, False), (3, True), (7, False)):
        g = torch.Generator()
        ref_loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=drop, generator=g, num_workers=2,
                                collate_fn=collate, persistent_workers=True)
        loader = Loader(ds, batch_size=bs, shuffle=True, drop_last=drop, generator=g, num_workers=2,
                        persistent_workers=True)
        for epoch in range(2):  # the first epoch learns the item size; the second is grouped
            g.manual_seed(epoch)
            ref = [b["key"] for b in ref_loader]
            g.manual_seed(epoch)
            got = list(loader)
            assert [b["key"] for b in got] == ref and len(loader) == len(ref) == len(ref_loader)
            for b in got:
                assert b["data"].shape == (len(b["key"]), 12, 10)
                assert all(np.array_equal(x.numpy(), np.load(src / k)) for k, x in zip(b["key"], b["data"]))
        assert loader._groups.group > 1 and loader.batch_size == bs and loader.drop_last == drop
    # an item skipped inside a group: that batch is one short, as with torch's loader
    bad = tmp_path / "bad.nzip"
    shutil.copytree(path, bad)
    chunk = next(p for p in (bad / "items" / "00001" / "00002" / "symbols" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skipping = ContainerDataset(bad, on_error="skip")
        ref = [b["key"] for b in DataLoader(skipping, batch_size=4, num_workers=2, collate_fn=collate)]
        loader = Loader(skipping, batch_size=4, num_workers=2, persistent_workers=True)
        for _ in range(2):
            got = [b["key"] for b in loader]
    assert got == ref and sorted(map(len, got))[0] == 3 and loader._groups.group > 1
    # compressed items (decode_device="cuda") go as one batch per part, decoded in the main process
    loader = Loader(ContainerDataset(path, decode_device="cuda"), batch_size=4, num_workers=2)
    loader._groups.group = 3  # (compressed batches teach it no size)
    got = list(loader)
    assert [b["key"] for b in got] == [b["key"] for b in DataLoader(ds, batch_size=4, collate_fn=collate)]
    assert all(torch.equal(x.cpu(), torch.from_numpy(np.load(src / k))) for b in got for k, x in zip(b["key"], b["data"]))


def test_streaming_groups_keep_torch_order_and_resume(built):
    """With a StreamingDataset, workers send their batches several to a message from the second
    epoch on; the main process puts them back in torch's round-robin order, so epochs and a
    resumed epoch match torch's DataLoader batch for batch."""
    from nzip.data import DataLoader as Loader

    src, path, _ = built
    ref_ds = StreamingDataset(path, seed=7, shuffle_buffer=8, batch_size=3)
    ref_loader = DataLoader(ref_ds, batch_size=3, num_workers=2, collate_fn=collate)
    ds = StreamingDataset(path, seed=7, shuffle_buffer=8, batch_size=3)
    loader = Loader(ds, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        ref_ds.set_epoch(epoch)
        ds.set_epoch(epoch)
        ref = [b["key"] for b in ref_loader]
        got = list(loader)
        assert [b["key"] for b in got] == ref and len(loader) == len(ref)
        assert all(np.array_equal(x.numpy(), np.load(src / k)) for b in got for k, x in zip(b["key"], b["data"]))
    assert int(loader._stream.group[0]) > 1
    ds.load_state_dict(ds.state_dict(samples_seen=12))  # resume epoch 2 after 4 batches
    ref_ds.load_state_dict(ref_ds.state_dict(samples_seen=12))
    assert [b["key"] for b in loader] == [b["key"] for b in ref_loader] == ref[4:]


def test_image_data_sets_take_every_suffix_the_codec_reads(tmp_path):
    from nzip import registry

    for name in ("a.png", "b.avif", "c.pgm", "d.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert D.list_inputs(str(tmp_path), registry.get("image/vqgan")) == ["a.png", "b.avif", "c.pgm", "d.JPG"]


def test_each_items_warnings_name_it(tmp_path):
    from PIL import Image

    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(src / name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        nzip.encode(src, tmp_path / "i.nzip", codec="image/vqgan", bpp=1e-4)
    said = sorted(str(w.message).split(":")[0] for w in seen if "below the smallest level" in str(w.message))
    assert said == ["a.png", "b.png"]


def test_a_build_that_fails_before_any_shard_leaves_nothing(tmp_path):
    src = _folder(tmp_path, n=6)
    with pytest.raises(InvalidInputError, match="no parameter"):
        nzip.encode(src, tmp_path / "t.nzip", codec="array/rans", predcit="delta")  # a typo
    assert not (tmp_path / "t.nzip").exists()
    assert nzip.encode(src, tmp_path / "t.nzip", codec="array/rans", predict="delta").stored_bytes > 0
    (tmp_path / "mine.nzip").mkdir()
    (tmp_path / "mine.nzip" / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not an nzip data set"):  # a user's folder is never replaced
        nzip.encode(src, tmp_path / "mine.nzip", codec="array/rans", overwrite=True)
    assert (tmp_path / "mine.nzip" / "notes.txt").read_text() == "keep"


def test_batched_decode_keeps_each_items_dtype_and_shape(tmp_path):
    from nzip.data import Compressed, collate

    cases = {"u8": (np.arange(300, dtype=np.uint8) * 7, "delta"), "i64": (np.arange(300) * 3 - 100, "delta"),
             "u16": (np.arange(300, dtype=np.uint16) * 300, "none"), "empty": (np.zeros((0, 5), np.int16), "none"),
             "zerod": (np.array(7, np.int32), "none")}
    for name, (a, predict) in cases.items():
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "a.npy", a)
        nzip.encode(tmp_path / name, tmp_path / f"{name}.nzip", codec="array/rans", predict=predict, chunk=64)
        item = ContainerDataset(tmp_path / f"{name}.nzip", decode_device="cuda")[0]
        assert isinstance(item["data"], Compressed)
        got = collate([item], device="cpu")["data"][0]
        want = torch.from_numpy(np.asarray(a))
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
    with pytest.raises(InvalidInputError, match="decode_device"):
        ContainerDataset(tmp_path / "u8.nzip", decode_device="cuda", transform=lambda x: x)
    # the data set's device travels with its compressed items, for collate's default
    assert ContainerDataset(tmp_path / "u8.nzip", decode_device="cuda:1")[0]["data"].device == "cuda:1"
