"""Forward latency and training throughput of the model presets on this machine.

    python -m handshape_tf.models.benchmark                      # paper + cpu, batch 1 and 32
    python -m handshape_tf.models.benchmark --presets cpu --train-presets cpu

Forward: median (and p90) of `--runs` timed calls of a compiled `tf.function` after warm-up,
inference mode. Training: images/s of compiled RMSprop steps at batch 32 with the paper's
L_fully (0.5 L_H + L_M + L_J) on random targets, median step time after warm-up.
Progress (which measurement, time elapsed and an estimate of the time left) goes to stderr,
the table to stdout as each row is measured.
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


def train_step_time(model, batch: int, runs: int) -> np.ndarray:
    """Seconds per compiled RMSprop step with L_fully on random targets."""
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

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss, _ = fully_supervised_loss(
                heatmaps_pred=out["heatmaps"], heatmaps_target=heatmaps, mesh_pred=out["mesh_uvd"],
                mesh_target=mesh, pose_pred=out["pose_uvd"], pose_target=pose, topology=topology,
            )  # fmt: skip
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
    parser.add_argument("--train-presets", nargs="*", default=["cpu"],
                        help="presets whose training step is timed (the paper preset takes ~15 s per step on CPU)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TensorFlow's default)")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    # (preset, batch, is a training step): one table row each.
    tasks = [(name, batch, False) for name in args.presets for batch in args.batch_sizes]
    tasks += [(name, args.train_batch, True) for name in args.presets if name in args.train_presets]
    tasks.sort(key=lambda task: args.presets.index(task[0]))  # one model build per preset
    logger.info("%d measurements; loading TensorFlow", len(tasks))

    import tensorflow as tf

    from handshape_tf.models.config import ModelConfig
    from handshape_tf.models.network import build_model

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_physical_devices('GPU'))} GPU(s)", flush=True)
    print(f"{'preset':8} {'params':>12} {'what':>16} {'median ms':>10} {'p90 ms':>8} {'images/s':>9}", flush=True)
    start, model, built = time.perf_counter(), None, None
    for index, (name, batch, train) in enumerate(tasks):
        what = f"{'train' if train else 'forward'} b={batch}"
        elapsed = time.perf_counter() - start
        eta = f", about {_duration(elapsed / index * (len(tasks) - index))} left" if index else ""
        logger.info("[%d/%d] %s %s (%s elapsed%s)", index + 1, len(tasks), name, what, _duration(elapsed), eta)
        if built != name:
            model, built = build_model(ModelConfig.preset(name)), name
        if train:
            times = train_step_time(model, batch, max(3, args.runs // 2))
        else:
            times = forward_latency(model, batch, args.runs)
        median = np.median(times)
        print(f"{name:8} {model.count_params():>12,} {what:>16} {1e3 * median:>10.1f} "
              f"{1e3 * np.percentile(times, 90):>8.1f} {batch / median:>9.1f}", flush=True)  # fmt: skip
    logger.info("done in %s", _duration(time.perf_counter() - start))


if __name__ == "__main__":
    main()
