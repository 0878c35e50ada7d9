"""BatchNormalization helpers: find a model's BatchNorm layers (nested ones included) and
recalibrate their moving statistics on a few batches ("precise BN") after training."""

from __future__ import annotations

import keras


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested ones included (depth first)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def recalibrate_batch_norm(model: keras.Model, batches) -> int:
    """Replaces the moving statistics of `model`'s trainable BatchNorm layers by the average of
    their batch statistics over `batches` ("precise BN"; weights are not touched).

    The running averages a training run ends with follow the last few batches (momentum 0.9)
    while the weights were still moving; in inference mode a few inputs then get activations
    far outside what the next layers saw (meshes tens of crop widths away). Forward passes in
    training mode with momentum k / (k + 1) at batch k make the moving statistics the plain
    average over the batches.

    Args:
      model: the Keras model (called eagerly, training=True).
      batches: iterable of B x S x S x 3 float images in [0, 1].

    Returns:
      The number of batches used (0 leaves the statistics as they were).
    """
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for images in batches:
            for layer in layers:
                layer.momentum = count / (count + 1)
            model(images, training=True)
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count
