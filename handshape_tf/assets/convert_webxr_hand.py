"""Convert the WebXR generic-hand glTF model into the project's hand template asset.

The base mesh is the right hand of the WebXR input profiles (MIT licence, Copyright 2019
Amazon). It is fetched once, by hand, from the npm registry; nothing downloads at run time:

    npm pack @webxr-input-profiles/assets@1.0.20
    tar xzf webxr-input-profiles-assets-1.0.20.tgz
    python -m handshape_tf.assets.convert_webxr_hand \
        package/dist/profiles/generic-hand/right.glb handshape_tf/assets/hand_template.npz

What the conversion does:
  * reads positions, triangles, joint indices and weights from the GLB binary chunk;
  * welds vertices that share a position (the glTF splits them along UV seams), so the mesh
    is one closed surface: 1360 -> 1159 vertices, 2314 triangles;
  * turns the 4-influence skinning into a dense V x 25 weight matrix (rows sum to one);
  * reads the 25 rig joints' rest transforms (all joints are children of the armature root,
    so node TRS are already in the model frame) and their parents from the WebXR naming;
  * writes the 21 paper keypoints as a 21 x 25 selection of rig joints.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

from handshape_tf.assets.template import (
    KEYPOINT_RIG_JOINTS,
    RIG_JOINT_NAMES,
    TEMPLATE_VERSION,
    rig_joint_parents,
)

_COMPONENT_DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path: Path) -> tuple[dict, bytes]:
    """Returns the JSON chunk and the binary chunk of a GLB 2.0 file."""
    data = Path(path).read_bytes()
    magic, version, _ = struct.unpack("<III", data[:12])
    if magic != 0x46546C67 or version != 2:
        raise ValueError(f"{path}: not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    json_len, json_type = struct.unpack("<II", data[12:20])
    gltf = json.loads(data[20 : 20 + json_len])
    offset = 20 + json_len
    bin_len, _ = struct.unpack("<II", data[offset : offset + 8])
    return gltf, data[offset + 8 : offset + 8 + bin_len]


def read_accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Reads accessor `index` as a numpy array of shape [count, components]."""
    accessor = gltf["accessors"][index]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = np.dtype(_COMPONENT_DTYPES[accessor["componentType"]])
    width = _TYPE_SIZES[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    count = accessor["count"]
    stride = view.get("byteStride", 0)
    if stride and stride != width * dtype.itemsize:
        raise ValueError(f"interleaved accessor {index} is not supported")
    values = np.frombuffer(binary, dtype=dtype, count=count * width, offset=start)
    return values.reshape(count, width)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3 x 3) of a unit quaternion in glTF order (x, y, z, w)."""
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def weld_vertices(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merges vertices with identical positions.

    Returns:
      first: [V'] index of the first original vertex of each welded vertex.
      remap: [V] welded index of every original vertex.
    """
    _, first, remap = np.unique(positions, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the file's vertex order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[remap.reshape(-1)]


def convert(glb_path: Path) -> dict[str, np.ndarray]:
    gltf, binary = read_glb(glb_path)
    primitive = gltf["meshes"][0]["primitives"][0]
    attributes = primitive["attributes"]
    positions = read_accessor(gltf, binary, attributes["POSITION"]).astype(np.float64)
    faces = read_accessor(gltf, binary, primitive["indices"]).reshape(-1, 3).astype(np.int64)
    joint_ids = read_accessor(gltf, binary, attributes["JOINTS_0"]).astype(np.int64)
    joint_weights = read_accessor(gltf, binary, attributes["WEIGHTS_0"]).astype(np.float64)

    skin = gltf["skins"][0]
    names = [gltf["nodes"][n]["name"] for n in skin["joints"]]
    if names != list(RIG_JOINT_NAMES):
        raise ValueError(f"unexpected rig joints in {glb_path}: {names}")

    num_joints = len(names)
    dense_weights = np.zeros((len(positions), num_joints))
    np.add.at(dense_weights, (np.arange(len(positions))[:, None], joint_ids), joint_weights)
    dense_weights /= dense_weights.sum(axis=1, keepdims=True)

    first, remap = weld_vertices(positions, faces)
    vertices = positions[first]
    weights = dense_weights[first]
    faces = remap[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]

    rest_transforms = np.tile(np.eye(4), (num_joints, 1, 1))
    for j, node_index in enumerate(skin["joints"]):
        node = gltf["nodes"][node_index]
        rest_transforms[j, :3, :3] = quaternion_to_matrix(np.array(node["rotation"])) @ np.diag(
            node.get("scale", [1.0, 1.0, 1.0])
        )
        rest_transforms[j, :3, 3] = node["translation"]
    # Scales are 1 up to float noise: re-orthonormalise the rotations.
    u, _, vt = np.linalg.svd(rest_transforms[:, :3, :3])
    rest_transforms[:, :3, :3] = u @ vt

    inverse_bind = read_accessor(gltf, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4)
    bind = np.linalg.inv(np.transpose(inverse_bind, (0, 2, 1)))  # glTF stores column-major
    if not np.allclose(bind, rest_transforms, atol=1e-4):
        raise ValueError("inverse bind matrices disagree with the joints' rest transforms")

    regressor = np.zeros((len(KEYPOINT_RIG_JOINTS), num_joints))
    regressor[np.arange(len(KEYPOINT_RIG_JOINTS)), [names.index(n) for n in KEYPOINT_RIG_JOINTS]] = 1.0

    return {
        "version": np.array(TEMPLATE_VERSION),
        "vertices": vertices.astype(np.float32),
        "faces": faces.astype(np.int32),
        "skin_weights": weights.astype(np.float32),
        "joint_names": np.array(names),
        "joint_parents": np.array(rig_joint_parents(), dtype=np.int32),
        "rest_transforms": rest_transforms.astype(np.float32),
        "keypoint_regressor": regressor.astype(np.float32),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glb", type=Path, help="generic-hand/right.glb from the npm package")
    parser.add_argument("out", type=Path, help="output .npz path")
    args = parser.parse_args(argv)
    arrays = convert(args.glb)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)
    print(
        f"wrote {args.out}: {len(arrays['vertices'])} vertices, {len(arrays['faces'])} faces, "
        f"{len(arrays['joint_names'])} rig joints"
    )


if __name__ == "__main__":
    main()
