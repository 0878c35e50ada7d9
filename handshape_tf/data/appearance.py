"""Skin, lights and shading for the synthetic hands (numpy).

Shape shorthand: V mesh vertices, N shaded pixels, L lights (3; unused ones have zero colour),
M ambient-occlusion occluders, B batch.

Colours are linear RGB in [0, 1] unless a name says sRGB. The pipeline per sample:

1. `skin_regions(template)` (once per template): per-vertex weights of the palmar side, the
   nails and the dorsal knuckles, from the rest mesh and its joint frames (WebXR frames have +y
   out of the back of the hand / the nail, -z along the bone).
2. `sample_skin(rng)`: a skin tone from the 10-step Monk Skin Tone scale (Monk 2019; light to
   dark, interpolated continuously, uniform over the scale), a lighter, pinker palm (the
   palmar skin of every tone carries less melanin), pinkish nails, darker knuckles and a
   gloss; `skin_albedo` spreads it over a mesh with smooth per-vertex variation (random
   Fourier features of the position, wavelengths 12-60 mm) in brightness and redness: V x 3
   albedo and V specular strength (nails glossier). `cloth_albedo` does the same for sleeves.
3. `sample_lighting(rng, skin)`: a hemispherical ambient term (sky and ground colours about a random
   up direction) and one or two directional lights of random colour temperature (2500-8000 K)
   and intensity, mostly from the camera's side; wrap-around diffuse (a cheap stand-in for
   skin's subsurface scattering), Blinn-Phong specular and an exposure partly metered on
   the skin.
4. `ambient_occlusion(...)`: per-vertex occlusion from surface disks (Bunnell 2005, "Dynamic
   ambient occlusion and indirect lighting", GPU Gems 2): occluder j with area A_j seen from
   vertex i at distance r occludes A_j cos+(theta_i) cos+(theta_j) / (pi r^2 + A_j), summed over
   M occluder vertices spread over the mesh; it darkens the gaps between fingers, the palm of
   a fist and the folds at flexed joints.
5. `shade(...)` at the covered pixels, then `linear_to_srgb`.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from handshape_tf.assets.template import HandTemplate

# Monk Skin Tone scale (Ellis Monk, 2019; published by Google under CC-BY 4.0), tones 1-10, sRGB.
MONK_SKIN_TONES_SRGB = (
    np.array(
        [
            [246, 237, 228],
            [243, 231, 219],
            [247, 234, 208],
            [234, 218, 186],
            [215, 189, 150],
            [160, 126, 86],
            [130, 92, 67],
            [96, 65, 52],
            [58, 49, 42],
            [41, 36, 32],
        ],
        np.float32,
    )
    / 255.0
)
# Palmar skin and nail beds, sRGB (lighter and pinker than the back of the hand).
_PALM_SRGB = np.array([222, 168, 148], np.float32) / 255.0
_NAIL_SRGB = np.array([238, 196, 190], np.float32) / 255.0
# Approximate colours of a black body (sRGB, normalised to the brightest channel) by temperature.
_KELVIN = np.array([2500.0, 3500.0, 4500.0, 5500.0, 6500.0, 8000.0])
_KELVIN_SRGB = (
    np.array(
        [[255, 161, 72], [255, 196, 137], [255, 219, 186], [255, 236, 224], [255, 249, 253], [227, 233, 255]],
        np.float32,
    )
    / 255.0
)
MAX_LIGHTS = 3
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 weights of linear RGB
# Rig joint name fragments whose dorsal skin gets a knuckle tint.
_KNUCKLE_JOINTS = ("phalanx-proximal", "phalanx-intermediate", "phalanx-distal")


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """... x 3 sRGB in [0, 1] -> linear RGB (IEC 61966-2-1 transfer function)."""
    srgb = np.asarray(srgb, np.float32)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """... x 3 linear RGB -> sRGB in [0, 1] (clipped)."""
    linear = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SkinRegions:
    """Per-vertex weights in [0, 1] of a hand template's skin regions (vertex order of the mesh).

    Attributes:
      palmar: V, 1 on the palm and the palmar side of the fingers, 0 on the back.
      nail: V, 1 on the nails.
      knuckle: V, 1 on the dorsal skin over the finger joints.
    """

    palmar: np.ndarray
    nail: np.ndarray
    knuckle: np.ndarray


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rest_normals(template: HandTemplate) -> np.ndarray:
    """V x 3 area-weighted unit vertex normals of the rest mesh."""
    vertices = template.vertices.astype(np.float64)
    corners = vertices[template.faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, template.faces[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=4)
def skin_regions(template: HandTemplate) -> SkinRegions:
    """The palmar, nail and knuckle weights of a rest-pose template (cached per template).

    Palmar: the vertex normal against the skin-weighted dorsal (+y) axis of its joints. Nails:
    dorsal-facing vertices driven by a distal phalanx, over the distal 60% of its bone and
    within 0.6 of the finger's half-width of its midline. Knuckles: dorsal vertices within
    ~4.5 mm (Gaussian SD) of a finger's MCP, PIP or DIP joint.
    """
    vertices = template.vertices.astype(np.float64)
    normals = _rest_normals(template)
    rest = template.rest_transforms.astype(np.float64)
    weights = template.skin_weights.astype(np.float64)
    dorsal_axis = weights @ rest[:, :3, 1]  # V x 3: blended +y of the driving joints
    dorsal_axis /= np.maximum(np.linalg.norm(dorsal_axis, axis=1, keepdims=True), 1e-12)
    facing = np.sum(normals * dorsal_axis, axis=1)  # +1 on the back, -1 on the palm
    palmar = _smoothstep(0.1, -0.4, facing)

    names = template.joint_names
    owner = np.argmax(weights, axis=1)
    nail = np.zeros(len(vertices))
    knuckle = np.zeros(len(vertices))
    for j, name in enumerate(names):
        if name.endswith("phalanx-distal"):
            tip = names.index(name.replace("phalanx-distal", "tip"))
            local = (vertices - rest[j, :3, 3]) @ rest[j, :3, :3]  # V x 3 in the joint's frame
            length = np.linalg.norm(rest[tip, :3, 3] - rest[j, :3, 3])
            along = -local[:, 2] / length  # 0 at the DIP (IP) joint, 1 at the tip joint
            mine = owner == j
            half_width = np.percentile(np.abs(local[mine, 0]), 90)
            across = np.abs(local[:, 0]) / half_width
            nail = np.maximum(
                nail,
                mine
                * _smoothstep(0.3, 0.5, along)
                * _smoothstep(0.75, 0.55, across)
                * _smoothstep(0.3, 0.6, facing)
                * (local[:, 1] > 0),
            )
        if any(name.endswith(part) for part in _KNUCKLE_JOINTS) and not name.startswith("thumb-phalanx-distal"):
            distance = np.linalg.norm(vertices - rest[j, :3, 3], axis=1)
            knuckle = np.maximum(knuckle, np.exp(-0.5 * (distance / 0.0045) ** 2) * _smoothstep(0.3, 0.8, facing))
    return SkinRegions(
        palmar=palmar.astype(np.float32), nail=nail.astype(np.float32), knuckle=knuckle.astype(np.float32)
    )


def _fourier_noise(
    rng: np.random.Generator, points: np.ndarray, count: int, wavelengths: tuple[float, float]
) -> np.ndarray:
    """N smooth random values (zero mean, unit variance) at points N x 3 (metres)."""
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequency = 2 * np.pi / rng.uniform(*wavelengths, size=(count, 1))
    phases = rng.uniform(0, 2 * np.pi, count)
    return np.sqrt(2.0 / count) * np.sin(points @ (directions * frequency).T + phases).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Skin:
    """One person's skin colours (linear RGB) and gloss.

    Attributes:
      tone: position on the Monk scale, 1 (lightest) .. 10 (darkest).
      base: 3 dorsal skin albedo.
      palm: 3 palmar skin albedo (lighter, pinker).
      nail: 3 nail albedo.
      knuckle: 3 multiplier of the dorsal knuckle skin.
      specular: specular strength of the skin (nails get 4x).
    """

    tone: float
    base: np.ndarray
    palm: np.ndarray
    nail: np.ndarray
    knuckle: np.ndarray
    specular: float


def sample_skin(rng: np.random.Generator) -> Skin:
    """A random skin: a tone uniform over the Monk scale (interpolated), a little hue jitter."""
    tone = rng.uniform(0.0, len(MONK_SKIN_TONES_SRGB) - 1.0)
    low = int(np.floor(tone))
    high = min(low + 1, len(MONK_SKIN_TONES_SRGB) - 1)
    tones = srgb_to_linear(MONK_SKIN_TONES_SRGB)
    base = tones[low] * (1 - (tone - low)) + tones[high] * (tone - low)
    # Hue jitter: a little more red (flushed) or yellow (olive).
    base = base * np.exp(rng.normal(0.0, [0.05, 0.03, 0.06]))
    darkness = tone / (len(MONK_SKIN_TONES_SRGB) - 1.0)  # 0 lightest .. 1 darkest
    palm_mix = (0.1 + 0.3 * darkness) * rng.uniform(0.7, 1.1)
    palm = base + (srgb_to_linear(_PALM_SRGB) * rng.uniform(0.85, 1.05) - base) * palm_mix
    nail_mix = (0.2 + 0.15 * darkness) * rng.uniform(0.6, 1.0)
    nail = base + (srgb_to_linear(_NAIL_SRGB) * rng.uniform(0.85, 1.05) - base) * nail_mix
    tint = np.array([0.92, 0.8, 0.8]) if darkness < 0.5 else np.array([0.75, 0.72, 0.72])
    knuckle = 1.0 + (tint - 1.0) * rng.uniform(0.3, 1.0)
    return Skin(
        tone=float(tone + 1.0),
        base=base.astype(np.float32),
        palm=palm.astype(np.float32),
        nail=nail.astype(np.float32),
        knuckle=knuckle.astype(np.float32),
        specular=float(rng.uniform(0.03, 0.12) * (1.0 + 0.5 * darkness)),
    )


def skin_albedo(
    rng: np.random.Generator, skin: Skin, regions: SkinRegions, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo and specular strength of a skin over a mesh.

    Args:
      rng: the random generator (draws the smooth variation).
      skin: the colours.
      regions: V region weights of the mesh (`skin_regions`, or any SkinRegions of V rows).
      points: V x 3 positions (metres), where the smooth variation is evaluated.

    Returns:
      (albedo V x 3 float32 linear RGB, specular V float32).
    """
    points = np.asarray(points, np.float64)
    brightness = 1.0 + rng.uniform(0.03, 0.10) * _fourier_noise(rng, points, 8, (0.012, 0.06))
    redness = rng.uniform(0.02, 0.08) * _fourier_noise(rng, points, 8, (0.015, 0.06))
    speckle = 1.0 + rng.uniform(0.0, 0.03) * rng.standard_normal(len(points))
    albedo = skin.base + (skin.palm - skin.base) * regions.palmar[:, None]
    albedo = albedo + (skin.nail - albedo) * regions.nail[:, None]
    albedo = albedo * (1.0 + (skin.knuckle - 1.0) * regions.knuckle[:, None])
    albedo = albedo * (brightness * speckle)[:, None] * np.exp(np.outer(redness, [1.0, -0.6, -0.6]))
    specular = skin.specular * (1.0 + 3.0 * regions.nail)
    return np.clip(albedo, 0.0, 1.0).astype(np.float32), specular.astype(np.float32)


