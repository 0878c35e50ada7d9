"""Synthetic hand dataset: posed, shaped, lit hands rendered into crops over backgrounds.

Shape shorthand: N image size (N x N crops).

Per sample, `sample_params.sample_params` draws the hand, shape, pose, camera and crop from one
random generator (`handshape_tf.data.sample_params`), and `HandRenderer.render` turns batches of
`RENDER_BATCH` of them into shard samples: images, masks, depth and labels
(`handshape_tf.data.renderer`; the fields in `handshape_tf.data.shards`).

Datasets: sample g of a dataset seeded with s is drawn from `np.random.default_rng([s, g])`,
so the same seed gives the same samples (and the same shard BYTES, whatever the number of
workers) and a shard depends only on (seed, its index). `generate_dataset` writes
`shards.write_shard` files (atomic) and an atomically updated `metadata.json`; rerunning it on
the same folder with the same arguments writes only the shards that are missing. Workers are
spawned processes with one TensorFlow thread each; one that dies (e.g. killed for memory) fails
the run at once with `WorkerDied` naming the shards not written, and leaves no temporary files.

Command line:
  python -m handshape_tf.data.synthetic --num N --out DIR [--seed S] [--size 256]
      [--workers 2] [--samples-per-shard 256] [--backgrounds DIR] [--views full|frontal] [--preview]
      [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from handshape_tf.assets.template import TEMPLATE_VERSION, load_template
from handshape_tf.cli import add_verbose_argument, filtered_stderr, setup_logging
from handshape_tf.data import shards
from handshape_tf.data.backgrounds import BackgroundSource
from handshape_tf.data.domains import PHOTO, Domain, get_domain
from handshape_tf.data.hand_poses import NUM_POSE_PARAMETERS, POSE_PARAMETER_NAMES
from handshape_tf.data.hand_shapes import NUM_SHAPE_PARAMETERS, SHAPE_PARAMETER_NAMES
from handshape_tf.data.renderer import MIN_IMAGE_SIZE, RENDER_BATCH, HandRenderer, check_positive_int
from handshape_tf.data.sample_params import VIEWS, sample_params

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump whenever a seed's samples change (resuming checks it)


# ---------------------------------------------------------------------------------------------
# Datasets.


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample `index` of a dataset seeded with `seed`."""
    return np.random.default_rng([int(seed), int(index)])


def render_range(
    renderer: HandRenderer, seed: int, start: int, count: int, views: str = "full"
) -> Iterator[dict[str, Any]]:
    """Samples start .. start + count - 1 of the dataset seeded with `seed`, rendered in batches."""
    for first in range(start, start + count, RENDER_BATCH):
        indices = range(first, min(first + RENDER_BATCH, start + count))
        yield from renderer.render(
            [sample_params(sample_rng(seed, i), renderer.templates, views, renderer.domain) for i in indices]
        )


def resolve_backgrounds(domain: Domain, backgrounds: str | Path | None) -> tuple[str | None, str | None]:
    """(folder, split) the domain's backgrounds come from: the user's folder (split by photo)
    when given, else the photo bank's part for "photos" (built on first use), else (None, None)
    for procedural textures.

    Raises:
      PhotoBankError: the bank is needed and cannot be built.
    """
    if backgrounds is not None:
        return str(Path(backgrounds).expanduser().resolve()), domain.photo_split
    if domain.backgrounds == "procedural":
        return None, None
    from handshape_tf.data.photo_bank import ensure_bank

    return str(ensure_bank() / domain.photo_split), None


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to render: samples start .. start + count - 1 of the dataset seeded with `seed`,
    written to `folder` / `shards.shard_name(index, num_shards)`, backgrounds from the folder
    `backgrounds` (None: procedural) and its `split`, camera views from the distribution `views`,
    in the built-in domain named `domain`."""

    folder: str
    index: int
    num_shards: int
    start: int
    count: int
    seed: int
    image_size: int
    backgrounds: str | None
    views: str = "full"
    domain: str = PHOTO.name
    split: str | None = None


_WORKER_RENDERERS: dict[tuple, HandRenderer] = {}


def _init_worker() -> None:
    """Spawned worker: one TensorFlow and OpenCV thread (deterministic, no oversubscription).
    TensorFlow's start-up notices are dropped unless TF_CPP_MIN_LOG_LEVEL is 0 (--verbose)."""
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"
    with filtered_stderr() if quiet else contextlib.nullcontext():
        import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)


