"""Shared test set-up: a small photo bank of generated images, so every test renders the
"photo" domain offline (the real bank is built from registry packages on first use), the
tiny model the export, inference and demo tests share, and the .keras round-trip check every
model test calls."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from handshape_tf.data import photo_bank
from handshape_tf.data.backgrounds import procedural_background


@pytest.fixture(scope="session", autouse=True)
def fixture_photo_bank(tmp_path_factory):
    """$HANDSHAPE_TF_CACHE -> a bank of 6 train and 3 test 320 x 256 images (a session's worth)."""
    cache = tmp_path_factory.mktemp("handshape_cache")
    folder = cache / f"photo_bank-v{photo_bank.BANK_VERSION}"
    photos = []
    for index, split in enumerate(["train"] * 6 + ["test"] * 3):
        (folder / split).mkdir(parents=True, exist_ok=True)
        image = procedural_background(np.random.default_rng(index), 320)[:256]
        name = f"{split}/fixture-{index}.jpg"
        cv2.imwrite(str(folder / name), image)
        photos.append({"file": name, "source": "fixture"})
    (folder / photo_bank.MANIFEST).write_text(json.dumps({"version": photo_bank.BANK_VERSION, "photos": photos}))
    patch = pytest.MonkeyPatch()
    patch.setenv("HANDSHAPE_TF_CACHE", str(cache))
    yield folder
    patch.undo()


@pytest.fixture(scope="session")
def tiny_model():
    """The "tiny" preset with seed-0 random weights, shared by the whole session: read-only (a
    test that trains or changes weights builds its own)."""
    import keras

    from handshape_tf import ModelConfig, build_model

    keras.utils.set_random_seed(0)
    return build_model(ModelConfig.preset("tiny"))


@pytest.fixture(scope="session")
def spread_tiny_model():
    """The "tiny" preset with seed-0 weights, its mesh output widened so that u, v spread over
    the crop around 0.5 as a trained model's do (random weights leave every vertex within ~0.03
    of u = v = 0, which would make output comparisons meaningless). Do not train or change it:
    it is shared by the whole session."""
    import keras

    from handshape_tf import ModelConfig, build_model

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig.preset("tiny"))
    kernel, bias = [w for w in model.get_layer("mesh_decoder").weights if w.shape[-1] == 3 and w.trainable]
    kernel.assign(kernel.numpy() * 20.0)
    bias.assign([0.5, 0.5, 0.0])
    return model


@pytest.fixture
def keras_round_trip(tmp_path):
    """check(model, inputs, atol=0.0) -> the reloaded model: saves `model` as a .keras file, loads
    it back and asserts the same class, the same config and the same outputs (inference mode)
    on `inputs`."""
    import keras

    def check(model, inputs, atol: float = 0.0):
        path = tmp_path / f"{model.name}-round-trip.keras"
        model.save(path)
        reloaded = keras.models.load_model(path)
        assert type(reloaded) is type(model)
        assert _as_json(reloaded.get_config()) == _as_json(model.get_config())
        want = keras.tree.flatten(model(inputs, training=False))
        got = keras.tree.flatten(reloaded(inputs, training=False))
        assert len(got) == len(want)
        for reloaded_output, output in zip(got, want):
            np.testing.assert_allclose(np.asarray(reloaded_output), np.asarray(output), rtol=0, atol=atol)
        return reloaded

    return check


def _as_json(config):
    """A config as its .keras file stores it (tuples as lists)."""
    return json.loads(json.dumps(config, sort_keys=True))
