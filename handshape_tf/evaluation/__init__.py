"""Evaluation: pose / mesh errors, 3D PCK and AUC, reports and figures.

`metrics`: numpy errors, PCK/AUC (Zimmermann & Brox's convention), `ErrorAccumulator` and the
trivial `MeanUVDPredictor`; `report`: `evaluate_model` (paper protocol, JSON report, PCK plot,
prediction sheet) and `fit_mean_uvd`; `plots`: the figures; `clip`: tracking on a synthetic
video. CLIs: `python -m handshape_tf.evaluate`, `python -m handshape_tf.evaluation.clip`.

The names below load their module on first use, so importing a submodule (e.g. for a CLI's
--help) does not import TensorFlow.
"""

import importlib

_LAZY = {
    "AUC_RANGE_MM": "metrics",
    "PCK_THRESHOLDS_MM": "metrics",
    "ErrorAccumulator": "metrics",
    "MeanUVDPredictor": "metrics",
    "aligned_point_errors": "metrics",
    "area_under_curve": "metrics",
    "pck_curve": "metrics",
    "point_errors": "metrics",
    "EvaluationData": "report",
    "as_evaluation_data": "report",
    "as_predictor": "report",
    "evaluate_model": "report",
    "fit_mean_uvd": "report",
    "open_evaluation_data": "report",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
