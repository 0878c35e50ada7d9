"""The hand template: a closed, skinned right-hand mesh and its 21 keypoints.

Shape shorthand: V mesh vertices (1159), F triangles (2314), R rig joints (25), J keypoints (21).

The asset `hand_template.npz` is made from the WebXR generic hand (MIT, see
`LICENSE-generic-hand.md`) by `convert_webxr_hand.py`. Coordinates are metres, right hand,
in the model frame of the glTF file (fingers point to -y, palm faces -x... as authored).
"""

from __future__ import annotations

import dataclasses
import functools
import zipfile
from pathlib import Path

import numpy as np

TEMPLATE_VERSION = "webxr-generic-hand-1.0.20/v1"
DEFAULT_PATH = Path(__file__).with_name("hand_template.npz")

RIG_JOINT_NAMES = (
    "wrist",
    "thumb-metacarpal",
    "thumb-phalanx-proximal",
    "thumb-phalanx-distal",
    "thumb-tip",
    "index-finger-metacarpal",
    "index-finger-phalanx-proximal",
    "index-finger-phalanx-intermediate",
    "index-finger-phalanx-distal",
    "index-finger-tip",
    "middle-finger-metacarpal",
    "middle-finger-phalanx-proximal",
    "middle-finger-phalanx-intermediate",
    "middle-finger-phalanx-distal",
    "middle-finger-tip",
    "ring-finger-metacarpal",
    "ring-finger-phalanx-proximal",
    "ring-finger-phalanx-intermediate",
    "ring-finger-phalanx-distal",
    "ring-finger-tip",
    "pinky-finger-metacarpal",
    "pinky-finger-phalanx-proximal",
    "pinky-finger-phalanx-intermediate",
    "pinky-finger-phalanx-distal",
    "pinky-finger-tip",
)

# The paper's 21 keypoints: 0 wrist; 1-4 thumb CMC, MCP, IP, tip; then index, middle, ring and
# little finger, each MCP, PIP, DIP, tip. Each is the rig joint at the same anatomical place.
KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    "index_mcp",
    "index_pip",
    "index_dip",
    "index_tip",
    "middle_mcp",
    "middle_pip",
    "middle_dip",
    "middle_tip",
    "ring_mcp",
    "ring_pip",
    "ring_dip",
    "ring_tip",
    "little_mcp",
    "little_pip",
    "little_dip",
    "little_tip",
)
KEYPOINT_RIG_JOINTS = ("wrist",) + tuple(
    name for name in RIG_JOINT_NAMES[1:] if not (name.endswith("metacarpal") and not name.startswith("thumb"))
)
ROOT_KEYPOINT = 0
# Hand scale s of the paper: length of the middle finger's MCP-PIP bone.
SCALE_BONE = (9, 10)
# Parent of each keypoint in the kinematic tree (-1 for the root): for drawing skeletons.
KEYPOINT_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


def rig_joint_parents() -> list[int]:
    """Parent rig joint of each of the 25 rig joints (-1 for the wrist), from the WebXR names."""
    parents = []
    for i, name in enumerate(RIG_JOINT_NAMES):
        if name == "wrist":
            parents.append(-1)
        elif name.endswith("metacarpal"):
            parents.append(0)
        else:
            parents.append(i - 1)
    return parents


