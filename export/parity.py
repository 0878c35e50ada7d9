"""Numbers that decide whether an export matches its Keras model.

Shape shorthand: B images, P points (V = 1159 mesh vertices or J = 21 joints).

Both models run on the same B crops; for each output (mesh_uvd, pose_uvd) and each point:
  uv error: Euclidean distance of (u, v) in pixels of the model's S x S input crop,
    |delta (u, v)| * S;
  d error: |delta d| * NOMINAL_SCALE_MM, millimetres for a hand whose scale bone (middle finger
    MCP-PIP) has the template's length, 46.9 mm (d is depth in units of that bone).
The max and the mean over all images and points are reported, and an export fails when a max
or a mean exceeds its format's `Tolerance`. The uv bounds are fractions of the crop side (so
they mean the same at any input size), shown here in pixels of a 128 / 256 px crop:

  format              max uv        mean uv       max d   mean d   why
  fp32 (SavedModel,   2e-4 S        5e-5 S        0.05 mm 0.01 mm  float round-off only (we see
   TFLite, ONNX)      0.026/0.05 px 0.006/0.013                     ~1e-7 S and ~1e-5 mm)
  TFLite fp16         4e-3 S        1e-3 S        1 mm    0.25 mm  fp16 weights: ~1e-3 relative
                      0.5/1 px      0.13/0.26 px
  TFLite int8         0.15 S        0.04 S        15 mm   4 mm     8-bit activations: the output
                      19/38 px      5/10 px                         grid alone is 1/255 of its range

The int8 bounds only catch a broken quantisation (we see ~0.02 S mean, ~0.08 S max on a
random-weight model with a spread-out output); the real check of an int8 model is its accuracy
on a validation set.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

OUTPUTS = ("mesh_uvd", "pose_uvd")


@functools.cache
def nominal_scale_mm() -> float:
    """Length of the template's scale bone (keypoints 9-10, middle finger MCP-PIP), mm."""
    from handshape_tf.assets.template import SCALE_BONE, load_template

    keypoints = load_template().keypoints  # J x 3, metres
    return float(np.linalg.norm(keypoints[SCALE_BONE[1]] - keypoints[SCALE_BONE[0]]) * 1000.0)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Largest accepted differences: uv as a fraction of the crop side, d in mm."""

    max_uv: float
    mean_uv: float
    max_d_mm: float
    mean_d_mm: float


TOLERANCES = {
    "fp32": Tolerance(max_uv=2e-4, mean_uv=5e-5, max_d_mm=0.05, mean_d_mm=0.01),
    "fp16": Tolerance(max_uv=4e-3, mean_uv=1e-3, max_d_mm=1.0, mean_d_mm=0.25),
    "int8": Tolerance(max_uv=0.15, mean_uv=0.04, max_d_mm=15.0, mean_d_mm=4.0),
}


@dataclasses.dataclass(frozen=True)
class Difference:
    """Differences of one output between an export and its Keras model, for an S px crop."""

    output: str
    image_size: int
    max_uv_px: float
    mean_uv_px: float
    max_d_mm: float
    mean_d_mm: float

    def violations(self, tolerance: Tolerance) -> list[str]:
        """Human-readable list of the bounds of `tolerance` this difference exceeds."""
        bounds = {
            "max_uv_px": tolerance.max_uv * self.image_size,
            "mean_uv_px": tolerance.mean_uv * self.image_size,
            "max_d_mm": tolerance.max_d_mm,
            "mean_d_mm": tolerance.mean_d_mm,
        }
        problems = []
        for field, bound in bounds.items():
            value = getattr(self, field)
            if not value <= bound:  # also catches NaN
                problems.append(f"{self.output} {field} = {value:.4g} > {bound:.4g}")
        return problems


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], image_size: int) -> list[Difference]:
    """Differences of mesh_uvd and pose_uvd between two models' outputs on the same crops.

    Args:
      reference: the Keras model's outputs, mesh_uvd B x V x 3 and pose_uvd B x J x 3.
      candidate: the export's outputs, same names and shapes.
      image_size: S, side of the model's input crop (pixels per unit of u and v).

    Returns:
      One `Difference` per output, in OUTPUTS order.

    Raises:
      ValueError: an output missing from either side, or shapes that differ.
    """
    scale_mm = nominal_scale_mm()
    differences = []
    for name in OUTPUTS:
        if name not in reference or name not in candidate:
            raise ValueError(f"outputs {sorted(reference)} and {sorted(candidate)}; expected both to contain {name!r}")
        ref = np.asarray(reference[name], np.float64)
        out = np.asarray(candidate[name], np.float64)
        if ref.shape != out.shape or ref.ndim != 3 or ref.shape[-1] != 3:
            raise ValueError(f"{name}: shapes {ref.shape} and {out.shape}; expected the same B x P x 3")
        uv = np.linalg.norm(out[..., :2] - ref[..., :2], axis=-1) * image_size  # B x P
        d = np.abs(out[..., 2] - ref[..., 2]) * scale_mm  # B x P
        differences.append(
            Difference(name, image_size, float(uv.max()), float(uv.mean()), float(d.max()), float(d.mean()))
        )
    return differences


def violations(differences: list[Difference], tolerance: Tolerance) -> list[str]:
    """All bounds of `tolerance` that `differences` exceed (empty: the export passes)."""
    return [problem for difference in differences for problem in difference.violations(tolerance)]


def format_report(label: str, differences: list[Difference], tolerance: Tolerance) -> str:
    """A small table of the differences beside their bounds."""
    lines = [
        f"{label}: difference to Keras (uv: pixels of the input crop; d: mm at a "
        f"{nominal_scale_mm():.1f} mm scale bone)",
        f"  {'output':9} {'max uv px':>10} {'mean uv px':>11} {'max d mm':>9} {'mean d mm':>10}",
    ]
    for diff in differences:
        lines.append(
            f"  {diff.output:9} {diff.max_uv_px:>10.2e} {diff.mean_uv_px:>11.2e} {diff.max_d_mm:>9.2e} "
            f"{diff.mean_d_mm:>10.2e}"
        )
    size = differences[0].image_size if differences else 0
    lines.append(
        f"  {'bound':9} {tolerance.max_uv * size:>10.2e} {tolerance.mean_uv * size:>11.2e} {tolerance.max_d_mm:>9.2e} "
        f"{tolerance.mean_d_mm:>10.2e}"
    )
    return "\n".join(lines)
