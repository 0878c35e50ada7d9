"""Renderer: batches of sample parameters -> shard samples (images, masks, depth and labels).

Shape shorthand: B render batch, V mesh vertices (1159), A forearm and sleeve vertices, J
keypoints (21), P pose parameters (23), S shape parameters (14), N image size.

`HandRenderer.render` turns a batch of `SampleParams` (`handshape_tf.data.sample_params`: the
hand, shape, pose, camera and crop of each sample) into shard samples (see
`handshape_tf.data.shards`). It poses the hands by forward kinematics + linear blend skinning
(`geometry.skinning.pose_hand`), places them with `sample_params.camera_transform` and renders
each crop directly at N x N with `sample_params.crop_intrinsics`:

1. Image: a forearm leaves the picture from the template's forearm stub (skin, half the time
   in a sleeve; not part of the labels). One rasterization per batch (the project's
   `rendering.rasterize`, for visibility) gives the covered pixels, at which depth, normals,
   albedo, specular strength and ambient occlusion (`appearance`) are interpolated with
   perspective-correct barycentrics (`interpolate_covered`) and shaded. `mask` is the pixels
   whose centre the hand covers, exactly `depth > 0` (where the forearm hides the hand, it is
   not hand). Alpha is the coverage blurred by a 3 x 3 tent (3/4 and 1/4 on either side of a
   straight edge, about what a box filter over the pixel gives), with the colour extended by
   one pixel under the soft edge: the hand + forearm composited over a background
   (`backgrounds`), then camera effects (a crop that spans fewer than N full-frame pixels
   is resampled through that size, as a real one would be enlarged; sometimes blur, sometimes
   sensor noise), make `image`; the hand alone with the hand's alpha makes `image_rgba`.
2. Depth sensor (RGB-D domains only, `Domain.sensor`): the exact depth of hand, forearm and
   sleeve at the covered pixels, a tilted plane behind them elsewhere, turned into what a
   RealSense-like sensor measures (`depth_sensor`: noise growing with distance, holes at
   silhouettes, grazing angles and in the projector's shadow) makes `sensor_depth`. It draws
   from its own random stream, so a domain's images do not depend on whether it has a sensor.

Labels: joints_uv (crop pixels), joints_xyz and vertices_xyz (camera mm), the crop
intrinsics, root depth, scale (middle MCP-PIP, mm), is_left, pose (P angles, degrees), shape
(S factors) and camera: the rigid 4 x 4 transform from the posed hand's model frame to the
camera frame, both in metres, so vertices_xyz = 1000 (camera[:3, :3] v + camera[:3, 3]) for
the vertices v posed from pose and shape with `pose_hand` (no global rotation or translation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

from handshape_tf.assets.template import ROOT_KEYPOINT, SCALE_BONE, HandTemplate, load_template
from handshape_tf.data import appearance, depth_sensor
from handshape_tf.data.backgrounds import BackgroundSource
from handshape_tf.data.camera_effects import apply_camera, to_uint8
from handshape_tf.data.domains import PHOTO, Domain
from handshape_tf.data.hand_poses import pose_rotations
from handshape_tf.data.hand_shapes import apply_shape
from handshape_tf.data.sample_params import SampleParams, camera_transform, crop_intrinsics, project

RENDER_BATCH = 8
MIN_IMAGE_SIZE = 32
# Occluders: size as a fraction of the hand's bounding box, and how far from a hand pixel.
_OCCLUDER_SIZE = (0.15, 0.5)
_SENSOR_STREAM = 0x5EA1  # keys the depth sensor's random stream of a sample (with its appearance seed)
# A 3 x 3 tent filter: the anti-aliased alpha of the pixel-centre mask.
_ALPHA_KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]).astype(np.float32) / 16.0


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raises ValueError unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} is {value!r}; expected an int >= {minimum}")


# Forearm: the template ends in a short forearm stub closed by a flat, slanted cap. The image
# extends it out of the picture: rings of the stub's last cross-section (the cap's outline),
# scaled as the forearm widens towards the elbow (wrist ~55 x 40 mm, mid-forearm ~70 x 55 mm
# in adults), joined to the stub's own last ring so the skin runs on without a seam. Rings:
# (distance from the wrist joint along the forearm, mm at shape scale 1; cross-section scale).
_ARM_RINGS = ((40.0, 1.08), (120.0, 1.25), (260.0, 1.3))
_CAP_MIN_DEPTH_MM = 4.0  # cap faces lie beyond this distance past the wrist joint ...
_CAP_MIN_COSINE = 0.5  # ... and face along the forearm
_SLEEVE_START_MM = (30.0, 160.0)
_SLEEVE_WIDTH = (1.15, 1.6)  # sleeve radius / forearm radius
_SLEEVE_RINGS = 4
_SLEEVE_POINTS = 20
_ARM_NEAREST = 0.15  # the forearm is shortened to stay beyond this fraction of the hand distance


def stub_cap(template: HandTemplate) -> tuple[np.ndarray, np.ndarray]:
    """The forearm stub's end: its cap faces and their outline.

    Returns:
      (F bool: the cap's faces, beyond `_CAP_MIN_DEPTH_MM` past the wrist joint and facing
      along the forearm; C vertex indices of the cap's outline, ordered counter-clockwise
      about the forearm axis, i.e. from the wrist frame's x axis towards its y axis).

    Raises:
      ValueError: the template has no such cap, or its outline is not a single loop.
    """
    wrist = template.rest_transforms[0].astype(np.float64)
    local = (template.vertices - wrist[:3, 3]) @ wrist[:3, :3]  # V x 3 in the wrist frame
    corners = local[template.faces]  # F x 3 x 3
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cap = (corners[..., 2].min(axis=1) > _CAP_MIN_DEPTH_MM / 1000.0) & (normals[:, 2] > _CAP_MIN_COSINE)
    edges = np.sort(template.faces[cap][:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    outline = np.unique(unique[counts == 1])
    if not cap.any() or len(outline) != int(np.sum(counts == 1)):
        raise ValueError(f"the template's forearm stub has no single-loop end cap ({int(cap.sum())} cap faces)")
    offsets = local[outline, :2] - local[outline, :2].mean(axis=0)
    return cap, outline[np.argsort(np.arctan2(offsets[:, 1], offsets[:, 0]))]


def _band_faces(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Triangles joining two rings of P vertex indices; outward when the rings run counter-
    clockwise about the axis they advance along (first to second)."""
    a, b = first, np.roll(first, -1)
    c, d = second, np.roll(second, -1)
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def _fan_faces(ring: np.ndarray, centre: int) -> np.ndarray:
    """Triangles closing a counter-clockwise ring with a centre vertex, facing along the axis."""
    return np.stack([ring, np.roll(ring, -1), np.full(len(ring), centre)], 1)


def _elliptic_rings(origin, axes, semi_axes, positions, radii, points) -> np.ndarray:
    """K * points + 1 x 3 vertices of elliptical rings and the last ring's centre.

    Args:
      origin: 3 section centre at position 0.  axes: 3 x 3 rows x, y (section), z (axis).
      semi_axes: 2 section semi-axes along x and y.  positions: K distances along z.
      radii: K x points radius factors.  points: vertices per ring.
    """
    angle = 2 * np.pi * np.arange(points) / points
    x = radii * semi_axes[0] * np.cos(angle)  # K x points
    y = radii * semi_axes[1] * np.sin(angle)
    z = np.broadcast_to(np.asarray(positions, np.float64)[:, None], x.shape)
    rings = origin + x[..., None] * axes[0] + y[..., None] * axes[1] + z[..., None] * axes[2]
    return np.concatenate([rings.reshape(-1, 3), [origin + positions[-1] * axes[2]]])


class Scene(NamedTuple):
    """The geometry of a batch of samples, before rasterization (A forearm and sleeve vertices).

    Attributes:
      model: B x (V + A) x 3 float64 hand, forearm and sleeve vertices, model frame, metres.
      vertices: B x (V + A) x 3 float32 the same in the camera frame, mm.
      normals: B x (V + A) x 3 float32 outward unit vertex normals, camera frame.
      keypoints: B x J x 3 float64 camera frame, mm.
      cameras: B x 4 x 4 camera-from-model transforms (metres).
      intrinsics: B x 4 float64 crop intrinsics.
      rngs: B random generators of the appearance (skin noise, lights, background, camera).
      skins: B skins.
    """

    model: np.ndarray
    vertices: np.ndarray
    normals: np.ndarray
    keypoints: np.ndarray
    cameras: np.ndarray
    intrinsics: np.ndarray
    rngs: list
    skins: list


class HandRenderer:
    """Renders batches of `SampleParams` into shard samples (module docstring).

    The image also shows a forearm (skin coloured, half the time in a sleeve) leaving the
    picture; it is not part of the labels, and where it hides the hand the hand is not in
    `mask` / `depth` / `image_rgba`.

    Args:
      image_size: N, the square output size in pixels.
      backgrounds: where backgrounds come from (default: procedural `BackgroundSource()`).
      domain: how the samples look (`handshape_tf.data.domains`).

    Attributes:
      image_size, backgrounds, domain: as given.
      templates: {False: right, True: left} hand templates.
    """

    def __init__(self, image_size: int = 256, backgrounds: BackgroundSource | None = None, domain: Domain = PHOTO):
        import tensorflow as tf

        from handshape_tf.geometry.skinning import pose_hand
        from handshape_tf.rendering import rasterize, vertex_normals

        check_positive_int("image_size", image_size, MIN_IMAGE_SIZE)
        self.image_size = int(image_size)
        self.backgrounds = backgrounds if backgrounds is not None else BackgroundSource()
        self.domain = domain
        right = load_template()
        self.templates = {False: right, True: right.mirrored()}
        hand = right.num_vertices
        cap, outline = stub_cap(right)
        self._outline = outline
        # Extra vertices after the hand's: forearm rings + end centre, then sleeve rings + end centre.
        ring = len(outline)
        arm = [hand + k * ring + np.arange(ring) for k in range(len(_ARM_RINGS))]
        arm_centre = hand + len(_ARM_RINGS) * ring
        sleeve_start = arm_centre + 1
        sleeve = [sleeve_start + k * _SLEEVE_POINTS + np.arange(_SLEEVE_POINTS) for k in range(_SLEEVE_RINGS)]
        self._num_hand_vertices = hand
        self._num_hand_faces = len(right.faces)
        self._sleeve_start = sleeve_start
        extra_faces = [_band_faces(a, b) for a, b in zip([outline] + arm[:-1], arm)]
        extra_faces += [_fan_faces(arm[-1], arm_centre)]
        extra_faces += [_band_faces(a, b) for a, b in zip(sleeve[:-1], sleeve[1:])]
        extra_faces += [_fan_faces(sleeve[-1], sleeve[-1][-1] + 1)]
        faces = np.concatenate([right.faces] + extra_faces).astype(np.int32)
        # The stub's cap ends up inside the forearm; leaving it out of the normals keeps the
        # outline's normals those of a continuing tube.
        shading_faces = faces[np.concatenate([~cap, np.ones(len(faces) - len(cap), bool)])]
        self._faces = faces
        regions = appearance.skin_regions(right)  # vertex order is shared by both hands
        arm_palmar = np.append(np.tile(regions.palmar[outline], len(_ARM_RINGS)), regions.palmar[outline].mean())
        zeros = np.zeros(hand + len(arm_palmar), np.float32)
        self._regions = appearance.SkinRegions(
            palmar=np.concatenate([regions.palmar, arm_palmar]).astype(np.float32),
            nail=np.concatenate([regions.nail, zeros[hand:]]),
            knuckle=np.concatenate([regions.knuckle, zeros[hand:]]),
        )  # hand and forearm
        self._occluders = appearance.occluder_vertices(right)
        size = self.image_size

        @tf.function(reduce_retracing=True)
        def pose(rest_vertices, rest_transforms, rotations):
            posed = pose_hand(right, rotations, rest_vertices=rest_vertices, rest_transforms=rest_transforms)
            return posed.vertices, posed.keypoints, posed.joints

        @tf.function(reduce_retracing=True)
        def normals(vertices):
            return vertex_normals(vertices, shading_faces)

        @tf.function(reduce_retracing=True)
        def render(vertices, intrinsics):
            return rasterize(vertices, faces, intrinsics, (size, size)).triangle_ids

        self._pose, self._normals, self._render = pose, normals, render

    def _forearm(
        self,
        params: SampleParams,
        rest_vertices: np.ndarray,
        rest_transforms: np.ndarray,
        camera: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Forearm and sleeve vertices (A x 3, model frame, metres) of one posed hand.

        The wrist has no pose parameter, so its posed frame is its (shaped) rest frame: +z
        along the forearm, +y out of the back of the hand, and the stub is where the rest
        mesh has it. The forearm is shortened if it would come nearer the camera than
        `_ARM_NEAREST` x the hand's distance; without a sleeve the sleeve's vertices are hidden
        inside the forearm.
        """
        wrist = rest_transforms[0].astype(np.float64)
        axes = wrist[:3, :3].T  # rows: the wrist's x, y, z axes
        scale = float(params.shape[0])
        outline = (rest_vertices[self._outline] - wrist[:3, 3]) @ axes.T  # C x 3 in the wrist frame
        centre = outline[:, :2].mean(axis=0)
        offsets = outline[:, :2] - centre  # C x 2
        positions = np.array([r[0] for r in _ARM_RINGS]) / 1000.0 * scale
        widths = np.array([r[1] for r in _ARM_RINGS])
        # Keep the far end in front of the camera: the nearest point of the widest ring.
        direction = camera[:3, :3] @ axes[2]
        origin = wrist[:3, 3] + centre @ axes[:2]
        start = camera[:3, :3] @ origin + camera[:3, 3]
        reach = widths.max() * _SLEEVE_WIDTH[1] * np.abs(offsets).max()
        if direction[2] < 0:
            room = start[2] - _ARM_NEAREST * params.distance_mm / 1000.0 - reach
            limit = max(room / -direction[2], 2.0 * outline[:, 2].max())
            positions = np.minimum(positions, limit * positions / positions[-1])
        section = centre + widths[:, None, None] * offsets  # K x C x 2
        rings = (
            wrist[:3, 3] + section[..., :1] * axes[0] + section[..., 1:] * axes[1] + positions[:, None, None] * axes[2]
        )
        arm = np.concatenate([rings.reshape(-1, 3), [origin + positions[-1] * axes[2]]])
        semi = np.abs(offsets).max(axis=0)
        # Rings run counter-clockwise about the forearm on a right hand and, mirrored, clockwise
        # on a left one, like the outline (so one face winding serves both, see `scene`).
        ring_axes = axes * np.array([[-1.0], [1.0], [1.0]]) if params.is_left else axes
        if rng.uniform() < self.domain.sleeve_probability:
            begin = min(rng.uniform(*_SLEEVE_START_MM) / 1000.0 * scale, 0.8 * positions[-1])
            along = np.linspace(begin, positions[-1], _SLEEVE_RINGS)
            width = rng.uniform(*_SLEEVE_WIDTH) * np.interp(along, positions, widths)
            folds = 1.0 + rng.uniform(0.0, 0.06) * rng.standard_normal((_SLEEVE_RINGS, _SLEEVE_POINTS))
            sleeve = _elliptic_rings(origin, ring_axes, semi, along, width[:, None] * folds, _SLEEVE_POINTS)
        else:
            along = np.linspace(positions[0], positions[-1], _SLEEVE_RINGS)
            sleeve = _elliptic_rings(origin, ring_axes, semi, along, np.full((_SLEEVE_RINGS, 1), 0.5), _SLEEVE_POINTS)
        return np.concatenate([arm, sleeve])

    def scene(self, params: Sequence[SampleParams]) -> Scene:
        """Poses, frames and lights up the geometry of a batch (everything but the pixels).

        Args:
          params: B sample parameters.

        Returns:
          Scene (see there).
        """
        size = self.image_size
        hand = self._num_hand_vertices
        rest = [apply_shape(self.templates[p.is_left], p.shape) for p in params]
        rotations = np.stack([pose_rotations(p.angles, self.templates[p.is_left]) for p in params])  # B x R x 3 x 3
        vertices, keypoints, joints = (
            t.numpy().astype(np.float64)
            for t in self._pose(np.stack([r[0] for r in rest]), np.stack([r[1] for r in rest]), rotations)
        )  # model frame, metres
        cameras = np.stack([camera_transform(p, j, v) for p, j, v in zip(params, joints, vertices)])  # B x 4 x 4
        rngs = [np.random.default_rng(p.appearance_seed) for p in params]
        sample_skin = appearance.sample_skin if self.domain.skin == "monk" else appearance.sample_indoor_skin
        skins = [sample_skin(rng) for rng in rngs]
        arms = np.stack([self._forearm(p, r[0], r[1], c, g) for p, r, c, g in zip(params, rest, cameras, rngs)])
        model = np.concatenate([vertices, arms], axis=1)  # B x (V + A) x 3

        def to_camera_mm(points):
            return 1000.0 * (np.einsum("bij,bvj->bvi", cameras[:, :3, :3], points) + cameras[:, None, :3, 3])

        camera_mm = to_camera_mm(model)
        intrinsics = np.stack([crop_intrinsics(p, v[:hand], size) for p, v in zip(params, camera_mm)])  # B x 4
        camera_mm = camera_mm.astype(np.float32)
        # The faces are the right hand's; a mirrored (left) mesh with them turns inside out,
        # which only flips the sign of the area-weighted normals.
        outward = np.where([p.is_left for p in params], -1.0, 1.0).astype(np.float32)[:, None, None]
        normals = self._normals(camera_mm).numpy() * outward
        return Scene(
            model=model,
            vertices=camera_mm,
            normals=normals,
            keypoints=to_camera_mm(keypoints),
            cameras=cameras,
            intrinsics=intrinsics,
            rngs=rngs,
            skins=skins,
        )

    def render(self, params: Sequence[SampleParams]) -> list[dict[str, Any]]:
        """Shard samples (`handshape_tf.data.shards` schema) for a batch of parameters.

        Args:
          params: B sample parameters (render in batches of about `RENDER_BATCH`).

        Returns:
          B dicts with image, image_rgba, mask, depth, joints_uv, joints_xyz, vertices_xyz,
          intrinsics, root_depth, scale, is_left, pose, shape, camera, sensor_depth with a
          domain sensor (and gesture, tone: not stored in shards).
        """
        if not params:
            return []
        size = self.image_size
        hand = self._num_hand_vertices
        scene = self.scene(params)
        everything, everything_mm, normals, intrinsics = scene.model, scene.vertices, scene.normals, scene.intrinsics
        rngs, skins, keypoints_mm, cameras = scene.rngs, scene.skins, scene.keypoints, scene.cameras
        occlusion = np.ones(everything_mm.shape[:2], np.float32)
        occlusion[:, :hand] = appearance.ambient_occlusion(
            everything_mm[:, :hand], normals[:, :hand], self._occluders, self._faces[: self._num_hand_faces]
        )
        albedo = np.empty_like(everything_mm)
        specular = np.empty(everything_mm.shape[:2], np.float32)
        skin_end = self._sleeve_start
        for b, (rng, skin) in enumerate(zip(rngs, skins)):
            albedo[b, :skin_end], specular[b, :skin_end] = appearance.skin_albedo(
                rng, skin, self._regions, everything[b, :skin_end]
            )
            albedo[b, skin_end:], specular[b, skin_end:] = appearance.cloth_albedo(rng, everything[b, skin_end:])
        is_skin = (np.arange(everything_mm.shape[1]) < skin_end).astype(np.float32)
        attributes = np.concatenate(
            [
                everything_mm[..., 2:],
                normals,
                albedo,
                specular[..., None],
                occlusion[..., None],
                np.broadcast_to(is_skin[None, :, None], occlusion.shape + (1,)),
            ],
            axis=-1,
        )  # B x (V + A) x 10: z, normal, albedo, specular, occlusion, skin
        triangles = self._render(everything_mm, intrinsics.astype(np.float32)).numpy()  # B x N x N
        batch, pixel_rows, pixel_columns, values = interpolate_covered(
            everything_mm, self._faces, triangles, intrinsics, attributes
        )
        bounds = np.searchsorted(batch, np.arange(len(params) + 1))

        samples = []
        for b, p in enumerate(params):
            rng = rngs[b]
            background = appearance.srgb_to_linear(self.backgrounds.sample(rng, size).astype(np.float32) / 255.0)
            lighting = self._lighting(rng, skins[b], background)
            rows, columns = pixel_rows[bounds[b] : bounds[b + 1]], pixel_columns[bounds[b] : bounds[b + 1]]
            here = values[bounds[b] : bounds[b + 1]]  # covered pixels x 10
            covered = triangles[b] >= 0
            mask = covered & (triangles[b] < self._num_hand_faces)
            depth = np.zeros((size, size), np.float32)
            depth[rows, columns] = here[:, 0]
            if rng.uniform() < self.domain.skin_detail:
                detail = appearance.skin_detail(rng, size)[rows, columns]
                here[:, 4:7] *= (1.0 + (detail - 1.0) * here[:, 9])[:, None]  # on skin, not on cloth
            if self.domain.skin_texture[1] > 0:
                photo = self.backgrounds.sample(rng, size)
                detail = appearance.photo_texture(photo, rng.uniform(*self.domain.skin_texture), size / 256.0)
                here[:, 4:7] *= (1.0 + (detail[rows, columns] - 1.0) * here[:, 9])[:, None]
            colour = np.zeros((size, size, 3), np.float32)
            colour[rows, columns] = self._shade(rows, columns, here, intrinsics[b], lighting)  # linear
            everything_colour, everything_alpha = _soft_edges(colour, covered)
            alpha = everything_alpha[..., None]
            radiance = everything_colour * alpha + background * (1.0 - alpha)
            hand_colour, hand_alpha = _soft_edges(colour, mask)  # occluders only lower the alpha
            occluded = None
            if rng.uniform() < self.domain.occluder_probability and mask.any():
                cover, cover_colour = self._occluder(rng, mask)
                radiance = cover_colour * cover[..., None] + radiance * (1.0 - cover[..., None])
                hand_alpha = hand_alpha * (1.0 - cover)
                occluded = cover >= 0.5
                mask &= ~occluded
            if self.domain.cast_shadow_probability > 0 and rng.uniform() < self.domain.cast_shadow_probability:
                darkening = rng.uniform(*self.domain.cast_shadow_strength)
                radiance = radiance * (1.0 - darkening * appearance.cast_shadow(rng, size))[..., None]
            depth[~mask] = 0.0
            source_pixels = size * p.frame_intrinsics[0] / intrinsics[b, 0]  # the crop's side in the full frame
            image = apply_camera(rng, radiance, self.domain.camera, source_pixels)
            joints_xyz = keypoints_mm[b]
            samples.append(
                {
                    "image": image,
                    "image_rgba": np.concatenate(
                        [to_uint8(appearance.linear_to_srgb(hand_colour)), to_uint8(hand_alpha[..., None])], axis=-1
                    ),
                    "mask": mask,
                    "depth": depth,
                    "joints_uv": project(joints_xyz, intrinsics[b]).astype(np.float32),
                    "joints_xyz": joints_xyz.astype(np.float32),
                    "vertices_xyz": everything_mm[b, :hand],
                    "intrinsics": intrinsics[b].astype(np.float32),
                    "root_depth": np.float32(joints_xyz[ROOT_KEYPOINT, 2]),
                    "scale": np.float32(np.linalg.norm(joints_xyz[SCALE_BONE[0]] - joints_xyz[SCALE_BONE[1]])),
                    "is_left": p.is_left,
                    "pose": np.asarray(p.angles, np.float32),
                    "shape": np.asarray(p.shape, np.float32),
                    "camera": cameras[b].astype(np.float32),
                    "gesture": p.gesture,
                    "tone": skins[b].tone,
                }
            )
            if self.domain.sensor is not None:
                samples[-1]["sensor_depth"] = self._sensor_depth(p, rows, columns, here, intrinsics[b], occluded)
        return samples

    def _sensor_depth(
        self,
        params: SampleParams,
        rows: np.ndarray,
        columns: np.ndarray,
        values: np.ndarray,
        intrinsics: np.ndarray,
        occluded: np.ndarray | None,
    ) -> np.ndarray:
        """N x N float32 depth (mm, 0 = missing) the domain's sensor measures (module docstring,
        step 2): hand, forearm and sleeve at the covered pixels (`values` as in `render`), the
        sensor's background plane elsewhere; pixels an occluder hides are missing."""
        sensor = self.domain.sensor
        rng = np.random.default_rng([params.appearance_seed, _SENSOR_STREAM])
        rays = depth_sensor.pixel_rays(self.image_size, intrinsics)
        farthest = float(values[:, 0].max()) if len(values) else None
        depth, cosines = depth_sensor.background_plane(rng, rays, farthest, sensor)
        view = rays[rows, columns]
        normals = values[:, 1:4]
        lengths = np.linalg.norm(normals, axis=1) * np.linalg.norm(view, axis=1)
        depth[rows, columns] = values[:, 0]
        cosines[rows, columns] = np.abs(np.sum(normals * view, axis=1)) / np.maximum(lengths, 1e-6)
        measured = depth_sensor.sensor_depth(depth, cosines, 0.5 * (intrinsics[0] + intrinsics[1]), rng, sensor)
        if occluded is not None:
            measured[occluded] = 0.0
        return measured

    def _lighting(self, rng: np.random.Generator, skin: appearance.Skin, background: np.ndarray) -> appearance.Lighting:
        """The domain's lights for one sample, the ambient partly coloured by its background
        (N x N x 3 linear RGB)."""
        if self.domain.lighting == "studio":
            lighting = appearance.sample_lighting(rng, skin, self.domain.extra_light_probability)
        else:
            lighting = appearance.sample_indoor_lighting(rng, self.domain.light_tint)
        return appearance.environment_lighting(lighting, background, self.domain.environment_light)

    def _occluder(self, rng: np.random.Generator, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An object in front of part of the hand: (N x N coverage in [0, 1], N x N x 3 linear colour).

        A filled ellipse, bar (a pen, a cup's handle, a strap) or polygon, 15-50% of the hand's
        bounding box in size, centred on a random hand pixel, textured with a background crop
        (or plain), shaded by a linear ramp, with anti-aliased edges."""
        size = self.image_size
        rows, columns = np.nonzero(mask)
        extent = max(rows.max() - rows.min(), columns.max() - columns.min()) + 1
        pick = int(rng.integers(len(rows)))
        centre = np.array([columns[pick], rows[pick]], np.float64) + 0.5
        radius = rng.uniform(*_OCCLUDER_SIZE) * extent / 2
        angle = rng.uniform(0, 180)
        cover = np.zeros((size, size), np.float32)
        kind = int(rng.integers(3))
        scale = 16  # cv2 sub-pixel shift: 4 bits
        if kind == 0:
            axes = (int(radius * scale), int(radius * rng.uniform(0.4, 1.0) * scale))
            cv2.ellipse(cover, tuple(int(c * scale) for c in centre), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        else:
            if kind == 1:  # a bar crossing the whole crop
                half = np.array([2.0 * size, radius * rng.uniform(0.15, 0.4)])
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            else:
                count = int(rng.integers(3, 8))
                turns = np.sort(rng.uniform(0, 2 * np.pi, count))
                corners = np.stack([np.cos(turns), np.sin(turns)], 1) * radius * rng.uniform(0.5, 1.0, (count, 1))
            rotation = np.array(
                [
                    [np.cos(np.radians(angle)), -np.sin(np.radians(angle))],
                    [np.sin(np.radians(angle)), np.cos(np.radians(angle))],
                ]
            )
            points = ((corners @ rotation.T + centre) * scale).astype(np.int32)
            cv2.fillPoly(cover, [points], 1.0, cv2.LINE_AA, 4)
        if rng.uniform() < 0.6:
            texture = self.backgrounds.sample(rng, size).astype(np.float32) / 255.0
        else:
            texture = np.broadcast_to(rng.uniform(0.05, 0.95, 3).astype(np.float32), (size, size, 3))
        ramp_direction = rng.normal(size=2)
        grid = (np.mgrid[0:size, 0:size][::-1].transpose(1, 2, 0) + 0.5 - centre) / size  # N x N x 2 (x, y)
        ramp = np.clip(1.0 + rng.uniform(0.3, 1.5) * (grid @ ramp_direction), 0.3, 1.6).astype(np.float32)
        colour = appearance.srgb_to_linear(texture) * ramp[..., None] * rng.uniform(0.4, 1.2)
        return np.clip(cover, 0.0, 1.0), colour.astype(np.float32)

    @staticmethod
    def _shade(
        rows: np.ndarray,
        columns: np.ndarray,
        values: np.ndarray,
        intrinsics: np.ndarray,
        lighting: appearance.Lighting,
    ) -> np.ndarray:
        """M x 3 linear RGB radiance of covered pixels.

        Args:
          rows, columns: M pixel indices.
          values: M x 10 interpolated z, normal, albedo, specular, occlusion, skin.
          intrinsics: 4 crop intrinsics.
          lighting: the lights.
        """
        fx, fy, cx, cy = intrinsics
        view = -np.stack([(columns + 0.5 - cx) / fx, (rows + 0.5 - cy) / fy, np.ones(len(rows))], axis=1)
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        normals = values[:, 1:4] / np.maximum(np.linalg.norm(values[:, 1:4], axis=1, keepdims=True), 1e-6)
        # Surfaces seen from behind (the inside of a sleeve) are lit as their visible side.
        normals *= np.where(np.sum(normals * view, axis=1, keepdims=True) < 0, -1.0, 1.0)
        return appearance.shade(normals, view, values[:, 4:7], values[:, 7], np.clip(values[:, 8], 0.0, 1.0), lighting)


def interpolate_covered(
    vertices: np.ndarray, faces: np.ndarray, triangle_ids: np.ndarray, intrinsics: np.ndarray, attributes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Perspective-correct interpolation of vertex attributes at the covered pixel centres.

    The ray from the camera centre through a pixel centre, direction d = ((i + 0.5 - cx) / fx,
    (j + 0.5 - cy) / fy, 1), meets triangle (P0, P1, P2) at the point whose barycentric
    coordinates are proportional to the triple products d . (P_j x P_k), (i, j, k) cyclic. The
    cross products belong to the triangle, so a pixel costs one 3 x 3 product: the same
    coordinates as `handshape_tf.rendering.rasterize`'s (the tests compare them), without
    filling whole images.

    Args:
      vertices: B x V x 3 camera-frame positions.
      faces: F x 3 triangles.
      triangle_ids: B x N x N visible triangle per pixel (-1: none), from `rasterize`.
      intrinsics: B x 4 (fx, fy, cx, cy).
      attributes: B x V x K per-vertex values.

    Returns:
      (batch M, rows M, columns M, values M x K float32) of the M covered pixels, batch-major.
    """
    num_batch, num_vertices = vertices.shape[:2]
    height, width = triangle_ids.shape[1:]
    flat = triangle_ids.reshape(-1)
    covered = np.flatnonzero(flat >= 0)
    triangles = flat[covered]
    batch, pixel = np.divmod(covered, height * width)
    rows, columns = np.divmod(pixel, width)
    corners = np.asarray(vertices, np.float64)[:, faces]  # B x F x 3 x 3
    cross = np.cross(np.roll(corners, -1, axis=2), np.roll(corners, -2, axis=2))  # B x F x 3 x 3: P_j x P_k
    cross = np.take(cross.reshape(-1, 9), batch * len(faces) + triangles, axis=0).reshape(-1, 3, 3)  # M x 3 x 3
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64).T
    ray_x = (columns + 0.5 - cx[batch]) / fx[batch]
    ray_y = (rows + 0.5 - cy[batch]) / fy[batch]
    weights = cross[:, :, 0] * ray_x[:, None] + cross[:, :, 1] * ray_y[:, None] + cross[:, :, 2]  # M x 3
    weights /= weights.sum(axis=1, keepdims=True)
    corner_ids = np.take(faces, triangles, axis=0) + (batch * num_vertices)[:, None]  # M x 3
    flat_attributes = np.asarray(attributes, np.float32).reshape(num_batch * num_vertices, -1)
    corner_values = np.take(flat_attributes, corner_ids, axis=0)  # M x 3 x K
    values = np.einsum("mi,mik->mk", weights.astype(np.float32), corner_values)
    return batch, rows, columns, values


def _soft_edges(colour: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased alpha of a pixel-centre mask and the colour under its soft edge.

    Args:
      colour: N x N x 3, valid where `mask`.
      mask: N x N bool.

    Returns:
      (N x N x 3 colour: `colour` inside the mask, the mean of the covered neighbours in the
      one-pixel band outside it, 0 elsewhere; N x N alpha, the mask blurred by a 3 x 3 tent).
    """
    coverage = mask.astype(np.float32)
    alpha = cv2.filter2D(coverage, -1, _ALPHA_KERNEL, borderType=cv2.BORDER_CONSTANT)
    inside = colour * coverage[..., None]
    spread = cv2.filter2D(inside, -1, _ALPHA_KERNEL, borderType=cv2.BORDER_CONSTANT)
    outside = ~mask & (alpha > 0)
    inside[outside] = spread[outside] / alpha[outside, None]
    return inside, alpha
