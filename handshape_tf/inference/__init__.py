"""Inference API: load a trained model (.keras, SavedModel or .tflite) and run it on images.

    from handshape_tf.inference import load_predictor, draw_overlay, save_obj, mesh_faces
    predictor = load_predictor("model.tflite")
    hand = predictor.predict(image, boxes=(x0, y0, w, h), intrinsics=(fx, fy, cx, cy),
                             root_depth=z_root_mm, scale=s_mm)
    save_obj("hand.obj", hand.vertices_xyz, mesh_faces(hand.is_left))

Importing this package does not import TensorFlow: the .tflite path runs on ai_edge_litert
alone; TensorFlow/Keras load lazily for .keras and SavedModel models. `signature` (the
SavedModel serving signatures) does import TensorFlow and is not imported here.
"""

from handshape_tf.inference.backends import (
    CorruptModelError,
    KerasBackend,
    SavedModelBackend,
    TFLiteBackend,
    detect_format,
)
from handshape_tf.inference.mesh_io import load_obj, load_ply, mesh_faces, save_obj, save_ply
from handshape_tf.inference.overlay import draw_overlay
from handshape_tf.inference.prediction import HandPrediction, normalised_xyz, uvd_to_pixels, uvd_to_xyz_np
from handshape_tf.inference.predictor import HandPredictor, load_predictor

__all__ = [
    "CorruptModelError",
    "HandPrediction",
    "HandPredictor",
    "KerasBackend",
    "SavedModelBackend",
    "TFLiteBackend",
    "detect_format",
    "draw_overlay",
    "load_obj",
    "load_ply",
    "load_predictor",
    "mesh_faces",
    "normalised_xyz",
    "save_obj",
    "save_ply",
    "uvd_to_pixels",
    "uvd_to_xyz_np",
]
