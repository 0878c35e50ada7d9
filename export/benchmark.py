"""Latency and throughput of the model in every export format, per stage and thread count.

    python -m export.benchmark                                   # cpu preset, all formats
    python -m export.benchmark --presets cpu paper --threads 1 2 --mediapipe-model /tmp/mp/hand_landmark_full.tflite

For each preset (random weights: timing does not depend on them), format and thread count:
batch-1 latency (median and p90 of `--runs` calls after warm-up) and batch-`--batch`
throughput (images/s from the median of `--batch-runs` calls), for the whole model and for
its three stages, cut out of the model by layer name:
  hourglass:    image -> last heat-maps + features (`network.HOURGLASS`);
  encoder_mesh: heat-maps + features -> latent -> mesh (`ENCODER`, `MESH_DECODER`);
  pose:         mesh -> 21 joints (`POSE_REGRESSOR`).
Formats: keras (the model as built, sparse graph formulation, compiled tf.function),
saved_model (float32 signature of the gather twin, `tf.saved_model.load`), tflite_fp32 /
tflite_fp16 / tflite_int8 (LiteRT interpreter, XNNPACK; int8 calibrated on procedural
textures), onnx (onnxruntime CPU). Each thread count runs in its own worker process, because
TensorFlow fixes its thread pools when it starts: TF intra-op threads (inter-op 1), LiteRT
num_threads, onnxruntime intra-op threads.

MediaPipe's hand landmark model (hand_landmark_full.tflite, 224 x 224 input, its palm detector
not included) runs through the same LiteRT interpreter for comparison; it ships inside the
mediapipe wheel (do not commit it):
    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp
    cd /tmp/mp && unzip -o -j mediapipe-0.10.21-*.whl 'mediapipe/modules/hand_landmark/hand_landmark_full.tflite'
With `--mediapipe-palm-model` (palm_detection_full.tflite, from the same wheel:
    cd /tmp/mp && unzip -o -j mediapipe-0.10.21-*.whl 'mediapipe/modules/palm_detection/palm_detection_full.tflite')
a full frame with `FRAME_HANDS` hands is timed too, model invocations only, batch 1, as each
pipeline runs them: MediaPipe's palm detector once and its landmark model per hand, against the
shipped detector once, the side classifier on each hand's crop and its mirror image, and the
shipped mesh model per hand (`handshape_tf.assets`). Pre- and post-processing (letterboxing,
decoding, cropping) are left out of both.
The paper's 19.9 ms per image (GTX 1080: 12.6 ms hourglass, 4.7 ms encoder + graph CNN,
2.6 ms pose regressor) is printed beside ours: a different machine, for scale only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from handshape_tf.cli import add_verbose_argument, setup_logging

logger = logging.getLogger(__name__)

FORMATS = ("keras", "saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8", "onnx")
STAGES = ("full", "hourglass", "encoder_mesh", "pose")
TFLITE_QUANTIZATION = {"tflite_fp32": "none", "tflite_fp16": "fp16", "tflite_int8": "int8"}
# Paper Sec. 5.2 runtime on a GTX 1080 (a different machine), milliseconds per image.
PAPER_MS = {"full": 19.9, "hourglass": 12.6, "encoder_mesh": 4.7, "pose": 2.6}
CALIBRATION_CROPS = 16
FRAME_HANDS = 2
_RESULT_PREFIX = "BENCHMARK-RESULT "


def stage_models(model) -> dict:
    """{stage: keras.Model} for STAGES, sharing `model`'s layers (and weights).

    Stage models have flat dict outputs: hourglass {"heatmaps", "features"} (last stack),
    encoder_mesh {"mesh_uvd"} from inputs "heatmaps" and "features", pose {"pose_uvd"} from
    input "mesh_uvd"; "full" is `model` itself.
    """
    import keras

    from handshape_tf.models.network import ENCODER, HOURGLASS, MESH_DECODER, POSE_REGRESSOR

    image = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    heatmaps, features = model.get_layer(HOURGLASS)(model.get_layer("centre")(image))
    hourglass = keras.Model(image, {"heatmaps": heatmaps[-1], "features": features}, name="stage_hourglass")
    heatmaps_in = keras.Input(tuple(heatmaps[-1].shape[1:]), name="heatmaps")
    features_in = keras.Input(tuple(features.shape[1:]), name="features")
    mesh = model.get_layer(MESH_DECODER)(model.get_layer(ENCODER)(heatmaps_in, features_in))
    encoder_mesh = keras.Model([heatmaps_in, features_in], {"mesh_uvd": mesh}, name="stage_encoder_mesh")
    mesh_in = keras.Input(tuple(mesh.shape[1:]), name="mesh_uvd")
    pose = keras.Model(mesh_in, {"pose_uvd": model.get_layer(POSE_REGRESSOR)(mesh_in)}, name="stage_pose")
    return {"full": model, "hourglass": hourglass, "encoder_mesh": encoder_mesh, "pose": pose}


def build_preset(name: str):
    """The preset's model (sparse formulation) with seeded random weights."""
    import keras

    from handshape_tf.models.config import ModelConfig
    from handshape_tf.models.network import build_model

    keras.utils.set_random_seed(0)
    return build_model(ModelConfig.preset(name))