class ShardResult(NamedTuple):
    """A written shard: its index, samples, unreadable backgrounds skipped while rendering it,
    and the CPU seconds its process spent on it."""

    index: int
    count: int
    skipped_backgrounds: int
    cpu_seconds: float


def _run_shard(task: ShardTask) -> ShardResult:
    """Renders and writes one shard."""
    start = time.process_time()
    key = (task.image_size, task.backgrounds, task.split, task.domain)
    renderer = _WORKER_RENDERERS.get(key)
    if renderer is None:
        renderer = HandRenderer(
            task.image_size, BackgroundSource(task.backgrounds, split=task.split), get_domain(task.domain)
        )
        _WORKER_RENDERERS[key] = renderer
    skipped = renderer.backgrounds.num_skipped
    path = Path(task.folder) / shards.shard_name(task.index, task.num_shards)
    samples = render_range(renderer, task.seed, task.start, task.count, task.views)
    count = shards.write_shard(path, samples, stored_fields(renderer.domain))
    return ShardResult(task.index, count, renderer.backgrounds.num_skipped - skipped, time.process_time() - start)


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Sets BLAS/OpenMP thread counts to 1 for processes spawned inside (not overriding the user's)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    added = [name for name in names if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _prepare_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} is a file; expected a folder (or a path to create)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"output folder {out_dir} is not writable ({error.strerror or error})") from None


def stored_fields(domain: Domain) -> tuple[str, ...]:
    """The shard fields of the domain's samples: `shards.SYNTHETIC_FIELDS`, plus sensor_depth
    with a depth sensor."""
    return shards.SYNTHETIC_FIELDS + (("sensor_depth",) if domain.sensor is not None else ())


# metadata.json keys that must match to resume a folder (with their value in older folders).
_RESUME_KEYS = (
    "generator_version",
    "template_version",
    "seed",
    "num_samples",
    "samples_per_shard",
    "image_size",
    "backgrounds",
    "views",
    "domain",
    "domain_values",
    "sensor",
)
_RESUME_DEFAULTS = {"views": "full"}


def _dataset_config(num_samples, seed, image_size, samples_per_shard, backgrounds, views, domain) -> dict[str, Any]:
    template = load_template()
    sensor = (
        {}
        if domain.sensor is None
        else {
            "sensor": domain.as_dict()["sensor"],
            "sensor_depth_unit_mm": shards.SENSOR_DEPTH_UNIT_MM,
        }
    )
    return {
        "generator": "handshape_tf.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "template_version": TEMPLATE_VERSION,
        "seed": int(seed),
        "num_samples": int(num_samples),
        "samples_per_shard": int(samples_per_shard),
        "image_size": int(image_size),
        "backgrounds": None if backgrounds is None else str(Path(backgrounds).expanduser().resolve()),
        "views": views,
        "domain": domain.name,
        "domain_values": domain.as_dict(),
        "num_vertices": int(template.num_vertices),
        "pose_size": NUM_POSE_PARAMETERS,
        "shape_size": NUM_SHAPE_PARAMETERS,
        "pose_parameters": list(POSE_PARAMETER_NAMES),
        "shape_parameters": list(SHAPE_PARAMETER_NAMES),
        "depth_unit_mm": shards.DEPTH_UNIT_MM,
        "fields": list(stored_fields(domain)),
        **sensor,
        "camera_convention": "OpenCV: x right, y down, z forward, mm; pixel centres at i + 0.5",
    }


def generate_dataset(
    out_dir: str | Path,
    num_samples: int,
    *,
    seed: int = 0,
    image_size: int = 256,
    workers: int = 2,
    samples_per_shard: int = 256,
    progress: bool = True,
    backgrounds: str | Path | None = None,
    views: str = "full",
    domain: str = PHOTO.name,
) -> dict[str, Any]:
    """Renders a synthetic dataset into shards (resumable; see the module docstring).

    Args:
      out_dir: the dataset folder (created if needed).
      num_samples: number of samples, > 0.
      seed: dataset seed, >= 0.
      image_size: square crop size N in pixels (>= 32).
      workers: processes rendering shards in parallel (spawned, 1 TF thread each); 0 renders
        in this process (for tests and debugging; the samples are the same).
      samples_per_shard: samples per shard file (the last one may be smaller).
      progress: show a tqdm progress bar.
      backgrounds: a folder of photos to crop backgrounds from (its `domain.photo_split` part), or
        None for the domain's own (the photo bank, or procedural textures).
      views: the camera view distribution, "full" or "frontal" (`sample_params` module docstring,
        step 2).
      domain: the image domain's name (`handshape_tf.data.domains.get_domain`).

    Returns:
      The metadata written to `metadata.json` (counts, seed, generator version, image size,
      the complete shards and their sample counts).

    Raises:
      ValueError: num_samples, seed, image_size, samples_per_shard or workers out of range, an
        unknown views, or the
        folder holds a dataset generated with other arguments.
      NotADirectoryError: out_dir is a file.  PermissionError: out_dir is not writable.
      BackgroundError: the background folder is missing or holds no images.
      PhotoBankError: the domain needs the photo bank and it cannot be built.
      WorkerDied: a worker process died; the shards written are kept (rerun to complete the set).
    """
    check_positive_int("num_samples", num_samples)
    check_positive_int("seed", seed, 0)
    check_positive_int("image_size", image_size, MIN_IMAGE_SIZE)
    check_positive_int("samples_per_shard", samples_per_shard)
    check_positive_int("workers", workers, 0)
    if views not in VIEWS:
        raise ValueError(f"views={views!r}; expected one of {list(VIEWS)}")
    resolved = get_domain(domain)
    if backgrounds is not None:
        BackgroundSource(backgrounds, split=resolved.photo_split)  # fails now on a missing or empty folder
    out_dir = Path(out_dir).expanduser()
    _prepare_folder(out_dir)

    config = _dataset_config(num_samples, seed, image_size, samples_per_shard, backgrounds, views, resolved)
    counts = shards.plan_shards(num_samples, samples_per_shard)
    names, num_shards = list(counts), len(counts)
    shards.check_resumable(out_dir, config, _RESUME_KEYS, _RESUME_DEFAULTS)
    done = shards.complete_shards(out_dir, counts)

    def metadata() -> dict[str, Any]:
        return shards.folder_metadata(config, counts, done)

    shards.write_metadata(out_dir, metadata())
    if len(done) == num_shards:
        logger.info("%s: all %d shards present; nothing to do", out_dir, num_shards)
        return metadata()
    folder, split = resolve_backgrounds(resolved, backgrounds)
    tasks = [
        ShardTask(
            str(out_dir),
            i,
            num_shards,
            i * samples_per_shard,
            counts[name],
            int(seed),
            int(image_size),
            folder,
            views,
            domain,
            split,
        )
        for i, name in enumerate(names)
        if name not in done
    ]
    logger.info(
        "%s: rendering %d of %d shards (%d samples) with %d workers",
        out_dir,
        len(tasks),
        num_shards,
        sum(t.count for t in tasks),
        workers,
    )

    from tqdm import tqdm

    skipped = 0
    with tqdm(
        total=num_samples,
        initial=num_samples - sum(t.count for t in tasks),
        unit="sample",
        disable=not progress,
        desc="rendering",
    ) as bar:
        for result in render_shards(tasks, workers):
            done.add(names[result.index])
            skipped += result.skipped_backgrounds
            shards.write_metadata(out_dir, metadata())
            bar.update(result.count)
    if skipped:
        logger.warning("%d unreadable background images were skipped", skipped)
    return metadata()


class WorkerDied(shards.DatasetError):
    """A rendering worker process died (killed, e.g. for memory) before writing the shards named
    in `shards`; the shards written before are complete and kept, so a rerun of the same command
    renders only the missing ones."""

    def __init__(self, folder: str, names: Sequence[str], exit_codes: Sequence[int]):
        self.folder, self.shards = folder, list(names)
        causes = "; ".join(_describe_exit(code) for code in exit_codes) or "exit status unknown"
        listed = ", ".join(self.shards[:8]) + (f" and {len(self.shards) - 8} more" if len(self.shards) > 8 else "")
        super().__init__(
            f"a rendering worker process died ({causes}) before {len(self.shards)} shard(s) of {folder} were "
            f"written: {listed}. The shards written so far are kept; run the same command again to render the "
            "missing ones"
        )


def _describe_exit(code: int) -> str:
    if code == -signal.SIGKILL:
        return "killed by SIGKILL, e.g. by the out-of-memory killer: try fewer workers"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def render_shards(tasks: Sequence[ShardTask], workers: int) -> Iterator[ShardResult]:
    """Renders and writes shards, in this process (workers = 0) or in `workers` spawned processes
    with one TensorFlow thread each. Yields a ShardResult as each shard completes.

    A worker that dies (SIGKILL, the out-of-memory killer, a crash in native code) fails the whole
    call at once with `WorkerDied` naming the shards not written; whenever the call ends early,
    the other workers are stopped and the unfinished shards' temporary files removed.
    """
    if workers == 0:
        for task in tasks:
            yield _run_shard(task)
        return
    context = multiprocessing.get_context("spawn")
    with single_threaded_children():  # workers are spawned while tasks are submitted
        executor = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_init_worker)
        futures = {executor.submit(_run_shard, task): task for task in tasks}
    # The worker processes, to end them early (the executor only ends them when one dies): all
    # spawned by now, one per submit up to max_workers <= len(tasks).
    processes = list(executor._processes.values())
    finished: set[int] = set()
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                _stop(executor, processes)
                folder = tasks[0].folder
                names = [shards.shard_name(t.index, t.num_shards) for t in tasks if t.index not in finished]
                names = [name for name in names if not (Path(folder) / name).exists()]
                codes = sorted({p.exitcode for p in processes if p.exitcode not in (None, 0, -signal.SIGTERM)})
                raise WorkerDied(folder, names, codes) from None
            finished.add(result.index)
            yield result
    finally:
        if len(finished) < len(tasks):
            _stop(executor, processes)
            for task in tasks:
                if task.index not in finished:
                    tmp = Path(task.folder) / (shards.shard_name(task.index, task.num_shards) + ".tmp")
                    tmp.unlink(missing_ok=True)
        executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor, processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Cancels the tasks not started and ends the workers (they may be mid-shard), waiting for them."""
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    for process in processes:
        process.join()


# ---------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, required=True, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (created; resumed if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (0: this process)")
    parser.add_argument("--samples-per-shard", type=int, default=256)
    parser.add_argument(
        "--backgrounds",
        type=Path,
        default=None,
        help="folder of photos for backgrounds (its train or test part, by the domain; default: the "
        "domain's own, the photo bank or procedural textures)",
    )
    parser.add_argument(
        "--domain",
        default=PHOTO.name,
        help="image domain: photo (default), procedural, unseen or real_like; append "
        "-without-EFFECT[-EFFECT] to switch effects off (handshape_tf.data.domains)",
    )
    parser.add_argument(
        "--views",
        choices=VIEWS,
        default="full",
        help="camera views: full sphere (default) or frontal (palm or back towards the camera, fingers up +-60 deg)",
    )
    parser.add_argument("--preview", action="store_true", help="also write DIR/preview.png (a contact sheet)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from handshape_tf.data.photo_bank import PhotoBankError

    try:
        metadata = generate_dataset(
            args.out,
            args.num,
            seed=args.seed,
            image_size=args.size,
            workers=args.workers,
            samples_per_shard=args.samples_per_shard,
            progress=not args.quiet,
            backgrounds=args.backgrounds,
            views=args.views,
            domain=args.domain,
        )
    except (ValueError, OSError, PhotoBankError) as error:
        parser.exit(2, f"error: {error}\n")
    logger.info("%s: %d samples in %d shards", args.out, metadata["num_complete_samples"], len(metadata["shards"]))
    if args.preview:
        from handshape_tf.data.preview import write_preview

        path = write_preview(args.out, args.out / "preview.png")
        logger.info("preview: %s", path)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so spawned workers unpickle functions by their real name.
    from handshape_tf.data.synthetic import main as _main

    sys.exit(_main())