def cloth_albedo(rng: np.random.Generator, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo and specular strength of a random fabric (a sleeve).

    Args:
      rng: the random generator.
      points: V x 3 positions (metres), where the smooth variation is evaluated.

    Returns:
      (albedo V x 3 float32 linear RGB in 0.01 .. 0.8, specular V float32).
    """
    hue = rng.uniform(0, 2 * np.pi)
    saturation = rng.uniform() ** 1.5 * 0.8
    value = rng.uniform(0.02, 0.7)
    # A colour around grey of brightness `value`, pushed towards a hue.
    colour = value * (1.0 + saturation * np.cos(hue - np.arange(3) * 2 * np.pi / 3))
    shading = 1.0 + rng.uniform(0.05, 0.2) * _fourier_noise(rng, np.asarray(points, np.float64), 8, (0.01, 0.05))
    albedo = np.clip(colour[None, :] * shading[:, None], 0.01, 0.8)
    return albedo.astype(np.float32), np.full(len(points), rng.uniform(0.0, 0.05), np.float32)


@dataclasses.dataclass(frozen=True)
class Lighting:
    """Lights in the camera frame (x right, y down, z forward).

    Attributes:
      sky: 3 linear RGB ambient from the `up` hemisphere.
      ground: 3 linear RGB ambient from the opposite hemisphere.
      up: 3 unit vector.
      directions: L x 3 unit vectors from the surface towards each light.
      colours: L x 3 linear RGB intensities (zero rows for absent lights).
      wrap: diffuse wrap-around in [0, 1] (0 = Lambert).
      shininess: Blinn-Phong exponent.
      exposure: multiplier applied to the radiance before display.
    """

    sky: np.ndarray
    ground: np.ndarray
    up: np.ndarray
    directions: np.ndarray
    colours: np.ndarray
    wrap: float
    shininess: float
    exposure: float


def kelvin_to_linear(kelvin: float) -> np.ndarray:
    """3 linear RGB colour of a black body at `kelvin` (2500-8000 K), brightest channel 1."""
    srgb = np.array([np.interp(kelvin, _KELVIN, _KELVIN_SRGB[:, c]) for c in range(3)], np.float32)
    linear = srgb_to_linear(srgb)
    return linear / linear.max()


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def sample_lighting(rng: np.random.Generator, skin: Skin, extra_light_probability: float = 0.0) -> Lighting:
    """Random ambient and one to three directional lights, and an exposure metered on the skin.

    The key light comes from the camera's hemisphere (direction z < 0 in the camera frame,
    within 80 deg of the optical axis); a second light (60%) from anywhere, 20-80% as strong,
    which gives rim light when it is behind the hand; a third (`extra_light_probability`), 10-50%
    as strong, of any colour temperature. Ambient is 10-50% of the key light.
    The exposure is partly metered on the hand, as cameras with subject-priority exposure do:
    multiplied by (0.25 / skin luminance)^k with k in 0..0.3, so dark skin is lifted out of
    black and light skin kept off white without erasing the difference.
    """
    directions = np.zeros((MAX_LIGHTS, 3), np.float32)
    colours = np.zeros((MAX_LIGHTS, 3), np.float32)
    theta = np.arccos(rng.uniform(np.cos(np.radians(80)), 1.0))
    phi = rng.uniform(0, 2 * np.pi)
    directions[0] = [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), -np.cos(theta)]
    colours[0] = kelvin_to_linear(rng.uniform(2500, 8000))
    if rng.uniform() < 0.6:
        directions[1] = _unit(rng.normal(size=3))
        colours[1] = kelvin_to_linear(rng.uniform(2500, 8000)) * rng.uniform(0.2, 0.8)
    if rng.uniform() < extra_light_probability:
        directions[2] = _unit(rng.normal(size=3))
        colours[2] = kelvin_to_linear(rng.uniform(2500, 8000)) * rng.uniform(0.1, 0.5)
    ambient = rng.uniform(0.1, 0.5)
    sky = kelvin_to_linear(rng.uniform(4000, 9000)) * ambient
    ground = kelvin_to_linear(rng.uniform(2500, 6500)) * ambient * rng.uniform(0.2, 0.8)
    up = _unit(rng.normal(size=3) + np.array([0.0, -1.5, 0.0]))
    luminance = float(skin.base @ _LUMINANCE)
    exposure = rng.uniform(0.8, 1.25) / (1.0 + 0.5 * ambient) * (0.25 / luminance) ** rng.uniform(0.0, 0.3)
    return Lighting(
        sky=sky.astype(np.float32),
        ground=ground.astype(np.float32),
        up=up.astype(np.float32),
        directions=directions,
        colours=colours,
        wrap=float(rng.uniform(0.1, 0.5)),
        shininess=float(rng.uniform(8.0, 40.0)),
        exposure=float(exposure),
    )


def sample_indoor_skin(rng: np.random.Generator) -> Skin:
    """An indoor-photo skin: Monk tone ~ N(4.5, 1.5) clipped to 1-10, redder and glossier than
    `sample_skin`'s (specular 0.2-0.4 where `sample_skin` stays below 0.18)."""
    tones = srgb_to_linear(MONK_SKIN_TONES_SRGB)
    tone = float(np.clip(rng.normal(3.5, 1.5), 0.0, len(tones) - 1.0))  # 0-based position on the scale
    low = int(np.floor(tone))
    high = min(low + 1, len(tones) - 1)
    base = tones[low] * (1 - (tone - low)) + tones[high] * (tone - low)
    base = base * np.exp(np.array([0.10, -0.02, -0.04]) + rng.normal(0.0, 0.04, 3))
    palm = base * np.exp(np.array([0.12, 0.05, 0.05]) + rng.normal(0.0, 0.03, 3))
    nail = base * np.exp(np.array([0.2, 0.1, 0.12]))
    return Skin(
        tone=tone + 1.0,
        base=np.clip(base, 0.0, 1.0).astype(np.float32),
        palm=np.clip(palm, 0.0, 1.0).astype(np.float32),
        nail=np.clip(nail, 0.0, 1.0).astype(np.float32),
        knuckle=np.array([0.9, 0.82, 0.82], np.float32),
        specular=float(rng.uniform(0.2, 0.4)),
    )


