"""train.detector end to end on tiny pools: run folder, report, resume, TFLite parity."""

from __future__ import annotations

import json

import pytest

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