def _calibration(stages: dict, size: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """int8 calibration samples for each stage: its inputs computed from procedural crops."""
    from export import common, tflite

    crops = common.sample_crops(size, None, CALIBRATION_CROPS, seed=1)
    images = tflite.calibration_samples(crops)
    samples = {"full": images, "hourglass": images, "encoder_mesh": [], "pose": []}
    for sample in images:
        hourglass = stages["hourglass"](sample["image"], training=False)
        samples["encoder_mesh"].append({name: np.asarray(value) for name, value in hourglass.items()})
        mesh = stages["full"](sample["image"], training=False)["mesh_uvd"]
        samples["pose"].append({"mesh_uvd": np.asarray(mesh)})
    return samples


def export_artifacts(preset: str, formats, stages, folder: Path) -> None:
    """Writes each stage of a preset's gather twin in each requested format under `folder`."""
    from export import common, onnx, tflite

    twin = common.export_twin(build_preset(preset))
    models = stage_models(twin)
    calibration = _calibration(models, common.image_size(twin)) if "tflite_int8" in formats else None
    for stage in stages:
        source = folder / f"{preset}-{stage}-saved_model"
        if any(f == "saved_model" or f.startswith("tflite") for f in formats):
            logger.info("%s %s: SavedModel", preset, stage)
            common.write_float_saved_model(models[stage], source)
        for fmt in formats:
            if fmt.startswith("tflite"):
                logger.info("%s %s: %s", preset, stage, fmt)
                quantize = TFLITE_QUANTIZATION[fmt]
                content = tflite.convert_saved_model(
                    source,
                    quantize,
                    calibration[stage] if quantize == "int8" else None,
                    integer_input=stage in ("full", "hourglass"),
                )
                tflite.check_builtin_ops(content)
                (folder / f"{preset}-{stage}-{fmt}.tflite").write_bytes(content)
            elif fmt == "onnx":
                logger.info("%s %s: ONNX", preset, stage)
                onnx.convert(models[stage], folder / f"{preset}-{stage}.onnx")


def _random_input(shape, dtype, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = (batch, *[int(d) for d in shape[1:]])
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(size=shape).astype(np.float32)


def _runner(fmt: str, preset: str, stage: str, folder: Path, threads: int, keras_stages: dict):
    """A function batch -> (a no-argument callable running one batch of random inputs)."""
    rng = np.random.default_rng(0)
    if fmt == "keras":
        import tensorflow as tf

        model = keras_stages[preset][stage]
        call = tf.function(lambda inputs: model(inputs, training=False))

        def make(batch):
            inputs = [tf.constant(_random_input(t.shape, np.float32, batch, rng)) for t in model.inputs]
            inputs = inputs[0] if len(inputs) == 1 else inputs
            return lambda: tf.nest.map_structure(lambda t: t.numpy(), call(inputs))

        return make
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(folder / f"{preset}-{stage}-saved_model"))
        function = loaded.signatures["serving_default"]
        _, specs = function.structured_input_signature

        def make(batch):
            inputs = {
                name: tf.constant(_random_input(spec.shape, np.float32, batch, rng)) for name, spec in specs.items()
            }

            def run(loaded=loaded):  # the signature needs the loaded object (its variables) alive
                return {name: value.numpy() for name, value in function(**inputs).items()}

            return run

        return make
    if fmt == "onnx":
        from export.onnx import open_session

        session = open_session(folder / f"{preset}-{stage}.onnx", threads)

        def make(batch):
            inputs = {i.name: _random_input(i.shape, np.float32, batch, rng) for i in session.get_inputs()}
            return lambda: session.run(None, inputs)

        return make
    return litert_runner(folder / f"{preset}-{stage}-{fmt}.tflite", threads)


def litert_runner(path: Path, threads: int):
    """`_runner` for a .tflite file: the LiteRT interpreter with inputs resized to the batch."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    interpreter = Interpreter(model_path=str(path), num_threads=threads)

    def make(batch):
        inputs = []
        for detail in interpreter.get_input_details():
            interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=False)
            inputs.append((detail["index"], _random_input(detail["shape"], detail["dtype"], batch, rng)))
        interpreter.allocate_tensors()
        outputs = [detail["index"] for detail in interpreter.get_output_details()]

        def run():
            for index, value in inputs:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return [interpreter.get_tensor(index) for index in outputs]

        return run

    return make


def timed(function, runs: int, warmup: int = 2) -> np.ndarray:
    """Seconds of `runs` calls of `function` after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return np.array(times)


@dataclasses.dataclass
class Result:
    """One timing: batch-1 latency (ms) and batch throughput (images/s; None if not run)."""

    preset: str
    format: str
    stage: str
    threads: int
    median_ms: float
    p90_ms: float
    images_per_s: float | None


def measure(make, runs: int, batch: int, batch_runs: int) -> tuple[float, float, float | None]:
    """(median ms, p90 ms) at batch 1 and images/s at `batch` (None when batch_runs is 0)."""
    latency = timed(make(1), runs)
    throughput = None
    if batch_runs > 0:
        throughput = batch / float(np.median(timed(make(batch), batch_runs, warmup=1)))
    return 1e3 * float(np.median(latency)), 1e3 * float(np.percentile(latency, 90)), throughput


def worker(spec: dict) -> None:
    """Times everything in `spec` with `spec["threads"]` threads; prints one JSON line per result."""
    threads = spec["threads"]
    formats = spec["formats"]
    keras_stages = {}
    if any(fmt in ("keras", "saved_model") for fmt in formats):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if "keras" in formats:
        keras_stages = {preset: stage_models(build_preset(preset)) for preset in spec["presets"]}
    folder = Path(spec["folder"])

    def emit(result: Result) -> None:
        print(_RESULT_PREFIX + json.dumps(dataclasses.asdict(result)), flush=True)

    for preset in spec["presets"]:
        for fmt in formats:
            for stage in spec["stages"]:
                logger.info("timing %s %s %s, %d thread(s)", preset, fmt, stage, threads)
                make = _runner(fmt, preset, stage, folder, threads, keras_stages)
                timing = measure(make, spec["runs"], spec["batch"], spec["batch_runs"])
                emit(Result(preset, fmt, stage, threads, *timing))
    if spec.get("mediapipe_model"):
        make = litert_runner(Path(spec["mediapipe_model"]), threads)
        median, p90, _ = measure(make, spec["runs"], spec["batch"], 0)
        emit(Result("mediapipe", "tflite_fp32", "full", threads, median, p90, None))
    if spec.get("mediapipe_palm_model"):
        for name, runs in frame_pipelines(spec, threads).items():
            latency = timed(runs, spec["runs"])
            emit(Result(name, "tflite", "frame", threads, *(1e3 * np.percentile(latency, [50, 90])), None))


def frame_pipelines(spec: dict, threads: int) -> dict:
    """{name: one frame's model invocations} for MediaPipe and the shipped models (module docstring)."""
    from handshape_tf.assets import SHIPPED_DETECTOR, SHIPPED_MODEL, SHIPPED_SIDE

    palm = litert_runner(Path(spec["mediapipe_palm_model"]), threads)(1)
    landmark = litert_runner(Path(spec["mediapipe_model"]), threads)(1)
    detector = litert_runner(SHIPPED_DETECTOR, threads)(1)
    side = litert_runner(SHIPPED_SIDE, threads)(1)
    mesh = litert_runner(SHIPPED_MODEL, threads)(1)

    def mediapipe_frame():
        palm()
        for _ in range(FRAME_HANDS):
            landmark()

    def our_frame():
        detector()
        for _ in range(2 * FRAME_HANDS):  # each crop and its mirror image
            side()
        for _ in range(FRAME_HANDS):
            mesh()

    return {"frame-mediapipe": mediapipe_frame, "frame-ours": our_frame}


def run_workers(spec: dict, threads: list[int]) -> list[Result]:
    """Runs one worker process per thread count; returns all their results."""
    results = []
    with tempfile.TemporaryDirectory(prefix="handshape-benchmark-spec-") as temporary:
        for count in threads:
            path = Path(temporary) / f"spec-{count}.json"
            path.write_text(json.dumps({**spec, "threads": count}))
            logger.info("worker with %d thread(s)", count)
            done = subprocess.run(
                [sys.executable, "-m", "export.benchmark", "--worker", str(path)], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"benchmark worker ({count} threads) exited with {done.returncode}:\n{done.stderr[-4000:]}"
                )
            for line in done.stdout.splitlines():
                if line.startswith(_RESULT_PREFIX):
                    results.append(Result(**json.loads(line[len(_RESULT_PREFIX) :])))
    return results


def format_table(results: list[Result], parameters: dict[str, int], batch: int) -> str:
    """The results as a text table, with MediaPipe ratios and the paper's GPU numbers."""
    mediapipe = {r.threads: r for r in results if r.preset == "mediapipe"}
    frames = {(r.preset, r.threads): r for r in results if r.stage == "frame"}
    results = [r for r in results if r.stage != "frame"]
    lines = []
    for threads, result in sorted(mediapipe.items()):
        lines.append(
            f"MediaPipe hand_landmark_full.tflite (LiteRT, {threads} thread(s)): "
            f"{result.median_ms:.2f} ms median, {result.p90_ms:.2f} ms p90 at batch 1"
        )
    header = (
        f"{'preset':7} {'format':12} {'thr':>3} {'stage':13} {'b=1 ms':>8} {'p90 ms':>8} "
        f"{f'b={batch} img/s':>12} {'x MediaPipe':>11} {'paper GTX 1080 ms*':>18}"
    )
    lines.append(header)
    for r in results:
        if r.preset == "mediapipe":
            continue
        ratio = ""
        if r.stage == "full" and r.threads in mediapipe:
            ratio = f"{r.median_ms / mediapipe[r.threads].median_ms:.2f}"
        throughput = "" if r.images_per_s is None else f"{r.images_per_s:.1f}"
        lines.append(
            f"{r.preset:7} {r.format:12} {r.threads:>3} {r.stage:13} {r.median_ms:>8.2f} {r.p90_ms:>8.2f} "
            f"{throughput:>12} {ratio:>11} {PAPER_MS[r.stage]:>18.1f}"
        )
    lines.append(
        "* paper Sec. 5.2, GTX 1080 GPU: a different machine, for scale only. x MediaPipe: our batch-1 "
        "latency / MediaPipe's landmark model's (no palm detector in either). Random weights; "
        + ", ".join(f"{name}: {count:,} parameters" for name, count in parameters.items())
        + "."
    )
    for threads in sorted({t for _, t in frames}):
        ours, theirs = frames[("frame-ours", threads)], frames[("frame-mediapipe", threads)]
        lines.append(
            f"A frame with {FRAME_HANDS} hands, model invocations only, {threads} thread(s): shipped detector + side "
            f"classifier + mesh model {ours.median_ms:.2f} ms (p90 {ours.p90_ms:.2f}), MediaPipe palm detector + "
            f"landmark model {theirs.median_ms:.2f} ms (p90 {theirs.p90_ms:.2f}): ratio "
            f"{ours.median_ms / theirs.median_ms:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m export.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["cpu"])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="'full' is the whole model; the others its parts",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed batch-1 calls")
    parser.add_argument("--batch", type=int, default=32, help="batch of the throughput measurement")
    parser.add_argument("--batch-runs", type=int, default=3, help="timed calls at --batch (0: skip)")
    parser.add_argument("--mediapipe-model", help="hand_landmark_full.tflite (see the module docstring)")
    parser.add_argument(
        "--mediapipe-palm-model", help="palm_detection_full.tflite: also time a full frame (module docstring)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.worker:
        worker(json.loads(Path(args.worker).read_text()))
        return
    for flag, path in (
        ("--mediapipe-model", args.mediapipe_model),
        ("--mediapipe-palm-model", args.mediapipe_palm_model),
    ):
        if path and not Path(path).is_file():
            parser.error(f"{flag} {path} does not exist (see --help for how to get it)")
    if args.mediapipe_palm_model and not args.mediapipe_model:
        parser.error("--mediapipe-palm-model needs --mediapipe-model (the landmark model of the same pipeline)")
    if min(args.threads) < 1 or args.runs < 1:
        parser.error(f"--threads {args.threads} and --runs {args.runs} must be >= 1")

    import handshape_tf  # noqa: F401  (quiets TensorFlow's C++ start-up logging)

    with tempfile.TemporaryDirectory(prefix="handshape-benchmark-") as folder:
        parameters = {}
        for preset in args.presets:
            parameters[preset] = build_preset(preset).count_params()
            export_artifacts(preset, args.formats, args.stages, Path(folder))
        spec = {
            "folder": folder,
            "presets": args.presets,
            "formats": args.formats,
            "stages": args.stages,
            "runs": args.runs,
            "batch": args.batch,
            "batch_runs": args.batch_runs,
            "mediapipe_model": args.mediapipe_model,
            "mediapipe_palm_model": args.mediapipe_palm_model,
        }
        results = run_workers(spec, args.threads)
    print(format_table(results, parameters, args.batch))


if __name__ == "__main__":
    main()