def sample_indoor_lighting(rng: np.random.Generator, tint: tuple[float, float] = (0.0, 0.0)) -> Lighting:
    """Indoor lighting (camera frame, y down): a warm 2700-4500 K key light from above, tinted
    green or magenta by exp(+-uniform(tint)) on G (fluorescent tubes, cheap LEDs), sometimes a cool
    window light from a side, a dark ambient, a hard terminator (little wrap)."""
    directions = np.zeros((MAX_LIGHTS, 3), np.float32)
    colours = np.zeros((MAX_LIGHTS, 3), np.float32)
    directions[0] = _unit(np.array([rng.uniform(-0.5, 0.5), rng.uniform(-1.0, -0.5), rng.uniform(-0.7, 0.1)]))
    green = np.exp(rng.choice([-1.0, 1.0]) * rng.uniform(*tint)) if tint[1] > 0 else 1.0
    colours[0] = kelvin_to_linear(rng.uniform(2700, 4500)) * np.array([1.0, green, 1.0])
    if rng.uniform() < 0.4:
        side = rng.choice([-1.0, 1.0])
        directions[1] = _unit(np.array([side, rng.uniform(-0.3, 0.3), rng.uniform(-0.6, 0.3)]))
        colours[1] = kelvin_to_linear(rng.uniform(5500, 7500)) * rng.uniform(0.3, 0.9)
    ambient = rng.uniform(0.05, 0.25)
    return Lighting(
        sky=(kelvin_to_linear(rng.uniform(3000, 6000)) * ambient).astype(np.float32),
        ground=(kelvin_to_linear(rng.uniform(2700, 4000)) * ambient * rng.uniform(0.2, 0.6)).astype(np.float32),
        up=_unit(rng.normal(size=3) * 0.3 + np.array([0.0, -1.0, 0.0])).astype(np.float32),
        directions=directions,
        colours=colours.astype(np.float32),
        wrap=float(rng.uniform(0.0, 0.2)),
        shininess=float(rng.uniform(10.0, 60.0)),
        exposure=float(rng.uniform(0.8, 1.3) / (1.0 + 0.5 * ambient)),
    )


