"""Image benchmark (issue 4): nzip image/vqgan beside AVIF, WebP, JPEG and JPEG XL at very low rates.

Dev set: the 14 photographs of data/images/test/ (768x512 PNG, from scripts/prepare_images.py;
never trained on). Each image is encoded by each anchor over a sweep of quality settings, decoded
back with Pillow and scored against the original: bpp = compressed bytes * 8 / (W * H) (anchors:
the in-memory file; nzip: the whole .nz container), PSNR (dB, all channels) and MS-SSIM (5 scales,
data range 255; nzip.metrics). Anchors: AVIF (Pillow's built-in libavif, speed=6 to keep the run
short; quality 0 is its lowest rate), WebP (method=6), baseline JPEG, JPEG XL (pillow-jxl-plugin,
effort 7; quality 0 = distance ~12.5 is the coarsest it accepts). nzip: image/vqgan at each
codebook level of --levels (skipped, with a line, while that codec is not registered).

Target of the issue: at <= 0.035 bpp, nzip's mean MS-SSIM at least AVIF's at its lowest reachable
rate. Output: a table and that summary on stdout, every per-image result in OUT/results.json, the
rate-distortion plot (--plot, docs/image_rate_distortion.png), and a contact sheet (--sheet) of a few images: original, nzip at
each level, and each anchor at its setting nearest 0.035 bpp (in practice its lowest rate).

    pip install -e ".[bench]"     # pillow-jxl-plugin, pytorch-msssim, matplotlib
    python scripts/bench_image.py [--levels 4096,1024,512,256,64] [--skip-nzip] [--out out/bench_image]
                                  [--sheet docs/image_contact_sheet.png] [--images data/images/test]
                                  [--refine 0,10,30] [--refine-levels 256] [--threads 1]

The anchor part takes about 3 minutes on 2 busy cores (MS-SSIM dominates; one torch thread is
the fastest there).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from nzip.metrics import ms_ssim, psnr  # noqa: E402

TARGET_BPP = 0.035
NZIP_CODEC = "image/vqgan"
TILE = (384, 256)
SHEET_IMAGES = ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "friends_by_Aitzol_Berasategi",
                "sunset_by_Aitzol_Berasategi"]


def _save(fmt: str, **kw: Any) -> Callable[[Image.Image], bytes]:
    def enc(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()
    return enc


def anchors() -> dict[str, list[tuple[str, Callable[[Image.Image], bytes]]]]:
    """Codec -> [(setting, encoder)], lowest rate first."""
    import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow

    return {
        "AVIF": [(f"q={q}", _save("AVIF", quality=q, speed=6)) for q in (0, 5, 10, 15, 20, 30, 40, 50, 60)],
        "WebP": [(f"q={q}", _save("WEBP", quality=q, method=6)) for q in (0, 2, 5, 10, 20, 30, 50, 80)],
        "JPEG": [(f"q={q}", _save("JPEG", quality=q)) for q in (1, 3, 5, 10, 20, 35, 50)],
        "JPEG XL": [(f"q={q}", _save("JXL", quality=q, effort=7)) for q in (0, 5, 10, 20, 30, 50)],
    }


def thumb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a).resize(TILE, Image.Resampling.LANCZOS)


def score(ref: np.ndarray, back: np.ndarray, nbytes: int) -> dict[str, float]:
    h, w = ref.shape[:2]
    return {"bytes": nbytes, "bpp": nbytes * 8 / (w * h), "psnr": psnr(ref, back), "ms_ssim": ms_ssim(ref, back)}


def anchor_points(images: list[Path], thumbs: dict) -> list[dict]:
    from tqdm import tqdm

    table = anchors()
    rows = []
    for path in tqdm(images, desc="anchors", unit="img"):
        ref_im = Image.open(path).convert("RGB")
        ref = np.asarray(ref_im)
        for codec, settings in table.items():
            for setting, enc in settings:
                t0 = time.perf_counter()
                data = enc(ref_im)
                te = time.perf_counter() - t0
                back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                r = {"image": path.stem, "codec": codec, "setting": setting, **score(ref, back, len(data)),
                     "encode_s": te}
                rows.append(r)
                if path.stem in thumbs:
                    thumbs[path.stem][(codec, setting)] = thumb(back)
    return rows


def nz_size(p: Path) -> int:
    if p.is_dir():  # a directory store; .nz paths are single zip files
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def nzip_points(levels: list[int], images: list[Path], work: Path, thumbs: dict,
                targets: list[float] = (), refines: list[int] = (0,), refine_levels: list[int] = (),
                nearest_levels: list[int] = (), extra: list[tuple[int, float, int]] = (),
                best: bool = False) -> list[dict]:
    """Encode and decode every image with image/vqgan at each level (and at each bpp target, where
    the codec picks the level per image); the bpp targets and ``refine_levels`` also with each number
    of encoder search steps of ``refines`` (``refine``, 0: no search); ``nearest_levels`` also with
    the nearest codes (``rdo=0``, no rate weight); ``extra``: more (level, rdo, refine) rows; ``best``:
    the bpp targets (with each ``refines``) also with ``best=1`` (each level's fit decoded, the
    closest kept); bpp from the whole .nz file, payload_bpp from the index streams alone."""
    import nzip
    from tqdm import tqdm

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tqdm(images, desc="nzip", unit="img"):
        ref = np.asarray(Image.open(path).convert("RGB"))
        runs = [(k, r, None, False) for k in [*levels, *targets] for r in refines
                if r == 0 or not isinstance(k, int) or k in refine_levels]
        runs += [(k, r, None, True) for k in targets for r in refines] if best else []
        runs += [(k, 0, 0.0, False) for k in nearest_levels] + [(k, steps, rdo, False) for k, rdo, steps in extra]
        for k, steps, rdo, pick in runs:
            tag = (f"L{k}" if isinstance(k, int) else f"B{k}") + (f"R{steps}" if steps else "") + \
                (f"D{rdo:g}" if rdo is not None else "") + ("X" if pick else "")
            nz, out = work / f"{path.stem}.{tag}.nz", work / f"{path.stem}.{tag}.png"
            t0 = time.perf_counter()
            opt = ({"level": k} if isinstance(k, int) else {"bpp": k}) | ({} if rdo is None else {"rdo": rdo})
            opt |= ({"refine": steps} if steps else {}) | ({"best": 1} if pick else {})
            nzip.encode(path, nz, codec=NZIP_CODEC, overwrite=True, **opt)
            te = time.perf_counter() - t0
            t0 = time.perf_counter()
            nzip.decode(nz, out, overwrite=True)
            td = time.perf_counter() - t0
            back = np.asarray(Image.open(out).convert("RGB"))
            setting = ((f"level={k}" if isinstance(k, int) else f"bpp={k}") + (f" refine={steps}" if steps else "")
                       + (f" rdo={rdo:g}" if rdo is not None else "") + (" best=1" if pick else ""))
            with nzip.open(nz) as it:
                payload = len(it.read_blob("codes")) * 8 / (ref.shape[0] * ref.shape[1])
                level = it.params["level"]
            rows.append({"image": path.stem, "codec": "nzip", "setting": setting, "level": level,
                         **score(ref, back, nz_size(nz)), "payload_bpp": payload, "encode_s": te,
                         "decode_s": td})
            if path.stem in thumbs:
                thumbs[path.stem][("nzip", setting)] = thumb(back)
    return rows


def means(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(codec, setting) -> mean bpp, psnr, ms_ssim over images, in the order first seen."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["codec"], r["setting"])].append(r)
    return {k: {m: float(np.mean([r[m] for r in g])) for m in ("bpp", "psnr", "ms_ssim", "payload_bpp",
                                                                "encode_s", "decode_s") if m in g[0]}
            | {"n": len(g)} for k, g in groups.items()}


def lowest(mean: dict, codec: str) -> tuple[str, dict[str, float]]:
    return min(((s, v) for (c, s), v in mean.items() if c == codec), key=lambda sv: sv[1]["bpp"])


def print_table(mean: dict) -> None:
    print("\n| codec | setting | n | mean bpp | mean PSNR (dB) | mean MS-SSIM | payload bpp | encode s | decode s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (c, s), v in mean.items():
        extra = " | ".join(f"{v[m]:.4f}" if m in v else "—" for m in ("payload_bpp", "encode_s", "decode_s"))
        print(f"| {c} | {s} | {v['n']} | {v['bpp']:.4f} | {v['psnr']:.2f} | {v['ms_ssim']:.4f} | {extra} |")
    print("\nLowest reachable rate of each anchor (mean over images at its lowest setting):")
    for c in dict.fromkeys(c for c, _ in mean):
        if c == "nzip":
            continue
        s, v = lowest(mean, c)
        print(f"  {c:8s} {s:6s} bpp {v['bpp']:.4f}  PSNR {v['psnr']:.2f}  MS-SSIM {v['ms_ssim']:.4f}")


def print_summary(mean: dict) -> None:
    print(f"\nSummary (target: at <= {TARGET_BPP} bpp, nzip's mean MS-SSIM >= AVIF's at its lowest rate)")
    if not any(c == "AVIF" for c, _ in mean):
        print("  no AVIF results")
        return
    s, avif = lowest(mean, "AVIF")
    print(f"  AVIF lowest ({s}): bpp {avif['bpp']:.4f}  MS-SSIM {avif['ms_ssim']:.4f}")
    nz = [(s, v) for (c, s), v in mean.items() if c == "nzip"]
    if not nz:
        print("  nzip: not run")
    for s, v in nz:
        ok = v["bpp"] <= TARGET_BPP and v["ms_ssim"] >= avif["ms_ssim"]
        print(f"  nzip {s:11s} bpp {v['bpp']:.4f}  MS-SSIM {v['ms_ssim']:.4f}  "
              f"{'meets the target' if ok else 'does not meet it'}")


def manifest_quality(mean: dict, manifest: Path, n_images: int) -> None:
    """Record nzip's measured dev-set quality on the shipped network's manifest line."""
    nz = {s: v for (c, s), v in mean.items() if c == "nzip"}
    if not nz or not manifest.exists():
        return
    entries = json.loads(manifest.read_text())
    quality = {"measured": f"scripts/bench_image.py, {datetime.date.today().isoformat()}",
               "data": f"dev set: {n_images} lomiri wallpaper photos, 768x512 (never trained on)",
               **{s: {"bpp": round(v["bpp"], 4), "psnr_db": round(v["psnr"], 2), "ms_ssim": round(v["ms_ssim"], 4)}
                  for s, v in nz.items()}}
    for name in entries:
        if entries[name].get("codec") == NZIP_CODEC:
            entries[name]["quality"] = quality
    manifest.write_text(json.dumps(entries, indent=1) + "\n")
    print(f"wrote the measured quality into {manifest}")


def plot_rd(mean: dict, dst: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(c: str, s: str) -> str:  # nzip's rows with encoder search or nearest codes get lines of their own
        for k in ("refine=", "rdo="):
            if k in s:
                return f"{c} {s[s.index(k):]}"
        return c

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for codec in dict.fromkeys(curve(c, s) for c, s in mean):
        pts = sorted((v["bpp"], v["ms_ssim"], v["psnr"]) for (c, s), v in mean.items() if curve(c, s) == codec)
        x = [p[0] for p in pts]
        style = dict(marker="o", lw=2.2 if codec.startswith("nzip") else 1.4, ms=4, label=codec)
        axes[0].plot(x, [p[1] for p in pts], **style)
        axes[1].plot(x, [p[2] for p in pts], **style)
    for ax, name in zip(axes, ("mean MS-SSIM", "mean PSNR (dB)")):
        ax.set_xscale("log")
        ax.set_xlim(0.01, 0.5)
        ax.set_xticks([0.01, 0.02, 0.035, 0.05, 0.1, 0.2, 0.5], ["0.01", "0.02", "0.035", "0.05", "0.1", "0.2", "0.5"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(TARGET_BPP, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("14 test photographs, 768x512 (dashed: the 0.035 bpp target)")
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    plt.close(fig)


def contact_sheet(rows: list[dict], thumbs: dict, originals: dict, dst: Path) -> None:
    """One row per image: original, nzip at each level, each anchor at its setting nearest TARGET_BPP."""
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    cap = 22
    by_img: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_img[r["image"]].append(r)
    grid = []
    for stem in thumbs:
        tiles = [(originals[stem], "original")]
        codecs = list(dict.fromkeys(r["codec"] for r in by_img[stem]))
        codecs = (["nzip"] if "nzip" in codecs else []) + [c for c in codecs if c != "nzip"]
        for c in codecs:
            rs = [r for r in by_img[stem] if r["codec"] == c]
            picks = rs if c == "nzip" else [min(rs, key=lambda r: abs(r["bpp"] - TARGET_BPP))]
            for r in picks:
                name = f"nzip {r['setting'].replace('level=', '')}" if c == "nzip" else f"{c} {r['setting']}"
                tiles.append((thumbs[stem][(c, r["setting"])], f"{name}  {r['bpp']:.3f} bpp  MS-SSIM {r['ms_ssim']:.3f}"))
        grid.append(tiles)
    ncol = max(len(t) for t in grid)
    sheet = Image.new("RGB", (ncol * TILE[0], len(grid) * (TILE[1] + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, tiles in enumerate(grid):
        for j, (im, text) in enumerate(tiles):
            x, y = j * TILE[0], i * (TILE[1] + cap)
            sheet.paste(im, (x, y))
            draw.text((x + 4, y + TILE[1] + 3), text, fill="black", font=font)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dst)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=ROOT / "data/images/test")
    ap.add_argument("--levels", default="4096,1024,512,256,64", help="image/vqgan levels, comma separated")
    ap.add_argument("--bpp", default="0.035", help="image/vqgan bpp targets (codec picks the level per image)")
    ap.add_argument("--refine", default="0", help="image/vqgan encoder search steps, comma separated "
                    "(0: nearest codes; each other value adds rows, ~2 s a step per image on 2 cores)")
    ap.add_argument("--refine-levels", default="256", help="levels that also get the --refine rows "
                    "(the bpp targets always do)")
    ap.add_argument("--nearest-levels", default="256", help="levels that also get a row with the nearest "
                    "codes (rdo=0: no rate weight in the index choice)")
    ap.add_argument("--extra", default="", help="more image/vqgan rows, level:rdo:refine, comma separated "
                    "(e.g. 512:0.0075:30)")
    ap.add_argument("--best", action="store_true", help="the bpp targets also with --param best=1 (each level's "
                    "fitting setting decoded, the closest kept)")
    ap.add_argument("--skip-nzip", action="store_true", help="anchors only")
    ap.add_argument("--out", type=Path, default=ROOT / "out/bench_image")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (MS-SSIM, nzip); 1 is fastest for MS-SSIM on a busy 2-core machine")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs/image_rate_distortion.png")
    ap.add_argument("--sheet", type=Path, default=ROOT / "docs/image_contact_sheet.png")
    ap.add_argument("--manifest", type=Path, help="write nzip's measured quality into this manifest "
                    "(nzip/pretrained/manifest.json)")
    ap.add_argument("--from-results", action="store_true",
                    help="no encoding: reprint the table (and --manifest) from OUT/results.json")
    args = ap.parse_args(argv)
    if args.from_results:
        saved = json.loads((args.out / "results.json").read_text())
        mean = means(saved["results"])
        print_table(mean)
        print_summary(mean)
        if args.manifest:
            manifest_quality(mean, args.manifest, len(saved["meta"]["images"]))
        return
    import torch

    torch.set_num_threads(args.threads)

    print(f"# bench_image  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    images = sorted(args.images.glob("*.png"))
    if not images:
        sys.exit(f"no PNG in {args.images}; run scripts/prepare_images.py first")
    print(f"# {len(images)} images from {args.images}; torch threads {args.threads}")
    args.out.mkdir(parents=True, exist_ok=True)

    sheet_stems = [s for s in SHEET_IMAGES if any(p.stem == s for p in images)] or [p.stem for p in images[:4]]
    thumbs: dict[str, dict] = {s: {} for s in sheet_stems}
    originals = {p.stem: thumb(np.asarray(Image.open(p).convert("RGB"))) for p in images if p.stem in thumbs}

    t0 = time.perf_counter()
    rows = anchor_points(images, thumbs)
    print(f"# anchors: {time.perf_counter() - t0:.0f} s")
    levels = [int(k) for k in args.levels.split(",") if k.strip()]
    if args.skip_nzip:
        print("# nzip skipped (--skip-nzip)")
    else:
        import nzip

        if NZIP_CODEC not in nzip.list_codecs():
            print(f"# nzip skipped: codec {NZIP_CODEC} is not registered in this nzip")
        else:
            t0 = time.perf_counter()
            targets = [float(b) for b in args.bpp.split(",") if b.strip()]
            refines = [int(r) for r in args.refine.split(",") if r.strip()]
            refine_levels = [int(k) for k in args.refine_levels.split(",") if k.strip()]
            nearest = [int(k) for k in args.nearest_levels.split(",") if k.strip()]
            extra = [(int(a), float(b), int(c)) for a, b, c in (e.split(":") for e in args.extra.split(",") if e.strip())]
            rows += nzip_points(levels, images, args.out / "nzip", thumbs, targets, refines, refine_levels, nearest,
                                extra, args.best)
            print(f"# nzip: {time.perf_counter() - t0:.0f} s")

    mean = means(rows)
    print_table(mean)
    print_summary(mean)

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            "cpus": os.cpu_count(), "images": [p.stem for p in images], "levels": levels,
            "target_bpp": TARGET_BPP}
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "results": rows,
         "means": [{"codec": c, "setting": s, **v} for (c, s), v in mean.items()]}, indent=1))
    if args.manifest:
        manifest_quality(mean, args.manifest, len(images))
    plot_rd(mean, args.plot)
    contact_sheet(rows, thumbs, originals, args.sheet)
    print(f"\nwrote {args.out / 'results.json'}, {args.plot}, {args.sheet}")


if __name__ == "__main__":
    main()
