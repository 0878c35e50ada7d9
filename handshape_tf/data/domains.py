"""Image domains of the hand renderer: everything that differs between two rendered datasets.

One renderer (`handshape_tf.data.renderer.HandRenderer`) draws hands, poses, shapes and views
the same way for every dataset; a `Domain` decides how they look and how they are framed:
which full-frame cameras see them from how far, how the crop is framed around the hand, the
skin and lighting models, the backgrounds, occluders in front of the hand and the camera's
effects (`camera_effects.CameraEffects`). Domains are frozen, picklable and serialisable
(`as_dict`), so a dataset's metadata records the exact domain it was rendered in. A domain
with a depth `sensor` (`depth_sensor.SensorModel`) is an RGB-D domain: its samples also carry
the sensor's depth map.

Built-in domains (`DOMAINS`):

* "photo" (the training default): real photographs behind the hand (the train part of the
  photo bank, `handshape_tf.data.photo_bank`), skin tones uniform over the Monk scale with
  pores and freckles, up to three lights of black-body colours plus an ambient term taken from
  the background's own colours, occluders, the full camera model and loose, off-centre
  detector-like framing (fingers may cross the crop border).
* "procedural": "photo" with procedural textures instead of photographs (the backgrounds of
  the project's first datasets).
* "unseen": the project's stand-in for real photographs, rendered with what no training domain
  uses (`UNSEEN_DISJOINT` lists the checked parts): the test part of the photo bank (other
  source photos), a redder, glossier skin model with tones around the middle of the Monk scale,
  indoor lights whose key light is tinted off the black-body locus (fluorescent green or LED
  magenta), stronger sensor noise and heavier JPEG compression than any training camera.
* "real_like": the RGB-D domain of weak supervision (`train.weak_stb`): STB's RealSense colour
  camera at 300-650 mm, the indoor skin and lighting without tints, photos from the test part
  of the bank, moderate JPEG, and a RealSense-like depth sensor (noise growing with distance,
  holes at silhouettes and grazing angles, `handshape_tf.data.depth_sensor`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from handshape_tf.data.camera_effects import CameraEffects
from handshape_tf.data.depth_sensor import SensorModel

# Full-frame cameras: name, width, height, horizontal field of view range (degrees).
CAMERA_MODELS = (
    ("webcam_vga", 640, 480, (55.0, 78.0)),
    ("webcam_hd", 1280, 720, (60.0, 78.0)),
    ("realsense", 640, 480, (65.0, 72.0)),
    ("phone", 1920, 1080, (60.0, 77.0)),
)
# STB's RealSense colour camera: frame size and intrinsics (continuous pixel convention).
REALSENSE_FRAME = (640, 480)
REALSENSE_INTRINSICS = (607.92271, 607.88192, 314.78337 + 0.5, 236.42484 + 0.5)


@dataclasses.dataclass(frozen=True)
class Framing:
    """How the square crop sits around the hand (a detector's box).

    Attributes:
      margin: (low, high) crop side / the larger side of the projected hand's bounding box.
      jitter: the crop centre moves by up to this fraction of the free margin on each side.
      cut_probability: probability that the box is off by more than the margin allows, so part
        of the hand (usually fingertips) crosses the crop border.
      cut_fraction: the extra shift then, uniform up to this fraction of the crop side per axis.
    """

    margin: tuple[float, float] = (1.1, 1.5)
    jitter: float = 0.4
    cut_probability: float = 0.0
    cut_fraction: float = 0.0


@dataclasses.dataclass(frozen=True)
class Domain:
    """One rendered image domain (module docstring).

    Attributes:
      name: a label stored with the data.
      cameras: "consumer" (`CAMERA_MODELS`, hand centre anywhere in the central 80%) or
        "realsense" (STB's colour camera, central 70%).
      distance_mm: (low, high) camera to hand centre, log-uniform.
      framing: the crop around the hand.
      backgrounds: "photos" (the photo bank or the user's folder) or "procedural".
      photo_split: the part of the photo bank, "train" or "test".
      skin: "monk" (uniform over the Monk scale, `appearance.sample_skin`) or "indoor"
        (`appearance.sample_indoor_skin`).
      skin_detail: probability of pores and freckles on the skin.
      skin_texture: (low, high) contrast of a photograph's fine structure on the skin
        (`appearance.photo_texture`, from the domain's own photos); (0, 0) for none.
      lighting: "studio" (`appearance.sample_lighting`) or "indoor"
        (`appearance.sample_indoor_lighting`).
      extra_light_probability: probability of a third, dimmer light ("studio").
      environment_light: fraction of the ambient light whose colour comes from the background
        (mean of its upper and lower halves), in [0, 1].
      light_tint: (low, high) green (> 0) or magenta (< 0) tint of the key light off the
        black-body locus, applied as exp(+-tint) on G; (0, 0) for none.
      cast_shadow_probability: probability of a hard shadow over the picture
        (`appearance.cast_shadow`); cast_shadow_strength: (low, high) its darkening.
      occluder_probability: probability of an object in front of part of the hand.
      sleeve_probability: probability that the forearm wears a sleeve.
      camera: the camera's effects.
      sensor: the depth sensor beside the camera, or None (no sensor depth map).
    """

    name: str
    cameras: Literal["consumer", "realsense"] = "consumer"
    distance_mm: tuple[float, float] = (250.0, 1000.0)
    framing: Framing = Framing()
    backgrounds: Literal["photos", "procedural"] = "photos"
    photo_split: Literal["train", "test"] = "train"
    skin: Literal["monk", "indoor"] = "monk"
    skin_detail: float = 0.7
    skin_texture: tuple[float, float] = (0.0, 0.0)
    lighting: Literal["studio", "indoor"] = "studio"
    extra_light_probability: float = 0.3
    environment_light: float = 0.5
    light_tint: tuple[float, float] = (0.0, 0.0)
    cast_shadow_probability: float = 0.0
    cast_shadow_strength: tuple[float, float] = (0.0, 0.0)
    occluder_probability: float = 0.25
    sleeve_probability: float = 0.5
    camera: CameraEffects = CameraEffects()
    sensor: SensorModel | None = None

    def as_dict(self) -> dict[str, Any]:
        """The domain as plain JSON values (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    def without(self, *effects: str) -> Domain:
        """The domain with effects switched off, for ablations: "photos" (procedural
        backgrounds), "skin_detail", "extra_light", "environment_light", "occluders",
        "framing" (no cut boxes), "camera" (every camera effect), or a camera effect's name
        (`CameraEffects.without`)."""
        domain = self
        for effect in effects:
            if effect == "photos":
                domain = dataclasses.replace(domain, backgrounds="procedural")
            elif effect == "skin_detail":
                domain = dataclasses.replace(domain, skin_detail=0.0)
            elif effect == "extra_light":
                domain = dataclasses.replace(domain, extra_light_probability=0.0)
            elif effect == "environment_light":
                domain = dataclasses.replace(domain, environment_light=0.0)
            elif effect == "occluders":
                domain = dataclasses.replace(domain, occluder_probability=0.0)
            elif effect == "framing":
                domain = dataclasses.replace(domain, framing=dataclasses.replace(domain.framing, cut_probability=0.0))
            elif effect == "camera":
                domain = dataclasses.replace(domain, camera=domain.camera.without(*CAMERA_EFFECTS))
            else:
                domain = dataclasses.replace(domain, camera=domain.camera.without(effect))
        suffix = "-without-" + "-".join(effects) if effects else ""
        return dataclasses.replace(domain, name=self.name + suffix)


CAMERA_EFFECTS = ("white_balance", "exposure", "vignetting", "defocus", "motion", "noise", "chromatic", "jpeg")
ABLATIONS = ("photos", "skin_detail", "extra_light", "environment_light", "occluders", "framing", "camera")


def json_ready(value: Any) -> Any:
    """Tuples -> lists, recursively (what a JSON round trip gives)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


# Occluders and boxes that cut the hand are off by default: 12-minute runs of the cpu preset
# (train.domain_ablations) scored pose 53.2 / PA 23.9 mm on the unseen domain without them and
# 58.8 / 27.9 with them (occluder_probability 0.25, cut_probability 0.15); at that budget the
# hidden or cut-off fingers slow learning more than they teach.
PHOTO = Domain(
    name="photo",
    framing=Framing(margin=(1.05, 1.8), jitter=0.6, cut_probability=0.0, cut_fraction=0.12),
    occluder_probability=0.0,
)
UNSEEN = Domain(
    name="unseen",
    distance_mm=(300.0, 800.0),
    framing=Framing(margin=(1.1, 1.6), jitter=0.5, cut_probability=0.1, cut_fraction=0.1),
    photo_split="test",
    skin="indoor",
    skin_texture=(0.05, 0.12),
    lighting="indoor",
    light_tint=(0.06, 0.15),
    cast_shadow_probability=0.5,
    cast_shadow_strength=(0.4, 0.8),
    occluder_probability=0.15,
    camera=CameraEffects(
        white_balance_sd=(0.08, 0.03, 0.1),
        exposure_stops=(-0.8, 0.6),
        vignetting_probability=0.6,
        vignetting=(0.1, 0.4),
        defocus_probability=0.3,
        defocus_px=(0.5, 1.8),
        motion_probability=0.3,
        motion_px=(3.0, 8.0),
        noise_probability=1.0,
        shot_noise=(3e-3, 8e-3),
        read_noise=(3e-5, 1e-4),
        chromatic_probability=0.5,
        chromatic_px=(0.5, 1.5),
        jpeg_probability=1.0,
        jpeg_quality=(15, 40),
    ),
)
REAL_LIKE = Domain(
    name="real_like",
    cameras="realsense",
    distance_mm=(300.0, 650.0),
    photo_split="test",
    skin="indoor",
    lighting="indoor",
    occluder_probability=0.0,
    camera=CameraEffects(
        white_balance_sd=(0.07, 0.03, 0.09),
        exposure_stops=(-0.75, 0.6),
        vignetting_probability=1.0,
        vignetting=(0.0, 0.35),
        defocus_probability=0.7,
        defocus_px=(0.7, 2.2),
        motion_probability=1.0,
        motion_px=(4.0, 10.0),
        noise_probability=1.0,
        shot_noise=(2e-4, 3e-3),
        read_noise=(1e-6, 3e-5),
        chromatic_probability=0.0,
        jpeg_probability=1.0,
        jpeg_quality=(30, 80),
    ),
    sensor=SensorModel(),
)
DOMAINS = {
    d.name: d for d in (PHOTO, dataclasses.replace(PHOTO.without("photos"), name="procedural"), UNSEEN, REAL_LIKE)
}

# The parts of "unseen" that no training domain ("photo", "procedural") reaches: checked by
# `check_disjoint` (and the tests), besides the background photos (other bank sources).
UNSEEN_DISJOINT = (
    "skin",
    "skin_texture",
    "lighting",
    "light_tint",
    "cast_shadow_strength",
    "camera.shot_noise",
    "camera.jpeg_quality",
)


def _range(domain: Domain, field: str) -> Any:
    value: Any = domain
    for part in field.split("."):
        value = getattr(value, part)
    return value


def check_disjoint(test: Domain, train: Domain, fields: tuple[str, ...] = UNSEEN_DISJOINT) -> None:
    """Raises ValueError if a (low, high) range of `test` overlaps `train`'s, or a model name is
    shared, for each of `fields` (dotted names), or if both use the same part of the photo bank."""
    problems = []
    if test.backgrounds == train.backgrounds == "photos" and test.photo_split == train.photo_split:
        problems.append(f"both use the {test.photo_split!r} photos")
    for field in fields:
        a, b = _range(test, field), _range(train, field)
        if isinstance(a, str):
            if a == b:
                problems.append(f"{field}: both {a!r}")
        elif max(a[0], b[0]) <= min(a[1], b[1]):
            problems.append(f"{field}: {tuple(a)} overlaps {tuple(b)}")
    if problems:
        raise ValueError(f"domain {test.name!r} is not disjoint from {train.name!r}: " + "; ".join(problems))


def get_domain(name: str) -> Domain:
    """The built-in domain `name`, optionally with ablated effects: "photo-without-jpeg-occluders"."""
    base, _, rest = name.partition("-without-")
    if base not in DOMAINS:
        raise ValueError(
            f"unknown domain {name!r}; expected one of {sorted(DOMAINS)} (optionally "
            f"followed by -without-EFFECT[-EFFECT...], effects {list(ABLATIONS + CAMERA_EFFECTS)})"
        )
    effects = _split_effects(rest) if rest else ()
    return DOMAINS[base].without(*effects) if effects else DOMAINS[base]


def _split_effects(text: str) -> tuple[str, ...]:
    """'skin_detail-jpeg' -> ('skin_detail', 'jpeg'); names contain '_', never '-'."""
    effects = tuple(text.split("-"))
    unknown = [e for e in effects if e not in ABLATIONS + CAMERA_EFFECTS]
    if unknown:
        raise ValueError(f"unknown effects {unknown}; expected some of {list(ABLATIONS + CAMERA_EFFECTS)}")
    return effects
