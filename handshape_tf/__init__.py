"""handshape_tf: 3D hand shape and pose estimation from a single RGB image (Ge et al., CVPR 2019).

Data flow, one folder per step: `assets/` (hand template) -> `graph/` (mesh graph and its
coarsening) -> `layers/` and `models/` (image -> heat-maps -> latent -> mesh -> joints) ->
`losses/` -> `rendering/` (depth maps for weak supervision, synthetic images) -> `data/` ->
`evaluation/`. `geometry/` holds the camera, heat-map and alignment maths they share.

TensorFlow is imported lazily, so `import handshape_tf` alone stays cheap.
"""

import os

# TensorFlow's C++ start-up chatter (CPU feature and CUDA notices) drowns our own output;
# a user's own TF_CPP_MIN_LOG_LEVEL wins (`handshape_tf.cli.setup_logging` quiets the rest).
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "handshape_tf.models.config",
    "build_model": "handshape_tf.models.network",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'handshape_tf' has no attribute {name!r}")


__all__ = ["ModelConfig", "build_model", "__version__"]