def environment_lighting(lighting: Lighting, background: np.ndarray, fraction: float) -> Lighting:
    """The lighting with `fraction` of its ambient recoloured by the scene: the sky term takes
    the colour of the background's upper half, the ground term of its lower half (same brightness).

    Args:
      lighting: the lights.
      background: S x S x 3 linear RGB of what is behind the hand.
      fraction: in [0, 1]; 0 returns `lighting`.
    """
    if fraction <= 0:
        return lighting
    half = background.shape[0] // 2

    def recolour(ambient: np.ndarray, region: np.ndarray) -> np.ndarray:
        colour = region.reshape(-1, 3).mean(axis=0) + 1e-4
        scene = colour / (colour @ _LUMINANCE) * (ambient @ _LUMINANCE)
        return ((1.0 - fraction) * ambient + fraction * scene).astype(np.float32)

    return dataclasses.replace(
        lighting, sky=recolour(lighting.sky, background[:half]), ground=recolour(lighting.ground, background[half:])
    )


def skin_detail(rng: np.random.Generator, size: int) -> np.ndarray:
    """S x S float32 albedo multiplier of fine skin structure around 1: pores (fine noise) and
    a random number of freckles and moles (small dark spots), in crop pixels."""
    unit = size / 256.0
    pores = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 0.8 * unit)
    detail = 1.0 + rng.uniform(0.02, 0.08) * pores / max(float(pores.std()), 1e-6)
    spots = np.zeros((size, size), np.float32)
    count = int(rng.poisson(rng.uniform(0, 40) * (size / 256.0) ** 2))
    centres = rng.uniform(0, size, (count, 2)).astype(np.int32)
    spots[centres[:, 1], centres[:, 0]] = rng.uniform(0.5, 1.0, count)
    spots = cv2.GaussianBlur(spots, (0, 0), rng.uniform(0.6, 1.5) * unit)
    if count:
        spots *= rng.uniform(0.15, 0.4) / max(float(spots.max()), 1e-6)
    return np.clip(detail * (1.0 - spots), 0.3, 1.5).astype(np.float32)