@dataclasses.dataclass(frozen=True, eq=False)
class HandTemplate:
    """A skinned hand mesh in its rest pose.

    Attributes:
      vertices: V x 3 float32 rest positions, metres.
      faces: F x 3 int32 triangles, counter-clockwise seen from outside.
      skin_weights: V x R float32 linear-blend-skinning weights, rows sum to one.
      joint_names: R rig joint names (WebXR hand joints).
      joint_parents: R int32 parent rig joint, -1 for the root.
      rest_transforms: R x 4 x 4 float32 rest (bind) pose of each joint in the model frame.
      keypoint_regressor: J x R float32; keypoints = keypoint_regressor @ joint positions.
      is_left: whether this is the mirrored (left) hand.
    """

    vertices: np.ndarray
    faces: np.ndarray
    skin_weights: np.ndarray
    joint_names: tuple[str, ...]
    joint_parents: np.ndarray
    rest_transforms: np.ndarray
    keypoint_regressor: np.ndarray
    is_left: bool = False

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def joint_positions(self) -> np.ndarray:
        """R x 3 rest positions of the rig joints."""
        return self.rest_transforms[:, :3, 3]

    @property
    def keypoints(self) -> np.ndarray:
        """J x 3 rest positions of the 21 keypoints (paper order)."""
        return self.keypoint_regressor @ self.joint_positions

    @functools.cached_property
    def edges(self) -> np.ndarray:
        """E x 2 int32 unique undirected mesh edges (i < j), sorted."""
        pairs = np.concatenate([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]])
        pairs = np.sort(pairs, axis=1)
        return np.unique(pairs, axis=0).astype(np.int32)

    def mirrored(self) -> HandTemplate:
        """The other hand: x -> -x on vertices and joint frames, faces re-wound to stay outward."""
        flip = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)
        # Conjugating by the reflection keeps each joint frame a proper rotation.
        transforms = flip @ self.rest_transforms @ flip
        return dataclasses.replace(
            self,
            vertices=self.vertices * np.array([-1.0, 1.0, 1.0], np.float32),
            faces=self.faces[:, ::-1].copy(),
            rest_transforms=transforms.astype(np.float32),
            is_left=not self.is_left,
        )


_EXPECTED = {
    "vertices": (np.floating, ("V", 3)),
    "faces": (np.integer, ("F", 3)),
    "skin_weights": (np.floating, ("V", "R")),
    "joint_names": (np.str_, ("R",)),
    "joint_parents": (np.integer, ("R",)),
    "rest_transforms": (np.floating, ("R", 4, 4)),
    "keypoint_regressor": (np.floating, (21, "R")),
}


class TemplateError(ValueError):
    """The hand template file is missing, corrupt or of another version."""


def _check_shapes(path: Path, arrays: dict[str, np.ndarray]) -> None:
    sizes: dict[str, int] = {}
    for key, (kind, shape) in _EXPECTED.items():
        if key not in arrays:
            raise TemplateError(f"{path}: missing array {key!r}; expected keys {sorted(_EXPECTED)}")
        value = arrays[key]
        if not np.issubdtype(value.dtype, kind) or value.ndim != len(shape):
            raise TemplateError(
                f"{path}: {key} has dtype {value.dtype} and shape {value.shape}; expected "
                f"{kind.__name__} with shape {shape}"
            )
        for dim, want in zip(value.shape, shape):
            if isinstance(want, str):
                want = sizes.setdefault(want, dim)
            if dim != want:
                raise TemplateError(f"{path}: {key} has shape {value.shape}; expected {shape} with {sizes}")
    faces = arrays["faces"]
    if faces.min() < 0 or faces.max() >= sizes["V"]:
        raise TemplateError(f"{path}: face indices span [{faces.min()}, {faces.max()}]; expected [0, {sizes['V']})")
    if not np.all(np.isfinite(arrays["vertices"])):
        raise TemplateError(f"{path}: vertices contain NaN or inf")


def load_template(path: str | Path = DEFAULT_PATH, *, left: bool = False) -> HandTemplate:
    """Loads the hand template (right hand, or its mirror image with `left=True`).

    Raises:
      TemplateError: the file is missing, not a valid npz, of another version, or its arrays
        have inconsistent shapes.
    """
    template = _load(str(path))
    return template.mirrored() if left else template


@functools.lru_cache(maxsize=4)
def _load(path: str) -> HandTemplate:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise TemplateError(f"hand template not found at {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise TemplateError(f"{path}: not a readable .npz hand template ({error})") from None
    version = str(arrays.get("version", "<none>"))
    if version != TEMPLATE_VERSION:
        raise TemplateError(f"{path}: template version {version!r}; expected {TEMPLATE_VERSION!r}")
    _check_shapes(Path(path), arrays)
    for value in arrays.values():
        value.setflags(write=False)
    return HandTemplate(
        vertices=arrays["vertices"].astype(np.float32),
        faces=arrays["faces"].astype(np.int32),
        skin_weights=arrays["skin_weights"].astype(np.float32),
        joint_names=tuple(str(n) for n in arrays["joint_names"]),
        joint_parents=arrays["joint_parents"].astype(np.int32),
        rest_transforms=arrays["rest_transforms"].astype(np.float32),
        keypoint_regressor=arrays["keypoint_regressor"].astype(np.float32),
    )
