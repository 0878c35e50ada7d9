"""What a consumer camera does to a rendered crop: white balance, exposure, vignetting, blur,
sensor noise, the tone curve, chromatic aberration, JPEG and the crop's resampling (numpy/cv2).

Shape shorthand: N crop side, n the crop's side in full-frame pixels.

`CameraEffects` holds one domain's ranges and probabilities (`handshape_tf.data.domains`);
`apply_camera(rng, radiance, effects, source_pixels)` draws one camera from them and turns an
N x N x 3 linear-RGB crop into the uint8 sRGB image a real crop of a real photo would be, in the
order the light goes through a camera:

1. white-balance error: per-channel gains exp(normal(0, white_balance_sd)) (the camera's
   estimate of the illuminant is off), and an exposure error of 2^uniform(exposure_stops) f-stops;
2. vignetting: the corners darker by up to `vignetting` (radial falloff from a random centre);
3. defocus (Gaussian) or motion blur (a line kernel of random direction), in pixels at N = 256;
4. resampling: a crop that spans n < N full-frame pixels is reduced to n x n here (the sensor's
   resolution) and enlarged back to N at the end, after noise and JPEG, as a detector's crop of
   a small hand is;
5. sensor noise: signal-dependent shot noise (variance proportional to the linear value) plus
   read noise;
6. the sRGB tone curve, then lateral chromatic aberration: the red and blue channels scaled
   about the centre by 1 +- `chromatic_px` / (N / 2) (colour fringes at edges away from it);
7. JPEG at a random quality (8 x 8 blocks, chroma subsampling), decoded again.

Every step has its probability; a probability of 0 turns the step off (ablations).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from handshape_tf.data.appearance import linear_to_srgb

_REFERENCE_SIZE = 256.0  # blur and aberration sizes are in pixels of a 256 px crop
MIN_SOURCE_PIXELS = 16  # crops from fewer full-frame pixels are not reduced further


@dataclasses.dataclass(frozen=True)
class CameraEffects:
    """One domain's camera: probabilities and (low, high) ranges of each effect (module docstring).

    Attributes:
      white_balance_sd: 3 standard deviations of the log gain of R, G, B.
      exposure_stops: (low, high) exposure error in f-stops, uniform.
      vignetting_probability, vignetting: probability, (low, high) corner darkening fraction.
      defocus_probability, defocus_px: probability, (low, high) Gaussian sigma at 256 px.
      motion_probability, motion_px: probability (of the cases without defocus), (low, high)
        kernel length at 256 px.
      noise_probability, shot_noise, read_noise: probability, (low, high) variance per unit of
        linear signal, (low, high) read noise variance.
      chromatic_probability, chromatic_px: probability, (low, high) red/blue offset at the
        border, pixels at 256 px.
      jpeg_probability, jpeg_quality: probability, (low, high) quality (inclusive).
    """

    white_balance_sd: tuple[float, float, float] = (0.05, 0.02, 0.06)
    exposure_stops: tuple[float, float] = (-0.5, 0.5)
    vignetting_probability: float = 0.5
    vignetting: tuple[float, float] = (0.05, 0.35)
    defocus_probability: float = 0.25
    defocus_px: tuple[float, float] = (0.3, 1.5)
    motion_probability: float = 0.15
    motion_px: tuple[float, float] = (2.0, 6.0)
    noise_probability: float = 0.8
    shot_noise: tuple[float, float] = (1e-4, 2e-3)
    read_noise: tuple[float, float] = (1e-6, 2e-5)
    chromatic_probability: float = 0.3
    chromatic_px: tuple[float, float] = (0.3, 1.2)
    jpeg_probability: float = 0.7
    jpeg_quality: tuple[int, int] = (45, 95)

    def without(self, *effects: str) -> CameraEffects:
        """A copy with the named effects' probabilities (e.g. "jpeg", "defocus") set to 0; the
        white balance and exposure errors are "white_balance" and "exposure"."""
        changes = {}
        for effect in effects:
            if effect == "white_balance":
                changes["white_balance_sd"] = (0.0, 0.0, 0.0)
            elif effect == "exposure":
                changes["exposure_stops"] = (0.0, 0.0)
            elif f"{effect}_probability" in {f.name for f in dataclasses.fields(self)}:
                changes[f"{effect}_probability"] = 0.0
            else:
                raise ValueError(
                    f"unknown camera effect {effect!r}; expected white_balance, exposure, vignetting, "
                    "defocus, motion, noise, chromatic or jpeg"
                )
        return dataclasses.replace(self, **changes)


def vignette(image: np.ndarray, strength: float, centre: np.ndarray) -> np.ndarray:
    """N x N x C image darkened by `strength` at a distance of half a diagonal from `centre` (pixels)."""
    size = image.shape[0]
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    radius = ((columns - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (0.5 * size**2)
    return image * (1.0 - strength * np.clip(radius, 0.0, 1.5))[..., None].astype(np.float32)


def motion_blur(image: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """Image blurred along a line of `length` pixels at `angle_deg` (a moving hand or camera)."""
    size = max(3, int(np.ceil(length)) | 1)
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle_deg, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size))
    return cv2.filter2D(image, -1, kernel / max(float(kernel.sum()), 1e-6), borderType=cv2.BORDER_REFLECT)


def chromatic_aberration(image: np.ndarray, offset_px: float) -> np.ndarray:
    """Red channel scaled about the centre by 1 + d, blue by 1 - d, d = offset / (N / 2)."""
    size = image.shape[0]
    out = image.copy()
    for channel, sign in ((0, 1.0), (2, -1.0)):
        scale = 1.0 + sign * offset_px / (size / 2)
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, scale)
        out[..., channel] = cv2.warpAffine(
            image[..., channel], matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """H x W x 3 uint8 RGB through a JPEG encoder at `quality` and back."""
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding of a {image.shape} image failed")
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded, clipped)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def apply_camera(
    rng: np.random.Generator, radiance: np.ndarray, effects: CameraEffects, source_pixels: float
) -> np.ndarray:
    """The camera's uint8 sRGB image of a linear-RGB crop (module docstring, steps 1-7).

    Args:
      rng: the random generator (every draw comes from it).
      radiance: N x N x 3 float32 linear RGB.
      effects: the domain's camera.
      source_pixels: n, the crop's side in full-frame pixels.

    Returns:
      N x N x 3 uint8 sRGB.
    """
    size = radiance.shape[0]
    unit = size / _REFERENCE_SIZE
    gains = np.exp(rng.normal(0.0, effects.white_balance_sd)) * 2.0 ** rng.uniform(*effects.exposure_stops)
    image = (radiance * gains).astype(np.float32)
    if rng.uniform() < effects.vignetting_probability:
        image = vignette(image, rng.uniform(*effects.vignetting), size * (0.5 + rng.uniform(-0.3, 0.3, 2)))
    if rng.uniform() < effects.defocus_probability:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(*effects.defocus_px) * unit)
    elif rng.uniform() < effects.motion_probability:
        image = motion_blur(image, rng.uniform(*effects.motion_px) * unit, rng.uniform(0.0, 180.0))
    source = int(round(source_pixels))
    if MIN_SOURCE_PIXELS <= source < size:
        image = cv2.resize(image, (source, source), interpolation=cv2.INTER_AREA)
    if rng.uniform() < effects.noise_probability:
        variance = rng.uniform(*effects.shot_noise) * np.clip(image, 0.0, None) + rng.uniform(*effects.read_noise)
        image = image + np.sqrt(variance) * rng.standard_normal(image.shape, dtype=np.float32)
    image = linear_to_srgb(image)
    if rng.uniform() < effects.chromatic_probability:
        image = chromatic_aberration(image, rng.uniform(*effects.chromatic_px) * image.shape[0] / _REFERENCE_SIZE)
    encoded = to_uint8(image)
    if rng.uniform() < effects.jpeg_probability:
        encoded = jpeg(encoded, int(rng.integers(effects.jpeg_quality[0], effects.jpeg_quality[1] + 1)))
    if encoded.shape[0] != size:
        encoded = cv2.resize(encoded, (size, size), interpolation=cv2.INTER_LINEAR)
    return encoded
