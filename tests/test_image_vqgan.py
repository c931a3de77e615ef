"""image/vqgan with the shipped network: sizes, levels, bpp accounting, tiles, regions, errors."""
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nzip
from nzip.codecs import image_vqgan as iv
from nzip.errors import CorruptDataError, InvalidInputError, OutputExistsError
from nzip.formats.image import read_image, write_image
from nzip.metrics import ms_ssim, ms_ssim_torch, psnr

ROOT = Path(__file__).resolve().parents[1]


def _photo(h=160, w=224, seed=0):
    """A smooth synthetic 'photo': gradients, discs and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (h + w) * 120 + 60], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 40)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return iv.load_model()


def test_levels_round_trip_and_rate_order(tmp_path, model):
    img = _photo()
    write_image(img, tmp_path / "a.png")
    sizes = {}
    for level in model.levels:
        rep = nzip.encode(tmp_path / "a.png", tmp_path / f"a{level}.nz", codec="image/vqgan", level=level)
        out = nzip.decode(tmp_path / f"a{level}.nz")
        assert out.shape == img.shape and out.dtype == np.uint8
        assert psnr(img, out) > 14  # a real reconstruction, not noise
        sizes[level] = rep.stored_bytes
        with nzip.open(tmp_path / f"a{level}.nz") as it:
            assert it.params["level"] == level and len(it.params["model_sha256"]) == 16
    lv = model.levels
    assert all(sizes[a] >= sizes[b] for a, b in zip(lv, lv[1:]))  # fewer codes, fewer bits
    # encoding is deterministic: same bytes twice
    nzip.encode(tmp_path / "a.png", tmp_path / "again.nz", codec="image/vqgan", level=lv[-1])
    assert (tmp_path / "again.nz").read_bytes() == (tmp_path / f"a{lv[-1]}.nz").read_bytes()


def test_prior_beats_fixed_length_indices(model):
    img = _photo(256, 256, seed=1)
    for level in model.levels:
        grid = iv.image_indices(model, img, level)
        coded = len(model.priors[level].encode(grid)) * 8
        assert coded < grid.size * np.log2(level) + 32


def test_prior_recount_counts_the_grids_the_codec_sends(model, monkeypatch):
    """train_vqgan's rdo_recount: at rate weight 0 the codec sends the nearest codes, so the counts
    stay the nearest codes' counts; at a positive weight they are the counts of the codec's own
    choice (image_vqgan.choose_codes) under the tables built from the counts before."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import train_vqgan as T

    from nzip.entropy.grid import GridModel

    L = model.levels[-2]
    book, cls = model.books[L], model.priors[L].classes
    zs = [iv.tile_latents(model, _photo(96 + 16 * i, 128, seed=i), 1024)[0] for i in range(3)]
    nearest = [model.net.nearest(z[None], book)[0].numpy() for z in zs]
    counts = T.context_counts(nearest, cls, L)
    assert counts.shape == ((T.CTX_CLASSES + 1) ** 2, L) and counts.sum() == sum(g.size for g in nearest)
    assert np.array_equal(T.rdo_recount(zs, book, counts, cls, 0.0, 1, 0.5), counts)
    once = T.rdo_recount(zs, book, counts, cls, 0.02, 1, 0.5)
    gm = GridModel.from_counts(counts, cls, 16, smoothing=0.5)
    sent = [gm.choose((z.permute(1, 2, 0) @ book.T).numpy(), 0.02, iv.MIX) for z in zs]
    assert np.array_equal(once, T.context_counts(sent, cls, L))
    assert not np.array_equal(once, counts)  # a rate weight moves some indices to cheaper codes