def photo_texture(photo: np.ndarray, contrast: float, unit: float) -> np.ndarray:
    """S x S float32 albedo multiplier around 1 made from a photograph's fine structure: its
    luminance high-passed (minus a Gaussian blur of 2 px at 256 px), normalised, times `contrast`
    (real skin's creases, hair and pores have a photograph's statistics, not a noise field's).

    Args:
      photo: S x S x 3 uint8 RGB.
      contrast: standard deviation of the multiplier.
      unit: S / 256.
    """
    grey = photo.astype(np.float32).mean(axis=-1)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), 2.0 * unit)
    return np.clip(1.0 + contrast * detail / max(float(detail.std()), 1e-6), 0.3, 1.7).astype(np.float32)


def cast_shadow(rng: np.random.Generator, size: int) -> np.ndarray:
    """S x S float32 shadow in [0, 1] (1 = fully shadowed) cast over the whole picture by
    something between the key light and the scene: window blinds (soft stripes), foliage
    (blobs) or one straight edge, with a penumbra of 0.5-4 px at 256 px."""
    unit = size / 256.0
    rows, columns = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    angle = rng.uniform(0, np.pi)
    along = columns * np.cos(angle) + rows * np.sin(angle)
    kind = int(rng.integers(3))
    if kind == 0:
        period = rng.uniform(0.08, 0.3)
        shadow = ((along / period) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    elif kind == 1:
        cells = int(rng.integers(3, 9))
        field = cv2.resize(
            rng.uniform(0, 1, (cells, cells)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
        )
        shadow = (field > rng.uniform(0.4, 0.6)).astype(np.float32)
    else:
        shadow = (along > rng.uniform(0.3, 1.0) * (np.cos(angle) + np.sin(angle))).astype(np.float32)
    return cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.5, 4.0) * unit)


