"""The LiteRT demo: runs without TensorFlow, writes annotated images and videos, explains missing assets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from export import common, tflite
from mobile_demo import demo, make_assets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory, spread_tiny_model):
    """A tiny float32 .tflite model whose mesh spreads over the crop (u, v around 0.5)."""
    path = tmp_path_factory.mktemp("model") / "tiny.tflite"
    path.write_bytes(tflite.convert_keras(common.export_twin(spread_tiny_model)))
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 160 x 120 BGR test picture: a skin-coloured blob on a grey-blue background."""
    image = np.full((120, 160, 3), (90, 70, 50), np.uint8)
    cv2.ellipse(image, (80, 60), (30, 45), 15, 0, 360, (140, 170, 220), -1)
    path = tmp_path_factory.mktemp("images") / "hand.png"
    cv2.imwrite(str(path), image)
    return path


def _run_demo(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mobile_demo", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def _imported(stderr: str) -> set[str]:
    """Top-level module names from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_demo_annotates_an_image_without_importing_tensorflow(tiny_tflite, photo, tmp_path):
    result = _run_demo(
        "--model", tiny_tflite, "--images", photo, "--out", tmp_path, "--benchmark", "--runs", "3", "--threads", "1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = _imported(result.stderr)
    assert {"ai_edge_litert", "cv2", "mobile_demo"} <= imported
    assert not imported & {"tensorflow", "keras", "tf2onnx", "onnxruntime"}
    written = cv2.imread(str(tmp_path / "hand_overlay.png"))
    original = cv2.imread(str(photo))
    assert written.shape == original.shape
    changed = np.any(written != original, axis=2)
    assert changed.mean() > 0.02  # mesh, skeleton, box and frame-rate text
    assert changed[:20, :].any()  # the frame-rate line at the top
    stages = [line.split()[0] for line in result.stdout.splitlines()[2:6]]
    assert stages == ["pre_post", "inference", "draw", "total"]
    assert "frames/s end to end" in result.stdout


def test_demo_writes_an_annotated_video(tiny_tflite, tmp_path):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for step in range(6):
        frame = np.full((64, 96, 3), 40 * step, np.uint8)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    assert demo.main(["--model", str(tiny_tflite), "--video", str(clip), "--out", str(out), "--max-frames", "4"]) == 0
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    ok, frame = capture.read()
    assert ok and frame.shape == (64, 96, 3)


@pytest.fixture(scope="module")
def untrained_detector_tflite(tmp_path_factory):
    """A small detector .tflite with seed-0 random weights: never confident, so it finds no hand."""
    import keras

    from handshape_tf.models.detector import DetectorConfig, build_detector

    keras.utils.set_random_seed(0)
    model = build_detector(DetectorConfig(input_height=64, input_width=96, widths=(8,) * 5, head_width=8))
    path = tmp_path_factory.mktemp("detector") / "detector.tflite"
    path.write_bytes(tflite.convert_keras(model))
    return path


def test_demo_with_a_detector_runs_litert_only_and_handles_frames_without_hands(
    tiny_tflite, untrained_detector_tflite, tmp_path
):
    """--detector on a clip without hands: every frame is written unchanged but for the frame
    rate, the detector runs on every frame (nothing to track), the benchmark has a detector
    stage, and TensorFlow is never imported."""
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for step in range(5):
        writer.write(np.full((64, 96, 3), 30 * step, np.uint8))
    writer.release()
    out = tmp_path / "out"
    arguments = ["--model", tiny_tflite, "--detector", untrained_detector_tflite, "--threads", "1"]
    result = _run_demo(*arguments, "--video", clip, "--out", out, "--benchmark", "--runs", "2", "--no-filter")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _imported(result.stderr) & {"tensorflow", "keras"}
    assert "the detector ran on 5 of 5 frames" in result.stderr
    assert "0 hand(s) found" in result.stdout
    stages = [line.split()[0] for line in result.stdout.splitlines()[2:7]]
    assert stages == ["detector", "pre_post", "inference", "draw", "total"]
    assert int(cv2.VideoCapture(str(out / "clip_overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    missing = _run_demo("--detector", tmp_path / "none.tflite", "--out", out)
    assert missing.returncode == 2 and "make one with `python -m train.detector --tflite`" in missing.stderr


def test_missing_assets_say_how_to_make_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEFAULT_MODEL", tmp_path / "model.tflite")
    monkeypatch.setattr(demo, "DEFAULT_IMAGE", tmp_path / "example.png")
    assert demo.main(["--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "no demo model at" in message and "python -m mobile_demo.make_assets --model path/to/model.keras" in message
    assert "no example image at" in message and "make_assets --example PHOTO" in message
    assert not (tmp_path / "out").exists()
    assert demo.main(["--model", str(tmp_path / "other.tflite"), "--images", str(tmp_path / "a.png")]) == 2
    message = capsys.readouterr().err
    assert "other.tflite does not exist; expected a .tflite file" in message and "images not found:" in message


def test_corrupt_model_and_undecodable_image_exit_2_with_a_message(tiny_tflite, photo, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_tflite.read_bytes()[:5000])
    result = _run_demo("--model", cut, "--images", photo, "--out", tmp_path / "out")
    assert result.returncode == 2 and f"mobile_demo: corrupt model file {cut}: " in result.stderr
    assert "Traceback" not in result.stderr
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    result = _run_demo("--model", tiny_tflite, "--images", fake, photo, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "notes.png is not an image OpenCV can decode" in result.stderr
    assert "1 of 2 images could not be decoded" in result.stderr
    assert (tmp_path / "out" / "hand_overlay.png").is_file()  # the good image is still annotated


def test_no_argument_run_uses_the_shipped_assets(tmp_path):
    """The no-argument demo runs on the shipped model and example without importing TensorFlow,
    and the shipped model (MODEL_CARD.md) finds the example's hand: its 2D joints against the
    example's rendered ground truth (example.json)."""
    result = _run_demo(cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "mobile_demo" / "example_overlay.png").is_file()
    assert "tensorflow" not in _imported(result.stderr)
    from handshape_tf.inference import HandPredictor, TFLiteBackend

    truth = np.array(json.loads((demo.ASSETS / "example.json").read_text())["joints_uv_px"])  # 21 x 2, 256 px image
    hand = HandPredictor(TFLiteBackend(demo.DEFAULT_MODEL, num_threads=1)).predict(
        read_bgr(demo.DEFAULT_IMAGE), channel_order="bgr"
    )
    error = np.linalg.norm(np.asarray(hand.joints_uv).reshape(21, 2) - truth, axis=-1)
    assert error.mean() < 20.0, error  # 13.1 px measured (MODEL_CARD.md); the hand spans ~200 px


def test_predict_uses_the_shipped_model_by_default(tmp_path):
    """`python -m handshape_tf.predict IMAGE` needs no --model: the shipped model (the demo's)
    gives the same joints as the demo's predictor."""
    from handshape_tf import predict
    from handshape_tf.assets import SHIPPED_MODEL

    assert demo.DEFAULT_MODEL == SHIPPED_MODEL and SHIPPED_MODEL.is_file()
    assert predict.main([str(demo.DEFAULT_IMAGE), "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "example.json").read_text())
    from handshape_tf.inference import HandPredictor, TFLiteBackend

    hand = HandPredictor(TFLiteBackend(SHIPPED_MODEL, num_threads=1)).predict(
        read_bgr(demo.DEFAULT_IMAGE), channel_order="bgr"
    )
    np.testing.assert_allclose(np.asarray(written["joints_uv"]).reshape(21, 2), hand.joints_uv, atol=0.05)


def test_shipped_detector_finds_the_example_hand_in_a_larger_frame(tmp_path):
    """predict --detector (no file: the shipped detector and side classifier, DETECTOR_CARD.md) on
    the example padded to twice its size (the detector was trained on hands of 12-65% of the
    frame): its most confident hand is named a right hand, as the example is, and its joints land
    on the example's ground truth (22.9 px mean measured)."""
    from handshape_tf import predict
    from handshape_tf.assets import SHIPPED_DETECTOR

    image = read_bgr(demo.DEFAULT_IMAGE)
    pad = image.shape[0] // 2
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT))
    assert SHIPPED_DETECTOR.is_file()
    assert predict.main([str(tmp_path / "frame.png"), "--detector", "--out", str(tmp_path / "out")]) == 0
    hands = json.loads((tmp_path / "out" / "frame.json").read_text())["hands"]
    best = max(hands, key=lambda hand: hand["score"])
    example = json.loads((demo.ASSETS / "example.json").read_text())
    assert best["handedness"] == ("left" if example["is_left"] else "right")
    truth = np.array(example["joints_uv_px"]) + pad
    error = np.linalg.norm(np.asarray(best["hand"]["joints_uv"]).reshape(21, 2) - truth, axis=-1)
    assert error.mean() < 35.0, error


def test_make_example_keeps_the_centred_square(tmp_path):
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255
    source = tmp_path / "wide.jpg"
    cv2.imwrite(str(source), wide)
    out = make_assets.make_example(source, max_size=50, out=tmp_path / "example.png")
    example = cv2.imread(str(out))
    assert example.shape == (50, 50, 3)
    assert example.min() >= 250  # only the white middle square is kept
