"""Forward latency and training throughput of the model presets on this machine.

    python -m handshape_tf.models.benchmark                      # paper + cpu, batch 1 and 32
    python -m handshape_tf.models.benchmark --presets cpu --train-presets cpu \
        --precisions float32 mixed_bfloat16

Forward: median (and p90) of `--runs` timed calls of a compiled `tf.function` after warm-up,
inference mode. Training: images/s of compiled RMSprop steps at batch 32 with the paper's
L_fully (0.5 L_H + L_M + L_J) on random targets, median step time after warm-up, for each
`--precisions` value (`build_model`'s trunk_precision), and with `--xla` also compiled with XLA
(the "gather" graph formulation, as `train.config` jit_compile trains). Every row also gives GFLOP/s (forward
FLOPs from the TF profiler on the frozen graph; a training step counted as 3 forward passes)
and its share of this machine's matmul peak in the row's precision (a 4096^3 matmul, measured
in the same run). Progress goes to stderr, the table to stdout as each row is measured.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from handshape_tf.cli import add_verbose_argument, setup_logging

logger = logging.getLogger("handshape_tf.models.benchmark")


def _timed(fn, runs: int, warmup: int = 2) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def forward_latency(model, batch: int, runs: int) -> np.ndarray:
    """Seconds per forward call of `model` on a random batch (compiled, inference mode)."""
    import tensorflow as tf

    size = model.input_shape[1]
    images = tf.random.uniform((batch, size, size, 3), seed=0)
    forward = tf.function(lambda x: model(x, training=False))
    return _timed(lambda: tf.nest.map_structure(lambda t: t.numpy(), forward(images)), runs)


def matmul_peak(dtype: str, size: int = 4096, runs: int = 5) -> float:
    """GFLOP/s of a size^3 matmul in `dtype` ("float32" or "bfloat16"), median of `runs`."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), seed=1, dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    seconds = np.median(_timed(lambda: matmul(a).numpy(), runs, warmup=1))
    return 2 * size**3 / seconds / 1e9


def forward_flops(model) -> int:
    """Floating-point operations of one batch-1 forward pass (TF profiler, frozen graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer, option_builder

    size = model.input_shape[1]
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, size, size, 3), tf.float32)
    )
    graph = convert_variables_to_constants_v2(concrete).graph
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def train_step_time(model, batch: int, runs: int, jit_compile: bool = False) -> np.ndarray:
    """Seconds per compiled RMSprop step with L_fully on random targets (XLA with jit_compile;
    the model must then use the "gather" graph formulation)."""
    import keras
    import tensorflow as tf

    from handshape_tf.assets.template import load_template
    from handshape_tf.losses import MeshTopology, fully_supervised_loss

    template = load_template()
    topology = MeshTopology.from_faces(template.faces, template.num_vertices)
    size = model.input_shape[1]
    outputs = model(tf.zeros((1, size, size, 3)))
    heatmap_shape = outputs["heatmaps"][0].shape[1:]
    rng = tf.random.Generator.from_seed(0)
    images = rng.uniform((batch, size, size, 3))
    heatmaps = rng.uniform((batch, *heatmap_shape))
    mesh = rng.uniform((batch, template.num_vertices, 3))
    pose = rng.uniform((batch, 21, 3))
    optimizer = keras.optimizers.RMSprop(1e-3)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss, _ = fully_supervised_loss(
                heatmaps_pred=out["heatmaps"],
                heatmaps_target=heatmaps,
                mesh_pred=out["mesh_uvd"],
                mesh_target=mesh,
                pose_pred=out["pose_uvd"],
                pose_target=pose,
                topology=topology,
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return _timed(lambda: step().numpy(), runs)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.models.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--presets", nargs="+", default=["paper", "cpu"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--train-presets",
        nargs="*",
        default=["cpu"],
        help="presets whose training step is timed (the paper preset takes ~15 s per step on CPU)",
    )
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("float32", "mixed_bfloat16"),
        default=["float32"],
        help="trunk precision of the model (build_model's trunk_precision)",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="also time the training steps compiled with XLA (gather graph formulation, train.config jit_compile)",
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TensorFlow's default)")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    # (preset, precision, batch, "forward" / "train" / "train xla"): one table row each.
    steps = ("train", "train xla") if args.xla else ("train",)
    tasks = [
        (name, precision, batch, "forward")
        for name in args.presets
        for precision in args.precisions
        for batch in args.batch_sizes
    ]
    tasks += [
        (name, precision, args.train_batch, kind)
        for name in args.presets
        for precision in args.precisions
        for kind in steps
        if name in args.train_presets
    ]
    tasks.sort(key=lambda task: (args.presets.index(task[0]), args.precisions.index(task[1]), task[3] == "train xla"))
    logger.info("%d measurements; loading TensorFlow", len(tasks))

    import tensorflow as tf

    from handshape_tf.models.config import ModelConfig
    from handshape_tf.models.network import build_model

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('GPU'))} GPU(s)", flush=True)
    peaks = {
        precision: matmul_peak("bfloat16" if "bfloat16" in precision else "float32") for precision in args.precisions
    }
    print("matmul peak: " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    print(
        f"{'preset':8} {'precision':>15} {'params':>12} {'GFLOP/img':>9} {'what':>16} {'median ms':>10} "
        f"{'p90 ms':>8} {'images/s':>9} {'GFLOP/s':>8} {'of peak':>7}",
        flush=True,
    )
    start, model, built, flops = time.perf_counter(), None, None, 0
    for index, (name, precision, batch, kind) in enumerate(tasks):
        what = f"{kind} b={batch}"
        elapsed = time.perf_counter() - start
        eta = f", about {_duration(elapsed / index * (len(tasks) - index))} left" if index else ""
        logger.info(
            "[%d/%d] %s %s %s (%s elapsed%s)", index + 1, len(tasks), name, precision, what, _duration(elapsed), eta
        )
        formulation = "gather" if kind == "train xla" else "sparse"
        if built != (name, precision, formulation):
            config = ModelConfig.preset(name, graph_formulation=formulation)
            model, built = build_model(config, trunk_precision=precision), (name, precision, formulation)
            flops = forward_flops(model)
        if kind == "forward":
            times = forward_latency(model, batch, args.runs)
        else:
            times = train_step_time(model, batch, max(3, args.runs // 2), jit_compile=kind == "train xla")
        median = np.median(times)
        rate = (1 if kind == "forward" else 3) * flops * batch / median / 1e9
        print(
            f"{name:8} {precision:>15} {model.count_params():>12,} {flops / 1e9:>9.3f} {what:>16} "
            f"{1e3 * median:>10.1f} {1e3 * np.percentile(times, 90):>8.1f} {batch / median:>9.1f} "
            f"{rate:>8.1f} {rate / peaks[precision]:>7.0%}",
            flush=True,
        )
    logger.info("done in %s", _duration(time.perf_counter() - start))


if __name__ == "__main__":
    main()