def shade(
    normals: np.ndarray,
    view: np.ndarray,
    albedo: np.ndarray,
    specular: np.ndarray,
    occlusion: np.ndarray,
    lighting: Lighting,
) -> np.ndarray:
    """Radiance at surface points: hemispherical ambient x occlusion, wrapped Lambert, Blinn-Phong.

    Args:
      normals: N x 3 unit outward normals (camera frame).
      view: N x 3 unit vectors from the surface towards the camera.
      albedo: N x 3 linear RGB.
      specular: N specular strengths.
      occlusion: N ambient visibility in [0, 1] (1 = open).
      lighting: the lights.

    Returns:
      N x 3 float32 linear RGB, exposure applied (not clipped).
    """
    up_facing = 0.5 + 0.5 * (normals @ lighting.up)  # N
    ambient = lighting.ground + up_facing[:, None] * (lighting.sky - lighting.ground)  # N x 3
    cosines = normals @ lighting.directions.T  # N x L
    diffuse = np.maximum((cosines + lighting.wrap) / (1.0 + lighting.wrap), 0.0)  # N x L
    # Direct light is half-occluded where ambient is fully occluded (folds, gaps).
    direct_visibility = 0.5 + 0.5 * occlusion
    halfway = view[:, None, :] + lighting.directions[None, :, :]  # N x L x 3
    halfway /= np.maximum(np.linalg.norm(halfway, axis=-1, keepdims=True), 1e-6)
    highlight = np.maximum(np.einsum("nc,nlc->nl", normals, halfway), 0.0) ** lighting.shininess
    highlight *= cosines > 0
    radiance = albedo * (ambient * occlusion[:, None] + direct_visibility[:, None] * (diffuse @ lighting.colours))
    radiance += (specular[:, None] * direct_visibility[:, None]) * (highlight @ lighting.colours)
    return (radiance * lighting.exposure).astype(np.float32)


