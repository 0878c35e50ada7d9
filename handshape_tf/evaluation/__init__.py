"""Evaluation: pose / mesh errors, 3D PCK and AUC, reports and figures.

`metrics`: numpy errors, PCK/AUC (Zimmermann & Brox's convention), `ErrorAccumulator` and the
trivial `MeanUVDPredictor`; `report`: `evaluate_model` (paper protocol, JSON report, PCK plot,
prediction sheet) and `fit_mean_uvd`; `plots`: the figures. CLI: `python -m handshape_tf.evaluate`.
"""

from handshape_tf.evaluation.metrics import (
    AUC_RANGE_MM,
    PCK_THRESHOLDS_MM,
    ErrorAccumulator,
    MeanUVDPredictor,
    aligned_point_errors,
    area_under_curve,
    pck_curve,
    point_errors,
)
from handshape_tf.evaluation.report import (
    EvaluationData,
    as_evaluation_data,
    as_predictor,
    evaluate_model,
    fit_mean_uvd,
    open_evaluation_data,
)

__all__ = [
    "AUC_RANGE_MM",
    "PCK_THRESHOLDS_MM",
    "ErrorAccumulator",
    "EvaluationData",
    "MeanUVDPredictor",
    "aligned_point_errors",
    "area_under_curve",
    "as_evaluation_data",
    "as_predictor",
    "evaluate_model",
    "fit_mean_uvd",
    "open_evaluation_data",
    "pck_curve",
    "point_errors",
]
