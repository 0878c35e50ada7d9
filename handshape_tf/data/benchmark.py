"""Throughput of the synthetic dataset generator: samples/s with every output, written to shards.

Renders `num` samples into a temporary folder with `workers` processes (the same code path as
`generate_dataset`: sample parameters, pose, rasterization, shading, backgrounds, PNG encoding
and TFRecord writing) and reports:

  end_to_end: num / total wall time, including the workers' start-up (TensorFlow import,
    rasterizer load, first tf.function traces: a few seconds each);
  steady: samples completed after every worker finished its first shard, divided by the time
    that took: the rate of a long run;
  idle_machine_estimate: workers / (worker CPU seconds per sample) over those same shards:
    the steady rate the workers would reach with a core each to themselves.

The 1-minute load average before and after is reported too: other processes on the machine
slow the measured figures down (not the estimate, unless they share cache and memory bandwidth).

Command line: `python -m handshape_tf.data.benchmark [--num 512] [--size 256] [--workers 2]
[--samples-per-shard 32] [--backgrounds DIR] [--domain photo]` (`--domain procedural-without-camera-
occluders-skin_detail-extra_light-environment_light` renders without the sim-to-real effects).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handshape_tf.data import synthetic
from handshape_tf.data.domains import PHOTO, get_domain

logger = logging.getLogger(__name__)


def benchmark(
    num: int = 512,
    *,
    image_size: int = 256,
    workers: int = 2,
    samples_per_shard: int = 32,
    backgrounds: str | Path | None = None,
    seed: int = 0,
    domain: str = PHOTO.name,
) -> dict[str, Any]:
    """Measures generator throughput (see the module docstring).

    Args:
      num: samples to render.
      image_size: crop size in pixels.
      workers: processes (0: this process).
      samples_per_shard: shard size; several shards per worker are needed for `steady`.
      backgrounds: a photo folder, or None for the domain's own backgrounds.
      seed: dataset seed.
      domain: the image domain (`handshape_tf.data.domains.get_domain`).

    Returns:
      {"end_to_end", "steady", "idle_machine_estimate" (samples/s; the last two None with
      fewer shards than workers + 1), "seconds", "num", "image_size", "workers",
      "samples_per_shard", "domain", "load_before", "load_after"}.
    """
    for name, value, minimum in (("num", num, 1), ("samples_per_shard", samples_per_shard, 1), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} is {value!r}; expected an int >= {minimum}")
    num_shards = math.ceil(num / samples_per_shard)
    photos, split = synthetic.resolve_backgrounds(get_domain(domain), backgrounds)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="handshape-benchmark-") as folder:
        tasks = [
            synthetic.ShardTask(
                folder,
                i,
                num_shards,
                i * samples_per_shard,
                min(samples_per_shard, num - i * samples_per_shard),
                seed,
                image_size,
                photos,
                domain=domain,
                split=split,
            )
            for i in range(num_shards)
        ]
        start = time.perf_counter()
        results = [(time.perf_counter() - start, r) for r in synthetic.render_shards(tasks, workers)]
    total = results[-1][0]
    warm = max(workers, 1)
    steady = capacity = None
    if len(results) > warm:
        later = [r for _, r in results[warm:]]
        steady = sum(r.count for r in later) / (total - results[warm - 1][0])
        capacity = warm * sum(r.count for r in later) / sum(r.cpu_seconds for r in later)
    return {
        "end_to_end": num / total,
        "steady": steady,
        "idle_machine_estimate": capacity,
        "seconds": total,
        "num": num,
        "image_size": image_size,
        "workers": workers,
        "samples_per_shard": samples_per_shard,
        "domain": domain,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handshape_tf.data.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples-per-shard", type=int, default=32)
    parser.add_argument("--backgrounds", type=Path, default=None)
    parser.add_argument("--domain", default=PHOTO.name, help="image domain (default photo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = benchmark(
        args.num,
        image_size=args.size,
        workers=args.workers,
        samples_per_shard=args.samples_per_shard,
        backgrounds=args.backgrounds,
        domain=args.domain,
    )
    steady, idle = ("n/a" if result[k] is None else f"{result[k]:.1f}" for k in ("steady", "idle_machine_estimate"))
    logger.info(
        "%s domain, %d samples at %dx%d with %d workers: %.1f samples/s end to end (%.1f s), %s samples/s steady, "
        "%s samples/s on an idle machine (from CPU time); load average %.1f -> %.1f",
        result["domain"],
        result["num"],
        result["image_size"],
        result["image_size"],
        result["workers"],
        result["end_to_end"],
        result["seconds"],
        steady,
        idle,
        result["load_before"],
        result["load_after"],
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so spawned workers unpickle functions by their real name.
    from handshape_tf.data.benchmark import main as _main

    sys.exit(_main())
