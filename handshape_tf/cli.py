"""What the command-line entry points share: exit statuses, the error line, quiet logging and
readable TensorFlow errors.

Every entry point's `main(argv) -> int` returns EXIT_OK, EXIT_FAILURE (the work failed: a
diverged training run, an export that does not match its model), EXIT_BAD_INPUT (bad
arguments, config, data or files; argparse's own errors use it too) or, for a training command
stopped by SIGTERM or Ctrl-C after saving a checkpoint, EXIT_INTERRUPTED (128 + SIGINT, as a
shell reports Ctrl-C), and reports a failure as one "error: ..." line on stderr (`print_error`).
Importing this module does not import TensorFlow, so an entry point can parse its arguments (and
answer --help) before paying for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130


def format_number(value) -> str:
    """A metric for a table: "-" for None, 3 decimals below 1 (AUC, ratios), else 2 (mm)."""
    return "-" if value is None else f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def print_error(error) -> None:
    """Writes "error: <error>" to stderr (the one format every entry point uses)."""
    print(f"error: {error}", file=sys.stderr)


def tf_error_text(error) -> str:
    """The line of a (TensorFlow) error message that says what went wrong.

    TensorFlow wraps the cause in "Graph execution error:", node names and stack frames
    ("Detected at node ... defined at", "[[{{node ...}}]] [Op:...]"); this keeps the cause,
    e.g. "Invalid PNG. Failed to initialize decoder." Other errors: their first line.
    """
    message = str(getattr(error, "message", None) or error).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if lines and lines[0].rstrip(":") == "Graph execution error":
        causes = [
            line
            for line in lines[1:]
            if not line.startswith(("Detected at node", "<stack traces", "File ", "[[")) and not line.startswith(" ")
        ]
        lines = causes[-1:] or lines
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip() or type(error).__name__


# Lines TensorFlow's C++ start-up writes to stderr that no user action can act on: CPU feature
# and CUDA notices (twice, once per shared library), the cuInit failure of CPU-only machines.
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cudart_stub\.cc|"
    r"Could not find cuda drivers|cuda_(platform|executor|diagnostics)\.cc|failed call to cuInit|"
    r"cpu_feature_guard\.cc|TensorFlow binary is optimized|To enable the following instructions|"
    r"rebuild TensorFlow with the appropriate compiler flags|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered"
)
OUR_LOGGERS = ("handshape_tf", "export", "train", "mobile_demo", "__main__")


def setup_logging(verbose: bool = False, timestamps: bool = False) -> None:
    """Quiet-by-default logging for an entry point; call it after parsing the arguments.

    Default: our own loggers at INFO, every other library (TensorFlow, absl, tf2onnx, ...) at
    WARNING, TensorFlow's C++ log at FATAL only and its start-up notices filtered out of
    stderr while TensorFlow is imported (so the filter is installed before that import).
    `verbose`: everything at INFO, TensorFlow's C++ log unfiltered. A TF_CPP_MIN_LOG_LEVEL the
    user set wins.
    """
    import handshape_tf

    if handshape_tf.USER_TF_LOG_LEVEL is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    prefix = "%(asctime)s " if timestamps else ""
    logging.basicConfig(format=f"{prefix}%(levelname)s %(name)s: %(message)s")  # no-op if handlers exist
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if (
        not verbose
        and "tensorflow" not in sys.modules
        and not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path)
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def add_overrides_argument(parser, help: str) -> None:
    """--set KEY=VALUE ... (repeatable, collected in args.overrides): dotted config keys that
    override the preset and --config (`handshape_tf.config_utils.parse_overrides`)."""
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help
    )


def add_detector_arguments(parser, what: str) -> None:
    """--detector [FILE] (a hand detector; given alone, the shipped one), --side-model FILE (the
    side classifier used with it; the shipped one by default) and --max-hands N, for the entry
    points that take full photos or frames; `what` ends --detector's help."""
    from handshape_tf.assets import SHIPPED_DETECTOR, SHIPPED_SIDE

    parser.add_argument(
        "--detector",
        type=Path,
        nargs="?",
        const=SHIPPED_DETECTOR,
        metavar="FILE",
        help=f"a hand detector (.tflite; no FILE: the shipped one) to {what}",
    )
    parser.add_argument(
        "--side-model",
        type=Path,
        default=SHIPPED_SIDE,
        metavar="FILE",
        help="with --detector: the classifier naming each hand left or right from its crop (.tflite or .keras; "
        "default: the shipped one)",
    )
    parser.add_argument("--max-hands", type=int, default=2, help="most hands per image with --detector (default: 2)")


def add_verbose_argument(parser) -> None:
    """--verbose: show other libraries' INFO logs and TensorFlow's C++ log."""
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's and other libraries' logs")


class _QuietTensorFlowImport:
    """A meta-path finder that runs the first `import tensorflow` with stderr filtered.

    TensorFlow's shared libraries log before absl's logging is initialised, straight to file
    descriptor 2 and regardless of TF_CPP_MIN_LOG_LEVEL; the only way to drop those lines is
    to capture the descriptor while the module executes and write back the other lines.
    """

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


class filtered_stderr:
    """Context manager: captures file descriptor 2 and writes back all but start-up noise."""

    def __enter__(self):
        sys.stderr.flush()
        self._capture = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._capture.seek(0)
        text = self._capture.read().decode("utf-8", errors="replace")
        self._capture.close()
        kept = [line for line in text.splitlines() if line.strip() and not _STARTUP_NOISE.search(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
            sys.stderr.flush()
        return False
