"""`handshape <command> [args]`: every entry point of the project behind one console script.

One command with subcommands rather than twenty `handshape-*` scripts: one name on the PATH,
`handshape --help` lists everything, and each subcommand is exactly `python -m <module>` with
the same arguments (its module is imported only when it runs, so the LiteRT-only demo and
every --help stay free of TensorFlow).
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module whose main(argv) runs it, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train.synthetic", "fully supervised training on rendered hands (paper Sec. 4.3)"),
    "train-weak": ("train.weak_stb", "weakly supervised fine-tuning on RGB-D data with the depth loss"),
    "table3": ("train.weak_table3", "the paper's Table 3 on the real-like RGB-D set"),
    "ablations": ("train.ablations", "loss ablations and mesh baselines (Tables 1 and 2)"),
    "domain-ablations": ("train.domain_ablations", "what each part of the rendered look contributes"),
    "recipe-curves": ("train.recipe_curves", "accuracy against training minutes of finished runs"),
    "train-detector": ("train.detector", "train the full-frame hand detector"),
    "train-side": ("train.side", "train the classifier naming a hand crop left or right"),
    "evaluate": ("handshape_tf.evaluate", "evaluate a model on a dataset (paper protocol)"),
    "evaluate-clip": ("handshape_tf.evaluation.clip", "tracking against detecting every frame on a synthetic video"),
    "predict": ("handshape_tf.predict", "hand mesh and joints for images"),
    "serve": ("handshape_tf.serve", "REST server in the TF Serving format"),
    "render": ("handshape_tf.data.synthetic", "render a synthetic dataset into shards"),
    "preview": ("handshape_tf.data.preview", "a sheet of rendered samples per image domain"),
    "photo-bank": ("handshape_tf.data.photo_bank", "fetch the background photo bank"),
    "data-benchmark": ("handshape_tf.data.benchmark", "rendering and input pipeline throughput"),
    "model-benchmark": ("handshape_tf.models.benchmark", "forward latency and training throughput"),
    "summary": ("handshape_tf.models.summary", "layer table of a model preset"),
    "export-saved-model": ("export.saved_model", "export a SavedModel for TF Serving"),
    "export-tflite": ("export.tflite", "export a TFLite model"),
    "export-onnx": ("export.onnx", "export an ONNX model"),
    "export-benchmark": ("export.benchmark", "exported-model latency against MediaPipe"),
    "demo": ("mobile_demo.demo", "the on-device demo (LiteRT only)"),
    "build-rasterizer": ("handshape_tf.rendering.rasterizer_op", "compile tensorflow-graphics' rasterizer op"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: handshape <command> [arguments]   (handshape <command> --help for its arguments)",
        "",
        "commands (each is python -m <module> with the same arguments):",
    ]
    lines += [f"  {name:{width}}  {text} ({module})" for name, (module, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"handshape: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if "--verbose" not in rest:
        from handshape_tf.cli import setup_logging

        setup_logging()  # before the module's own imports: TensorFlow's start-up notices filtered
    status = importlib.import_module(COMMANDS[name][0]).main(rest)
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
