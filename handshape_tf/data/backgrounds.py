"""Backgrounds for synthetic hand crops: random crops of a user's photos, or procedural textures.

Shape shorthand: S output size (square), H x W a source photo.

`BackgroundSource(folder)` draws random crops from the images under `folder` (searched
recursively, e.g. COCO's train2017, or a part of the photo bank of `photo_bank`): a random side
(a quarter of the photo's shorter side to all of it), aspect ratio (3:4 to 4:3, squeezed into the
square), position, horizontal flip and colour (gain per channel, contrast, saturation), so
a few hundred photos give any number of distinct backgrounds. `split="train"` / `"test"` keeps
the images whose relative path hashes into that part (`TEST_FRACTION` of them are "test"), so
one folder gives two backgrounds sets with no photo in common. Files that fail to decode are
skipped, counted and reported in one warning each; only a folder without a single image file
(in the split) is an error. The choice of image is a pure function of the caller's random
generator, so the same generator state gives the same crop whichever images were found bad
before. Decoded photos are kept in memory up to `_CACHE_BYTES`.

`BackgroundSource()` (no folder) generates varied textures: smooth multi-octave noise,
linear and radial gradients, stripes, checkerboards, random filled shapes and lines, blurred
by a random amount and colour-jittered; about one in ten draws is instead a crop of a real
photo that an installed package happens to ship (matplotlib's sample images), when present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Photos shipped inside matplotlib's mpl-data/sample_data (found at run time, optional).
_PACKAGED_PHOTOS = {
    "matplotlib": ("mpl-data/sample_data/grace_hopper.jpg", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png")
}
_PACKAGED_PHOTO_PROBABILITY = 0.1
# Crop side as a fraction of the photo's shorter side, aspect ratio (width / height) range.
_CROP_FRACTION = (0.25, 1.0)
_CROP_ASPECT = (0.75, 4.0 / 3.0)
TEST_FRACTION = 0.15  # of a folder's images in the "test" split
SPLITS = ("train", "test")
_CACHE_BYTES = 512 * 2**20  # decoded photos kept per BackgroundSource
# Draws of a folder image before giving up when they keep failing to decode.
_MAX_DECODE_ATTEMPTS = 32


class BackgroundError(ValueError):
    """A background folder that does not exist, holds no images, or whose images do not decode."""


def find_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursive, by suffix), sorted.

    Raises:
      BackgroundError: the folder does not exist, is not a folder or holds no image files.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise BackgroundError(f"background folder {folder} does not exist")
    if not folder.is_dir():
        raise BackgroundError(f"background folder {folder} is a file; expected a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BackgroundError(
            f"background folder {folder} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return paths


def in_split(relative_path: str, split: str | None) -> bool:
    """Whether an image (by its path relative to the folder) belongs to `split` (None: all)."""
    if split is None:
        return True
    if split not in SPLITS:
        raise ValueError(f"split is {split!r}; expected one of {list(SPLITS)} or None")
    digest = hashlib.sha256(relative_path.replace("\\", "/").encode()).digest()
    is_test = int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION
    return is_test == (split == "test")


def packaged_photos() -> list[Path]:
    """Photos shipped by installed packages (matplotlib's sample data); empty when none is installed."""
    found = []
    for package, names in _PACKAGED_PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        found += [root / name for name in names if (root / name).is_file()]
    return found


class BackgroundSource:
    """Random square backgrounds.

    Args:
      folder: a folder of photos to crop from (recursive), or None for procedural textures
        (plus crops of packaged photos, when available).
      seed: seeds the generator `sample` uses when called without one.
      split: None (every image of the folder), "train" or "test" (`in_split`).

    Attributes:
      folder: the folder, or None.
      seed: as given.
      num_skipped: images found unreadable so far (each is skipped and warned about once).

    Example:
      source = BackgroundSource()
      image = source.sample(np.random.default_rng(0), 256)  # 256 x 256 x 3 uint8 RGB

    Raises:
      BackgroundError: `folder` does not exist, is a file or holds no image files.
    """

    def __init__(self, folder: str | Path | None = None, seed: int = 0, split: str | None = None):
        self.folder = None if folder is None else Path(folder).expanduser()
        self.seed = seed
        self.split = split
        if self.folder is not None:
            paths = find_images(self.folder)
            self._paths = [p for p in paths if in_split(str(p.relative_to(self.folder)), split)]
            if not self._paths:
                raise BackgroundError(
                    f"background folder {self.folder} holds no images in the {split!r} split "
                    f"({len(paths)} images in all); expected more images"
                )
        else:
            self._paths = packaged_photos()
        self._bad: set[int] = set()
        self._photos: dict[int, np.ndarray] = {}  # decoded photos, up to _CACHE_BYTES
        self._cached_bytes = 0
        self._rng = np.random.default_rng(seed)

    @property
    def num_images(self) -> int:
        """Source photos this source crops from (0: procedural only)."""
        return len(self._paths)

    @property
    def num_skipped(self) -> int:
        return len(self._bad)

    def sample(self, rng: np.random.Generator | None, size: int) -> np.ndarray:
        """One background.

        Args:
          rng: the random generator to draw from (None: the source's own, seeded by `seed`).
          size: side S in pixels.

        Returns:
          S x S x 3 uint8 RGB.

        Raises:
          BackgroundError: `_MAX_DECODE_ATTEMPTS` folder images in a row failed to decode.
        """
        if int(size) != size or size <= 0:
            raise ValueError(f"size is {size!r}; expected a positive int")
        rng = self._rng if rng is None else rng
        if self.folder is not None:
            return self._folder_crop(rng, int(size))
        if self._paths and rng.uniform() < _PACKAGED_PHOTO_PROBABILITY:
            photo = self._photo(int(rng.integers(len(self._paths))))
            if photo is not None:
                return _random_crop(rng, photo, int(size))
        return procedural_background(rng, int(size))

    def _photo(self, index: int) -> np.ndarray | None:
        """The decoded photo `index` (cached), or None if it does not decode."""
        photo = self._photos.get(index)
        if photo is None and index not in self._bad:
            photo = self._decode(index)
            if photo is not None and self._cached_bytes + photo.nbytes <= _CACHE_BYTES:
                self._photos[index] = photo
                self._cached_bytes += photo.nbytes
        return photo

    def _folder_crop(self, rng: np.random.Generator, size: int) -> np.ndarray:
        for _ in range(_MAX_DECODE_ATTEMPTS):
            index = int(rng.integers(len(self._paths)))
            if index in self._bad:
                continue
            image = self._photo(index)
            if image is not None:
                return _random_crop(rng, image, size)
        raise BackgroundError(
            f"{_MAX_DECODE_ATTEMPTS} images drawn in a row from {self.folder} were unreadable "
            f"({self.num_skipped} of {len(self._paths)} found bad so far); expected decodable photos"
        )

    def _decode(self, index: int) -> np.ndarray | None:
        """H x W x 3 uint8 RGB of image `index`, or None (counted and warned) if it does not decode."""
        path = self._paths[index]
        image = None
        try:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error:
            pass
        if image is None or image.size == 0 or min(image.shape[:2]) < 8:
            self._bad.add(index)
            logger.warning("skipping unreadable background image %s (%d skipped so far)", path, len(self._bad))
            return None
        return image[..., ::-1]


def _random_crop(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    """A random crop (side, aspect, position, horizontal flip; module docstring) resized to
    S x S, with a random colour jitter."""
    height, width = image.shape[:2]
    side = min(height, width) * rng.uniform(*_CROP_FRACTION)
    aspect = np.exp(rng.uniform(*np.log(_CROP_ASPECT)))
    crop_width = max(1, min(width, int(round(side * np.sqrt(aspect)))))
    crop_height = max(1, min(height, int(round(side / np.sqrt(aspect)))))
    top = int(rng.integers(height - crop_height + 1))
    left = int(rng.integers(width - crop_width + 1))
    crop = image[top : top + crop_height, left : left + crop_width]
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    interpolation = cv2.INTER_AREA if min(crop_width, crop_height) > size else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interpolation).astype(np.float32)
    gain = np.exp(rng.normal(0.0, 0.08, 3)).astype(np.float32)
    grey = crop.mean(axis=-1, keepdims=True)
    crop = grey + (crop - grey) * rng.uniform(0.6, 1.3)  # saturation
    mean = float(crop.mean())
    crop = (crop - mean) * rng.uniform(0.7, 1.2) + mean  # contrast
    return np.clip(crop * gain + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Procedural textures. Every layer is float32 S x S x 3 in [0, 1].


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour with random hue, a saturation biased low and any brightness (RGB in [0, 1])."""
    hsv = np.array([[[rng.uniform(0, 180), 255 * rng.uniform() ** 1.5, 255 * rng.uniform(0.1, 1.0)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis)


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """S x S x 3 multi-octave value noise in two random colours."""
    field = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    cells = int(rng.integers(2, 6))
    persistence = rng.uniform(0.35, 0.7)
    for _ in range(int(rng.integers(2, 6))):
        coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        field += amplitude * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= persistence
        cells = min(cells * 2, size)
    field = np.clip(0.5 + 0.5 * field / total * rng.uniform(1.0, 2.5), 0.0, 1.0)[..., None]
    return _random_colour(rng) * (1 - field) + _random_colour(rng) * field


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    if rng.uniform() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle) + 0.5
    else:
        centre = rng.uniform(-0.2, 1.2, 2)
        t = np.hypot(x - centre[0], y - centre[1]) / rng.uniform(0.5, 1.5)
    t = np.clip(t, 0, 1)[..., None]
    return _random_colour(rng) * (1 - t) + _random_colour(rng) * t


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _grid(size)
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 30)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * frequency
    if rng.uniform() < 0.5:  # hard stripes / checkerboard
        t = (np.floor(phase) % 2).astype(np.float32)
        if rng.uniform() < 0.4:
            t = np.abs(t - (np.floor((-x * np.sin(angle) + y * np.cos(angle)) * frequency) % 2))
    else:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    t = t[..., None].astype(np.float32)
    return _random_colour(rng) * (1 - t) + _random_colour(rng) * t


def _shapes(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Draws random filled circles, rectangles, polygons and thick lines over `image` (in place)."""
    size = image.shape[0]
    for _ in range(int(rng.integers(1, 12))):
        colour = tuple(float(c) for c in _random_colour(rng))
        kind = rng.integers(4)
        centre = rng.uniform(-0.1, 1.1, 2) * size
        extent = rng.uniform(0.03, 0.5) * size
        if kind == 0:
            cv2.circle(image, tuple(int(c) for c in centre), int(extent), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            corner = centre + rng.uniform(-1, 1, 2) * extent
            cv2.rectangle(image, tuple(int(c) for c in centre), tuple(int(c) for c in corner), colour, -1)
        elif kind == 2:
            points = (centre + rng.uniform(-1, 1, (int(rng.integers(3, 7)), 2)) * extent).astype(np.int32)
            cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
        else:
            end = centre + rng.uniform(-1, 1, 2) * size
            thickness = int(rng.integers(1, max(2, size // 16)))
            cv2.line(image, tuple(int(c) for c in centre), tuple(int(c) for c in end), colour, thickness, cv2.LINE_AA)
    return image


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random textured background.

    A base layer (noise, gradient or stripes), optionally a second one blended in with a
    noise mask (both made at half size and enlarged), random shapes, a random blur and a
    colour/contrast jitter.

    Args:
      rng: the random generator.
      size: side S in pixels.

    Returns:
      S x S x 3 uint8 RGB.
    """
    layers = (_noise, _gradient, _stripes)
    # The layers are smooth or regular: made at half size (a quarter of the work) and enlarged.
    half = max(size // 2, 8)
    image = layers[rng.choice(3, p=[0.45, 0.3, 0.25])](rng, half)
    if rng.uniform() < 0.5:
        other = layers[int(rng.integers(3))](rng, half)
        blend = _noise(rng, half)[..., :1]
        image = image * (1 - blend) + other * blend
    image = cv2.resize(np.ascontiguousarray(image, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.uniform() < 0.6:
        image = _shapes(rng, image)
    sigma = rng.choice([0.0, rng.uniform(0.5, 2.0), rng.uniform(2.0, 6.0)], p=[0.4, 0.35, 0.25])
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma * size / 256)
    gain = rng.uniform(0.6, 1.3, 3).astype(np.float32) ** 0.5
    contrast = rng.uniform(0.6, 1.2)
    mean = image.mean()
    image = (image - mean) * contrast + mean
    if rng.uniform() < 0.5:  # faint fine-grained texture (paper, fabric, wall)
        image = image + rng.normal(0, rng.uniform(0.005, 0.03), (size, size, 1)).astype(np.float32)
    return (np.clip(image * gain, 0, 1) * 255 + 0.5).astype(np.uint8)
