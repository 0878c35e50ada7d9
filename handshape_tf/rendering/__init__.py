"""Mesh rendering (the only package that imports tensorflow-graphics).

The rasterizer op is compiled from tfg's sources on first use (see `rasterizer_op`).
"""

from handshape_tf.rendering.rasterizer import (
    Fragments,
    interpolate,
    perspective_from_intrinsics,
    rasterize,
    render_depth,
    render_normals,
    vertex_normals,
)

__all__ = [
    "Fragments",
    "interpolate",
    "perspective_from_intrinsics",
    "rasterize",
    "render_depth",
    "render_normals",
    "vertex_normals",
]
