"""train.detector end to end on tiny pools: run folder, report, resume, TFLite parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handshape_tf.config_utils import merge, parse_overrides
from handshape_tf.data.full_frames import HandPool
from train import detector as train_detector

TINY = [
    "--set",
    "data.pool_size=8",
    "data.heldout_pool_size=4",
    "data.heldout_frames=6",
    "data.crop_size=64",
    "model.input_height=64",
    "model.input_width=64",
    "model.widths=[8,8,8,8,8]",
    "model.blocks=[0,0,0,0,0]",
    "model.head_width=8",
    "batch_size=2",
    "log_every=1",
]


@pytest.mark.slow
def test_train_detector_runs_resumes_and_exports(tmp_path):
    run = tmp_path / "run"
    assert train_detector.main(["--budget", "0.02", "--run-dir", str(run), "--tflite", *TINY]) == 0
    report = json.loads((run / "report.json").read_text())
    first_steps = report["training"]["steps"]
    assert first_steps >= 1
    for name in ("heldout", "unseen"):
        assert 0.0 <= report[name]["ap50"] <= 1.0 and report[name]["frames"] == 6
    assert report["tflite"]["max_abs_difference"] <= 1e-3
    assert not [op for op in report["tflite"]["operators"] if "Flex" in op or op.startswith("CUSTOM")]
    assert (
        (run / "detector.keras").is_file()
        and (run / "detector.tflite").is_file()
        and (run / "detections.png").is_file()
    )
    # A longer budget on the same folder resumes from the checkpoint (same pools, more steps).
    # (The budget counts the trained minutes so far, whose first step includes tracing.)
    budget = str(report["training"]["minutes"] + 0.1)
    assert train_detector.main(["--budget", budget, "--run-dir", str(run), *TINY]) == 0
    again = json.loads((run / "report.json").read_text())
    assert again["training"]["steps"] > first_steps
    # A different model in the same folder is refused.
    assert train_detector.main(["--budget", budget, "--run-dir", str(run), *TINY, "model.head_width=16"]) == 2


def test_worker_batches_match_the_in_process_stream(tmp_path):
    """Batches composed by worker processes are the training stream's frames, in order, as the
    in-process route composes them (so a resumed run continues the same stream either way)."""
    rng = np.random.default_rng(0)
    rgba = np.zeros((3, 32, 32, 4), np.uint8)
    rgba[:, 8:24, 10:22] = rng.integers(0, 256, (3, 16, 12, 4), dtype=np.uint8) | np.uint8(0x80)
    joints = rng.uniform(8, 24, (3, 21, 2)).astype(np.float32)
    HandPool(rgba, joints, np.array([False, True, False])).save(tmp_path / "pool.npz")
    spec = train_detector.ComposerSpec(str(tmp_path / "pool.npz"), None, "photo", 64, 64)
    config = merge(
        train_detector.DetectorTrainConfig(),
        parse_overrides(["batch_size=3", "model.input_height=64", "model.input_width=64"]),
    )
    expected = [train_detector.compose_batch(spec.build(), config, start) for start in (5, 8)]
    for workers in (0, 2):
        config = merge(config, {"workers": workers})
        stream = train_detector.training_batches(spec, config, start_frame=5, depth=2)
        got = [next(stream) for _ in range(2)]
        stream.close()
        for batch, reference in zip(got, expected):
            assert batch[0].dtype == np.uint8 and batch[0].shape == (3, 64, 64, 3)
            for part, reference_part in zip(batch, reference):
                np.testing.assert_array_equal(part, reference_part)
    assert expected[0][1].max() > 0.99  # the frames hold hands (a centre peak)