def test_bpp_picks_the_first_setting_that_fits(tmp_path, model):
    img = _photo(256, 384, seed=2)
    pixels = img.shape[0] * img.shape[1]
    sizes = {}
    for level in model.levels:
        sizes[level] = nzip.encode(img, tmp_path / f"l{level}.nz", codec="image/vqgan", level=level).stored_bytes
    target = sizes[model.levels[1]] * 8 / pixels + 1e-4
    rep = nzip.encode(img, tmp_path / "b.nz", codec="image/vqgan", bpp=target)
    assert rep.stored_bytes * 8 / pixels <= target
    # the file is the first (level, rdo) of the ladder whose file fits: larger levels, then rate weights
    ladder = list(iv._budget_ladder(model.levels, iv.DEFAULT_RDO))
    assert ladder[:3] == [(model.levels[0], r) for r in (iv.DEFAULT_RDO, *iv.BUDGET_RDO)]
    assert ladder[3] == (model.levels[1], iv.DEFAULT_RDO) and ladder[-1] == (model.levels[-1], iv.BUDGET_RDO_LAST[-1])
    for level, rdo in ladder:
        rep = nzip.encode(img, tmp_path / "s.nz", codec="image/vqgan", level=level, rdo=rdo, overwrite=True)
        if rep.stored_bytes * 8 / pixels <= target:
            break
    assert (tmp_path / "s.nz").read_bytes() == (tmp_path / "b.nz").read_bytes()
    # a budget below the smallest level's plain file: larger rate weights there, before giving up
    small = sizes[model.levels[-1]] * 8 / pixels - 1e-4
    rep = nzip.encode(img, tmp_path / "c.nz", codec="image/vqgan", bpp=small)
    assert rep.stored_bytes * 8 / pixels <= small
    with nzip.open(tmp_path / "c.nz") as it:
        assert it.params["level"] == model.levels[-1]
    with pytest.warns(UserWarning):
        nzip.encode(img, tmp_path / "d.nz", codec="image/vqgan", bpp=1e-4)
    with pytest.warns(UserWarning, match="the budget counts a .nz file"):  # a folder item is larger: said
        nzip.encode(img, tmp_path / "b.zarr", codec="image/vqgan", bpp=target)


