"""Entry points: --help without TensorFlow, quiet default logs, readable TensorFlow errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from handshape_tf.cli import tf_error_text
from handshape_tf.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = [
    "handshape_tf.predict",
    "handshape_tf.evaluate",
    "handshape_tf.serve",
    "handshape_tf.models.benchmark",
    "handshape_tf.models.summary",
    "export.saved_model",
    "export.tflite",
    "export.onnx",
    "export.benchmark",
    "mobile_demo",
    "handshape_tf.data.synthetic",
    "train.synthetic",
    "train.ablations",
    "train.domain_ablations",
    "train.weak_stb",
    "train.weak_table3",
    "train.detector",
    "handshape_tf.evaluation.clip",
]
# Training entry points with arguments that fail (exit 2) after TensorFlow has been imported.
FAILING_TRAINING = {
    "train.synthetic": ["--data", "no-such-data"],
    "train.ablations": ["--data", "no-such-data"],
    "train.domain_ablations": ["--set", "no_such_key=1"],
    "train.weak_stb": ["--init", "no-such-run"],
    "train.weak_table3": ["--init", "no-such-run", "--variants", "full"],
}
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "cuInit", "cpu_feature_guard")


def _run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_names_the_command_and_does_not_import_tensorflow(module):
    result = _run("-X", "importtime", "-m", module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} ")
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "tensorflow" not in imported and "keras" not in imported


@pytest.mark.parametrize("command", COMMANDS)
def test_every_handshape_subcommand_shows_its_help(command):
    """`handshape <command> --help` is `python -m <module> --help` (the console script's code path);
    only the rasterizer build needs TensorFlow for it."""
    result = _run("-X", "importtime", "-m", "handshape_tf.commands", command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m "), result.stdout[:200]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert ("tensorflow" in imported) == (command == "build-rasterizer")


def test_handshape_without_a_known_command_lists_them_and_fails():
    listing = _run("-m", "handshape_tf.commands", "--help")
    assert listing.returncode == 0 and all(f"  {name} " in listing.stdout for name in COMMANDS)
    unknown = _run("-m", "handshape_tf.commands", "no-such-command")
    assert unknown.returncode == 2 and "unknown command 'no-such-command'" in unknown.stderr
    assert _run("-m", "handshape_tf.commands").returncode == 2


def test_default_logs_are_quiet_and_verbose_shows_tensorflow():
    quiet = _run("-m", "handshape_tf.models.summary", "--preset", "tiny")
    assert quiet.returncode == 0 and "total" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(noise in line for noise in NOISE)], quiet.stderr
    verbose = _run("-m", "handshape_tf.models.summary", "--preset", "tiny", "--verbose")
    assert verbose.returncode == 0 and "oneDNN custom operations" in verbose.stderr


@pytest.mark.parametrize("module", FAILING_TRAINING)
def test_training_entry_points_are_quiet_by_default(module, tmp_path):
    """TensorFlow is imported before these errors; its start-up lines stay off the terminal."""
    result = _run("-m", module, *FAILING_TRAINING[module], "--workdir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    verbose = _run("-m", module, *FAILING_TRAINING[module], "--workdir", str(tmp_path), "--verbose")
    assert verbose.returncode == 2 and "oneDNN custom operations" in verbose.stderr


def test_benchmark_reports_progress_and_time_left():
    result = _run(
        "-m",
        "handshape_tf.models.benchmark",
        "--presets",
        "tiny",
        "--batch-sizes",
        "1",
        "2",
        "--train-presets",
        "--runs",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "INFO handshape_tf.models.benchmark: 2 measurements; loading TensorFlow" in result.stderr
    assert "[1/2] tiny float32 forward b=1 (0:00 elapsed)" in result.stderr
    assert "[2/2] tiny float32 forward b=2 (" in result.stderr and "left)" in result.stderr
    assert result.stdout.count("tiny ") == 2 and "matmul peak: float32 " in result.stdout


def test_tf_error_text_keeps_the_cause():
    message = (
        "Graph execution error:\n\nDetected at node map/while/DecodeImage defined at (most recent call last):\n"
        "<stack traces unavailable>\nInvalid PNG. Failed to initialize decoder.\n\t [[{{node map/while/DecodeImage}}]]"
        " [Op:__inference_signature_wrapper_10939]"
    )
    assert tf_error_text(ValueError(message)) == "Invalid PNG. Failed to initialize decoder."
    assert tf_error_text(
        ValueError("{{function_node __wrapped__Reduce}} truncated record at 9 [Op:Reduce] name: ")
    ) == ("truncated record at 9")
    assert tf_error_text(KeyError()) == "KeyError"
