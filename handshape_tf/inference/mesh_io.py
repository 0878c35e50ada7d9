"""Writing and reading triangle meshes as Wavefront OBJ and ASCII PLY (numpy only).

Shape shorthand: V vertices, F triangles.

Predicted meshes use the hand template's topology: `mesh_faces(is_left)` gives its triangles,
counter-clockwise seen from outside (re-wound for left hands, whose vertices are mirrored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from handshape_tf.assets.template import load_template


def mesh_faces(is_left: bool = False) -> np.ndarray:
    """F x 3 int32 triangles of the hand template (0-based), outward for that hand."""
    return load_template(left=is_left).faces


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices have shape {vertices.shape}; expected V x 3")
    if not np.all(np.isfinite(vertices)):
        raise ValueError("vertices contain NaN or infinite values; expected finite coordinates")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces have shape {faces.shape} and dtype {faces.dtype}; expected F x 3 integers")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"face indices span [{faces.min()}, {faces.max()}]; expected 0-based indices below V = {len(vertices)}"
        )
    return vertices, faces.astype(np.int64)


def save_obj(path, vertices, faces) -> Path:
    """Writes a triangle mesh as a Wavefront OBJ file ("v x y z" lines, 1-based "f" lines).

    Args:
      path: output file.
      vertices: V x 3 coordinates (written with 6 significant decimals in their own unit).
      faces: F x 3 0-based vertex indices.

    Returns:
      The path written.

    Raises:
      ValueError: bad shapes, non-finite vertices or out-of-range face indices.
    """
    vertices, faces = _check_mesh(vertices, faces)
    lines = [f"# handshape_tf mesh: {len(vertices)} vertices, {len(faces)} triangles"]
    lines += [f"v {x:.6g} {y:.6g} {z:.6g}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def load_obj(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads the vertices and triangles of an OBJ file (as written by `save_obj`).

    Faces may use "f a/t/n" references and negative (relative) indices; polygons with more
    than 3 corners are fan-triangulated.

    Returns:
      (V x 3 float64 vertices, F x 3 int64 0-based faces).

    Raises:
      ValueError: a malformed "v" or "f" line (the message names the line).
    """
    vertices, faces = [], []
    with open(os.fspath(path), encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if fields[0] == "v":
                    vertices.append([float(value) for value in fields[1:4]])
                    if len(vertices[-1]) != 3:
                        raise ValueError("a vertex needs 3 coordinates")
                elif fields[0] == "f":
                    corners = [int(field.split("/")[0]) for field in fields[1:]]
                    corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
                    if len(corners) < 3:
                        raise ValueError("a face needs at least 3 corners")
                    faces += [[corners[0], corners[i], corners[i + 1]] for i in range(1, len(corners) - 1)]
            except ValueError as error:
                raise ValueError(f"{path}:{number}: malformed line {line.strip()!r} ({error})") from None
    return np.array(vertices, np.float64).reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)


def save_ply(path, vertices, faces) -> Path:
    """Writes a triangle mesh as an ASCII PLY file (float x, y, z; uchar-count int index lists).

    Args:
      path: output file.
      vertices: V x 3 coordinates.
      faces: F x 3 0-based vertex indices.

    Returns:
      The path written.

    Raises:
      ValueError: bad shapes, non-finite vertices or out-of-range face indices.
    """
    vertices, faces = _check_mesh(vertices, faces)
    header = [
        "ply",
        "format ascii 1.0",
        "comment handshape_tf mesh",
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    lines = header + [f"{x:.6g} {y:.6g} {z:.6g}" for x, y, z in vertices]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def load_ply(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads an ASCII PLY triangle mesh with vertex x, y, z first (as written by `save_ply`).

    Returns:
      (V x 3 float64 vertices, F x 3 int64 0-based faces).

    Raises:
      ValueError: not an ASCII PLY file, or a header/body that does not match.
    """
    with open(os.fspath(path), encoding="ascii", errors="replace") as stream:
        lines = stream.read().splitlines()
    if not lines or lines[0].strip() != "ply" or "format ascii 1.0" not in lines[:3]:
        raise ValueError(f"{path} is not an ASCII PLY file (expected 'ply' and 'format ascii 1.0' first)")
    counts = {}
    try:
        end = lines.index("end_header")
    except ValueError:
        raise ValueError(f"{path}: PLY header has no end_header line") from None
    for line in lines[:end]:
        fields = line.split()
        if fields[:1] == ["element"] and len(fields) == 3:
            counts[fields[1]] = int(fields[2])
    num_vertices, num_faces = counts.get("vertex", 0), counts.get("face", 0)
    body = lines[end + 1 :]
    if len(body) < num_vertices + num_faces:
        raise ValueError(
            f"{path}: header announces {num_vertices} vertices and {num_faces} faces but the body has {len(body)} lines"
        )
    vertices = np.array([[float(v) for v in line.split()[:3]] for line in body[:num_vertices]], np.float64)
    faces = []
    for line in body[num_vertices : num_vertices + num_faces]:
        values = [int(v) for v in line.split()]
        if values[0] != 3 or len(values) != 4:
            raise ValueError(f"{path}: face line {line!r} is not a triangle")
        faces.append(values[1:])
    return vertices.reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)