def test_best_decodes_each_levels_fit_and_keeps_the_closest(tmp_path, model):
    img = _photo(192, 256, seed=7)
    pixels = img.shape[0] * img.shape[1]
    plain = nzip.encode(img, tmp_path / "l.nz", codec="image/vqgan", level=model.levels[2]).stored_bytes
    target = plain * 8 / pixels
    nzip.encode(img, tmp_path / "a.nz", codec="image/vqgan", bpp=target)
    best = nzip.encode(img, tmp_path / "b.nz", codec="image/vqgan", bpp=target, best=1)
    assert best.stored_bytes * 8 / pixels <= target
    # the ladder's pick is one of the candidates best=1 decodes, so it is never worse
    q_first, q_best = (ms_ssim(img, nzip.decode(tmp_path / f)) for f in ("a.nz", "b.nz"))
    assert q_best >= q_first - 1e-9
    # and it is the top of the candidates: the first fitting rate weight of each level, decoded
    cands = []
    for level in model.levels:
        for rdo in (iv.DEFAULT_RDO, *iv.BEST_RDO):
            rep = nzip.encode(img, tmp_path / "c.nz", codec="image/vqgan", level=level, rdo=rdo, overwrite=True)
            if rep.stored_bytes * 8 / pixels <= target:
                cands.append(ms_ssim(img, nzip.decode(tmp_path / "c.nz")))
                break
    assert len(cands) >= 2 and abs(q_best - max(cands)) < 1e-9
    with pytest.raises(InvalidInputError, match="bpp"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", level=256, best=1)
    with pytest.raises(InvalidInputError, match="best"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", bpp=0.05, best=2)


def test_rdo_trades_distance_for_rate(tmp_path, model):
    img = _photo(160, 224, seed=6)
    level = model.levels[0]
    sizes, quality = [], []
    for rdo in (0.0, 0.01, 0.04):
        rep = nzip.encode(img, tmp_path / f"r{rdo}.nz", codec="image/vqgan", level=level, rdo=rdo)
        sizes.append(rep.stored_bytes)
        quality.append(ms_ssim(img, nzip.decode(tmp_path / f"r{rdo}.nz")))
    assert sizes[0] > sizes[1] > sizes[2]
    assert quality[0] > quality[2] and quality[2] > 0.5  # fewer bits cost some fidelity, not the picture
    # rdo=0 is the nearest codes
    grid = iv.image_indices(model, img, level, rdo=0.0)
    with nzip.open(tmp_path / "r0.0.nz") as it:
        assert np.array_equal(iv.read_indices(it)[0], grid)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="rdo"):
            nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", rdo=bad)


def test_version_1_files_with_fixed_tables_still_decode(tmp_path, model):
    """Files written before the adaptive prior (codec version 1: no "mix", fixed context tables)."""
    import base64
    import json

    img = _photo(96, 160, seed=7)
    nzip.encode(img, tmp_path / "new.nz", codec="image/vqgan", level=model.levels[1], tile=64)
    with nzip.open(tmp_path / "new.nz") as it:
        grid, level, tile = iv.read_indices(it)
        assert it.params["mix"] == list(iv.MIX) and it.meta["codec_version"] == 2
    tiles = list(iv._tiles(*grid.shape, tile))
    streams = [model.priors[level].encode(grid[y0:y1, x0:x1]) for y0, y1, x0, x1 in tiles]
    with zipfile.ZipFile(tmp_path / "new.nz") as z:
        meta = json.loads(z.read("zarr.json"))
    nz = meta["attributes"]["nzip"]
    del nz["params"]["mix"]
    nz["codec_version"] = 1
    nz["params"]["streams"] = [len(b) for b in streams]
    nz["inline"]["codes"] = base64.b64encode(b"".join(streams)).decode()
    with zipfile.ZipFile(tmp_path / "old.nz", "w") as z:
        z.writestr("zarr.json", json.dumps(meta))
    assert np.array_equal(nzip.decode(tmp_path / "old.nz"), nzip.decode(tmp_path / "new.nz"))
    assert (tmp_path / "old.nz").read_bytes() != (tmp_path / "new.nz").read_bytes()


def test_odd_sizes_grey_and_tiles(tmp_path, model):
    img = _photo(75, 131, seed=3)
    nzip.encode(img, tmp_path / "o.nz", codec="image/vqgan", level=model.levels[0])
    assert nzip.decode(tmp_path / "o.nz").shape == (75, 131, 3)
    grey = img.mean(2).astype(np.uint8)
    nzip.encode(grey, tmp_path / "g.nz", codec="image/vqgan", level=model.levels[0])
    g = nzip.decode(tmp_path / "g.nz")
    assert g.shape == grey.shape and psnr(np.repeat(grey[..., None], 3, 2), np.repeat(g[..., None], 3, 2)) > 14
    nzip.encode(grey[..., None], tmp_path / "g1.nz", codec="image/vqgan", level=model.levels[0])  # (H, W, 1)
    g1 = nzip.decode(tmp_path / "g1.nz")
    assert g1.shape == (75, 131, 1) and np.array_equal(g1[..., 0], g)
    assert np.array_equal(iv.decode_region(str(tmp_path / "g1.nz"), (3, 4, 50, 40)), g1[4:40, 3:50])
    nzip.decode(tmp_path / "g1.nz", tmp_path / "g1.png")
    assert np.array_equal(read_image(tmp_path / "g1.png"), g)
    with pytest.raises(InvalidInputError, match="images are written as"):  # refused before decoding
        nzip.decode(tmp_path / "g1.nz", tmp_path / "g1.jxl")
    # tiles of 64 px: independent streams, the same picture within the network's context margin
    big = _photo(200, 272, seed=4)
    nzip.encode(big, tmp_path / "t.nz", codec="image/vqgan", level=model.levels[0], tile=64)
    nzip.encode(big, tmp_path / "u.nz", codec="image/vqgan", level=model.levels[0])
    with nzip.open(tmp_path / "t.nz") as it:
        assert len(it.params["streams"]) == 4 * 5
    a, b = nzip.decode(tmp_path / "t.nz"), nzip.decode(tmp_path / "u.nz")
    assert psnr(a, b) > 25
    # decoding reports progress tile by tile, adding up to the item's elements (padding excluded)
    ticks = []
    with nzip.open(tmp_path / "t.nz") as it:
        assert np.array_equal(iv.ImageVQGAN().decode(it, progress=ticks.append), a)
    assert len(ticks) == 4 * 5 and sum(ticks) == big.size
    # a region decodes from its own tiles and matches the full picture there
    box = (70, 90, 150, 180)
    region = iv.decode_region(str(tmp_path / "t.nz"), box)
    assert region.shape == (90, 80, 3)
    assert np.array_equal(region, a[90:180, 70:150])  # each touched tile decoded as the whole decode does
    assert np.array_equal(iv.decode_region(str(tmp_path / "t.nz"), (0, 0, 272, 200)), a)


def test_bad_input_is_refused(tmp_path, model):
    img = _photo(64, 64)
    with pytest.raises(InvalidInputError, match="level"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", level=300)
    with pytest.raises(InvalidInputError, match="tile"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", tile=40)
    with pytest.raises(InvalidInputError):
        nzip.encode(img.astype(np.float32), tmp_path / "x.nz", codec="image/vqgan")
    with pytest.raises(InvalidInputError, match="either"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", level=64, bpp=0.1)
    (tmp_path / "notimg.png").write_bytes(b"hello")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        nzip.encode(tmp_path / "notimg.png", tmp_path / "x.nz", codec="image/vqgan")
    assert not (tmp_path / "x.nz").exists()


def test_corrupt_streams_and_foreign_models(tmp_path, model):
    img = _photo(96, 128, seed=5)
    nzip.encode(img, tmp_path / "a.nz", codec="image/vqgan", level=model.levels[0])
    with zipfile.ZipFile(tmp_path / "a.nz") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    assert sorted(entries) == ["zarr.json"]  # the index stream is inline: one zip entry in all

    def rewrite(name, data):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for n, d in entries.items():
                z.writestr(n, data.get(n, d))

    # a changed index stream (the zip CRC recomputed): the entropy layer's own check catches it
    import base64
    import json

    meta = json.loads(entries["zarr.json"])
    body = bytearray(base64.b64decode(meta["attributes"]["nzip"]["inline"]["codes"]))
    body[len(body) // 2] ^= 0x40
    meta["attributes"]["nzip"]["inline"]["codes"] = base64.b64encode(bytes(body)).decode()
    rewrite("flip.nz", {"zarr.json": json.dumps(meta).encode()})
    with pytest.raises(CorruptDataError):
        nzip.decode(tmp_path / "flip.nz")
    meta["attributes"]["nzip"]["inline"]["codes"] = "not base64!"
    rewrite("b64.nz", {"zarr.json": json.dumps(meta).encode()})
    with pytest.raises(CorruptDataError, match="base64"):
        nzip.decode(tmp_path / "b64.nz")
    meta = entries["zarr.json"].replace(model.sha.encode(), b"0123456789abcdef")
    rewrite("sha.nz", {"zarr.json": meta})
    with pytest.raises(CorruptDataError, match="model"):
        nzip.decode(tmp_path / "sha.nz")


def test_refine_decodes_closer_and_keeps_the_bpp_budget(tmp_path, model):
    img = _photo(96, 144, seed=5)
    level = model.levels[-2]
    plain = nzip.encode(img, tmp_path / "p.nz", codec="image/vqgan", level=level).stored_bytes
    nzip.encode(img, tmp_path / "r.nz", codec="image/vqgan", level=level, refine=6)
    a, b = nzip.decode(tmp_path / "p.nz"), nzip.decode(tmp_path / "r.nz")
    with nzip.open(tmp_path / "p.nz") as x, nzip.open(tmp_path / "r.nz") as y:
        assert x.read_blob("codes").tobytes() != y.read_blob("codes").tobytes()  # other indices
    assert ms_ssim(img, b) > ms_ssim(img, a) + 0.002
    # under --bpp the refined file still fits: the budget is the plain file's own size
    pixels = img.shape[0] * img.shape[1]
    rep = nzip.encode(img, tmp_path / "q.nz", codec="image/vqgan", bpp=plain * 8 / pixels, refine=6)
    assert rep.stored_bytes <= plain
    assert ms_ssim(img, nzip.decode(tmp_path / "q.nz")) >= ms_ssim(img, a) - 1e-4
    with pytest.raises(InvalidInputError, match="refine"):
        nzip.encode(img, tmp_path / "x.nz", codec="image/vqgan", refine=-1)


def test_ms_ssim_torch_is_the_metric_and_differentiable():
    import pytorch_msssim
    import torch

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (176, 200, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    x, y = (torch.from_numpy(v).permute(2, 0, 1)[None].float() for v in (a, b))
    assert ms_ssim(a, b) == pytest.approx(float(pytorch_msssim.ms_ssim(x, y, data_range=255)), abs=1e-6)
    u = (y / 255).requires_grad_(True)
    val = ms_ssim_torch(u, x / 255)
    val.backward()
    assert val.item() == pytest.approx(ms_ssim(a, b), abs=1e-5) and u.grad.abs().sum() > 0
    small = (x[..., :64, :80] / 255, y[..., :64, :80] / 255)  # fewer scales
    assert ms_ssim_torch(*small).item() == pytest.approx(ms_ssim(a[:64, :80], b[:64, :80]), abs=1e-5)


def test_cli_bpp(tmp_path, model):
    img = _photo(128, 192, seed=6)
    write_image(img, tmp_path / "p.png")
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "encode", str(tmp_path / "p.png"), str(tmp_path / "p.nz"),
                        "--codec", "image/vqgan", "--bpp", "0.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "decode", str(tmp_path / "p.nz"), str(tmp_path / "q.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert read_image(tmp_path / "q.png").shape == img.shape
    assert (tmp_path / "p.nz").stat().st_size * 8 / (128 * 192) <= 0.5
    # info states the rate the budget counts: the whole file's bits per pixel
    assert nzip.info(tmp_path / "p.nz")["bits_per_pixel"] == (tmp_path / "p.nz").stat().st_size * 8 / (128 * 192)
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "info", str(tmp_path / "p.nz")], capture_output=True, text=True)
    assert r.returncode == 0 and "192 x 128: " in r.stdout and "bits per pixel" in r.stdout, r.stderr
    # a budget below every level: the smallest level, and a one-line warning (no source line)
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "encode", str(tmp_path / "p.png"), str(tmp_path / "s.nz"),
                        "--codec", "image/vqgan", "--bpp", "0.0001"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("nzip: warning: image/vqgan: 0.0001 bpp is below") and r.stderr.count("\n") == 1


def test_image_io(tmp_path):
    from PIL import Image

    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, ..., 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    a = read_image(tmp_path / "a.png")
    assert a.shape == (10, 12, 3) and tuple(a[0, 0]) == (200, 0, 0) and tuple(a[9, 0]) == (255, 255, 255)
    Image.fromarray(np.full((7, 9), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (7, 9)
    deep = np.arange(0, 65536, 1025, dtype=np.uint16).reshape(8, 8)  # a 16-bit grey PNG scales to 8 bits
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert np.array_equal(read_image(tmp_path / "g16.png"), (deep >> 8).astype(np.uint8))
    Image.fromarray(deep.astype(np.float32) / 65535, "F").save(tmp_path / "f.tif")  # floats in 0..1
    assert np.abs(read_image(tmp_path / "f.tif").astype(int) - (deep >> 8)).max() <= 1
    la = np.zeros((6, 8, 2), np.uint8)
    la[..., 0], la[..., 1] = 90, 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")  # grey with alpha stays grey
    assert np.array_equal(read_image(tmp_path / "la.png"), np.full((6, 8), 90, np.uint8))
    tall = np.zeros((30, 20, 3), np.uint8)
    tall[:5] = 255  # white top rows
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(tall).save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "r.jpg")
    assert shown.shape == (20, 30, 3) and shown[:, -5:].mean() > 200  # as viewers show it: top -> right
    write_image(np.full((4, 5, 1), 7, np.uint8), tmp_path / "one.png")
    assert np.array_equal(read_image(tmp_path / "one.png"), np.full((4, 5), 7, np.uint8))
    write_image(a, tmp_path / "a.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), a)
    with pytest.raises(InvalidInputError, match="images are written as"):
        write_image(a, tmp_path / "a.jxl")
    assert not (tmp_path / "a.jxl").exists()
    write_image(a, tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(OutputExistsError):
        write_image(a, tmp_path / "b.jpg")


# ------------------------------------------------------------------ lost-index restoration
from nzip.codecs import vqgan_restore as vr  # noqa: E402


def _pink(h, w, seed):
    """A texture with a photograph's 1/f spectrum (colour channels correlated): where copying a
    neighbour index is a poor guess, unlike the flat discs of _photo."""
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    f[0, 0] = 1

    def field(power):
        return np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(h, w))) / f ** power))

    base = field(1.2)
    img = np.stack([base + 0.5 * field(1.4) for _ in range(3)], -1)
    return ((img - img.mean()) / img.std() * 45 + 120).clip(0, 255).astype(np.uint8)


def test_restore_rebuilds_lost_indices_better_than_copying_neighbours(model):
    """20 % of a grid's indices lost at random: the picture the shipped transformer rebuilds is
    clearly closer to the intact decode than copying the nearest kept index gives."""
    img = _pink(256, 384, seed=1)
    level = 256
    grid = iv.image_indices(model, img, level)
    lost = np.random.default_rng(0).random(grid.shape) < 0.2
    book = model.books[level]
    got = vr.restore(np.where(lost, -1, grid), lost, book)
    near = vr.nearest_fill(np.where(lost, -1, grid), lost)
    assert np.array_equal(got[~lost], grid[~lost])  # kept indices untouched
    assert got.min() >= 0 and got.max() < level
    ref = iv.indices_image(model, grid, level)
    gain = psnr(ref, iv.indices_image(model, got, level)) - psnr(ref, iv.indices_image(model, near, level))
    assert gain > 0.5, gain  # measured +1.7 dB here


def test_restore_argument_checks(model):
    book = model.books[64]
    g = np.zeros((4, 5), np.int64)
    with pytest.raises(InvalidInputError):
        vr.restore(g, np.zeros((5, 4), bool), book)
    with pytest.raises(InvalidInputError, match="kept indices"):
        vr.restore(np.full((4, 5), 64), np.zeros((4, 5), bool), book)
    assert np.array_equal(vr.restore(g, np.zeros((4, 5), bool), book), g)  # nothing lost
    assert vr.restore(g, np.ones((4, 5), bool), book).shape == (4, 5)  # everything lost: a guess


def test_decode_restores_a_damaged_tile(tmp_path, model):
    """A damaged tile stream fails the decode; --restore rebuilds it from the other tiles."""
    import base64
    import json

    img = _photo(192, 256, seed=8)
    nzip.encode(img, tmp_path / "a.zarr", codec="image/vqgan", level=256, tile=64)
    meta_path = tmp_path / "a.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    attrs = meta["attributes"]["nzip"]
    lengths = attrs["params"]["streams"]
    assert len(lengths) == 12  # 3 x 4 tiles of 4 x 4 indices
    body = bytearray(base64.b64decode(attrs["inline"]["codes"]))
    t = 5
    start = sum(lengths[:t])
    body[start:start + lengths[t]] = bytes(lengths[t])  # tile 5's stream zeroed
    attrs["inline"]["codes"] = base64.b64encode(bytes(body)).decode()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptDataError, match="tile 5"):
        nzip.decode(tmp_path / "a.zarr")
    with pytest.warns(UserWarning, match=r"tile 5 damaged; 16 of 192 indices restored"):
        out = nzip.decode(tmp_path / "a.zarr", restore=True)
    assert out.shape == img.shape
    assert psnr(img, out) > 14
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "decode", str(tmp_path / "a.zarr"), str(tmp_path / "o.png"),
                        "--restore"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr and np.array_equal(read_image(tmp_path / "o.png"), out)
    r = subprocess.run([sys.executable, "-m", "nzip.cli", "decode", str(tmp_path / "a.zarr"), str(tmp_path / "p.png")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "tile 5" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.png").exists()
    nzip.encode(np.zeros((4, 4), np.uint8), tmp_path / "x.nz", codec="array/rans")
    with pytest.raises(InvalidInputError, match="cannot restore"):
        nzip.decode(tmp_path / "x.nz", restore=True)


def test_restore_reads_past_on_disk_damage_of_a_nz_file(tmp_path, model, monkeypatch):
    """Bytes flipped on disk: the metadata entry (streams kept inline) or the codes chunk fails
    its checksum; with restore the damaged tile alone is found and rebuilt."""
    from nzip.formats import container
    from nzip.formats.container import _JSON_SUFFIX

    def flip_first_restorable(src, entry):
        info = zipfile.ZipFile(src).getinfo(entry)
        raw = src.read_bytes()
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        for i in range(start + info.compress_size // 2, start + info.compress_size):
            bad = bytearray(raw)
            bad[i] ^= 0x10
            dst = tmp_path / "bad.nz"
            dst.write_bytes(bytes(bad))
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    out = nzip.decode(dst, restore=True)
                except CorruptDataError:  # this flip broke the deflate stream itself
                    continue
            if any("damaged;" in str(w.message) for w in seen):
                return out
        raise AssertionError("no restorable flip")

    img = _photo(192, 256, seed=9)
    nzip.encode(img, tmp_path / "in.nz", codec="image/vqgan", level=256, tile=64)  # inline streams
    out = flip_first_restorable(tmp_path / "in.nz", _JSON_SUFFIX)
    assert out.shape == img.shape and psnr(img, out) > 14
    with pytest.raises(CorruptDataError):
        nzip.decode(tmp_path / "bad.nz")
    big = _photo(192, 256, seed=10)  # streams too long to keep inline: a codes chunk of their own
    monkeypatch.setattr(container, "INLINE_MAX", 64)
    nzip.encode(big, tmp_path / "big.nz", codec="image/vqgan", level=4096, tile=64)
    assert "codes/c/0" in zipfile.ZipFile(tmp_path / "big.nz").namelist()
    out = flip_first_restorable(tmp_path / "big.nz", "codes/c/0")
    assert out.shape == big.shape and psnr(big, out) > 14
    with pytest.raises(CorruptDataError, match="checksum"):
        nzip.decode(tmp_path / "bad.nz")


@pytest.mark.parametrize("forge", [("level", "x"), ("tile", 0), ("streams", None), ("streams", "12"), ("shape", [64])])
def test_forged_image_parameters_are_corrupt_data(tmp_path, model, forge):
    import json

    nzip.encode(_photo(64, 64), tmp_path / "a.zarr", codec="image/vqgan", level=256)
    meta_path = tmp_path / "a.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    key, value = forge
    (meta["attributes"]["nzip"]["source"] if key == "shape" else meta["attributes"]["nzip"]["params"])[key] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptDataError, match="malformed"):
        nzip.decode(tmp_path / "a.zarr")
