"""The full network: public entry point, pinned sizes, round trips and input errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from handshape_tf import ModelConfig, build_model
from handshape_tf.models.network import with_graph_formulation


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)


def test_outputs_of_the_public_entry_point(tiny_model):
    out = tiny_model(_images(64), training=False)
    assert set(out) == {"heatmaps", "mesh_uvd", "pose_uvd"}
    assert [tuple(h.shape) for h in out["heatmaps"]] == [(2, 16, 16, 21)]
    assert tuple(out["mesh_uvd"].shape) == (2, 1159, 3) and tuple(out["pose_uvd"].shape) == (2, 21, 3)


@pytest.mark.parametrize(
    "preset, total, heatmaps",
    [("paper", 20_069_747, [(None, 64, 64, 21)] * 2), ("cpu", 2_839_310, [(None, 16, 16, 21)])],
)
def test_preset_parameter_counts_are_pinned(preset, total, heatmaps):
    model = build_model(ModelConfig.preset(preset))
    assert model.count_params() == total
    assert [tuple(h.shape) for h in model.output["heatmaps"]] == heatmaps


def test_keras_round_trip_gives_equal_outputs(tiny_model, keras_round_trip):
    reloaded = keras_round_trip(tiny_model, _images(64, seed=1))
    # The loaded model knows its sizes: nothing needs the run's config.yaml.
    assert type(reloaded).__name__ == "HandshapeModel" and reloaded.model_config == ModelConfig.preset("tiny")
    custom = ModelConfig.preset("tiny", pose_widths=(6, 4), graph_formulation="gather")
    assert keras_round_trip(build_model(custom), _images(64, seed=1)).model_config == custom


def test_gather_formulation_gives_the_same_numbers(tiny_model):
    gather = with_graph_formulation(tiny_model, "gather")
    assert gather.model_config.graph_formulation == "gather" and tiny_model.model_config.graph_formulation == "sparse"
    images = _images(64, seed=2)
    a, b = tiny_model(images, training=False), gather(images, training=False)
    np.testing.assert_allclose(a["mesh_uvd"], b["mesh_uvd"], atol=1e-5)
    np.testing.assert_allclose(a["pose_uvd"], b["pose_uvd"], atol=1e-5)
    with pytest.raises(ValueError, match="formulation 'dense'; expected 'sparse' or 'gather'"):
        with_graph_formulation(tiny_model, "dense")


def test_training_step_reduces_a_loss(tiny_model):
    model = build_model(ModelConfig.preset("tiny"))
    images = _images(64, batch=4, seed=3)
    optimizer = keras.optimizers.RMSprop(1e-3)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = sum(tf.reduce_mean(tf.square(t)) for t in tf.nest.flatten(out))
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)  # every sub-network is trained end to end
        optimizer.apply(grads, model.trainable_variables)
        losses.append(float(loss))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "shape",
    [(2, 32, 32, 3), (2, 64, 64, 4), (64, 64, 3)],
    ids=["wrong size", "wrong channels", "wrong rank"],
)
def test_wrong_images_are_rejected_with_the_expected_shape(tiny_model, shape):
    with pytest.raises(ValueError, match=r"expected shape=\(None, 64, 64, 3\), found shape=\("):
        tiny_model(np.zeros(shape, np.float32))