def occluder_vertices(template: HandTemplate, count: int = 192) -> np.ndarray:
    """M indices of rest vertices spread over the mesh (farthest-point sampling from vertex 0)."""
    vertices = template.vertices.astype(np.float64)
    count = min(count, len(vertices))
    chosen = np.zeros(count, np.int64)
    distance = np.linalg.norm(vertices - vertices[0], axis=1)
    for k in range(1, count):
        chosen[k] = int(np.argmax(distance))
        distance = np.minimum(distance, np.linalg.norm(vertices - vertices[chosen[k]], axis=1))
    return chosen


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """B total surface areas of meshes B x V x 3 (faces F x 3), in the unit of the vertices squared."""
    corners = vertices[:, faces]  # B x F x 3 x 3
    cross = np.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
    return 0.5 * np.linalg.norm(cross, axis=-1).sum(axis=-1)


def ambient_occlusion(
    vertices: np.ndarray, normals: np.ndarray, occluders: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """Per-vertex ambient visibility from disk occluders (see the module docstring).

    With d = x_j - x_i, n_i . d, -n_j . d and |d|^2 are each a matrix product minus a per-row
    or per-column term, so the B x V x M pair terms cost three small matmuls and a few
    elementwise passes (the points are centred first, for float32 precision).

    Args:
      vertices: B x V x 3 positions.
      normals: B x V x 3 unit outward vertex normals.
      occluders: M vertex indices (`occluder_vertices`); each stands for area / M of the mesh.
      faces: F x 3 triangles (for the surface area).

    Returns:
      B x V float32 visibility in [0, 1]: 1 - clipped occlusion.
    """
    vertices = np.asarray(vertices, np.float32)
    normals = np.asarray(normals, np.float32)
    area = (surface_area(vertices, faces) / len(occluders)).astype(np.float32)[:, None, None]  # B x 1 x 1
    points = vertices - vertices.mean(axis=1, keepdims=True)
    emitters, emitter_normals = points[:, occluders], normals[:, occluders]  # B x M x 3
    transpose = (0, 2, 1)
    # n_i . d = n_i . x_j - n_i . x_i ;  -n_j . d = n_j . x_i - n_j . x_j
    receiver = normals @ emitters.transpose(transpose) - np.sum(normals * points, axis=-1)[..., None]
    emitter = points @ emitter_normals.transpose(transpose) - np.sum(emitter_normals * emitters, axis=-1)[:, None]
    squared = (
        np.sum(points**2, axis=-1)[..., None]
        + np.sum(emitters**2, axis=-1)[:, None]
        - 2.0 * (points @ emitters.transpose(transpose))
    )  # B x V x M
    squared = np.maximum(squared, 1e-6 * area)
    # cos_i cos_j / (pi r^2 / A + 1), cos = (n . d) / r
    np.maximum(receiver, 0.0, out=receiver)
    np.maximum(emitter, 0.0, out=emitter)
    receiver *= emitter
    receiver /= squared * (np.pi / area * squared + 1.0)
    occlusion = receiver.sum(axis=-1)
    return (1.0 - np.clip(occlusion, 0.0, 1.0)).astype(np.float32)
