"""Pseudo-ground-truth meshes of the training crops (the init model's, cached in the run)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from handshape_tf.geometry.heatmaps import render_heatmaps
from handshape_tf.models.network import ENCODER, HOURGLASS, MESH_DECODER
from train import checkpoints
from train.weak.config import InitRun, WeakConfig
from train.weak.data import heatmap_sigma, pad_batch, read_batch

logger = logging.getLogger(__name__)

PSEUDO_GT_DIR = "pseudo_gt"


def pseudo_gt_meshes(model, crops, config: WeakConfig, progress: bool = True) -> np.ndarray:
    """Meshes of the pretrained model fed ground-truth heat-maps (paper Sec. 4.4).

    The image goes through the model's own input normalisation and hourglass (inference mode);
    the encoder gets the heat-maps rendered at the 2D joints in place of the estimated ones,
    next to the hourglass features, and the mesh decoder turns its latent into a mesh.

    Returns:
      N x V x 3 float32 uvd meshes, one per sample of `crops`.
    """

    centre, hourglass = model.get_layer("centre"), model.get_layer(HOURGLASS)
    encoder, decoder = model.get_layer(ENCODER), model.get_layer(MESH_DECODER)
    size, side, sigma = config.model.image_size, config.model.heatmap_size, heatmap_sigma(config)

    @tf.function(autograph=False)
    def run(images, joints_uv):
        _, features = hourglass(centre(images), training=False)
        heatmaps = render_heatmaps(joints_uv / float(size), side, sigma)
        return decoder(encoder(heatmaps, features, training=False), training=False)

    batch_size = config.evaluation.batch_size
    parts = []
    for start in tqdm(range(0, len(crops), batch_size), desc="pseudo-GT meshes", disable=not progress):
        batch = read_batch(crops, np.arange(start, min(start + batch_size, len(crops))))
        count = len(batch["image"])
        images, joints_uv = (pad_batch(batch[key], batch_size) for key in ("image", "joints_uv"))
        parts.append(run(tf.constant(images, tf.float32) / 255.0, tf.constant(joints_uv)).numpy()[:count])
    return np.concatenate(parts).astype(np.float32)


def cached_pseudo_gt(
    run_dir: Path, model, init: InitRun, crops, config: WeakConfig, progress: bool = True
) -> np.ndarray:
    """`pseudo_gt_meshes`, stored in <run_dir>/pseudo_gt/ with what they were computed from and
    recomputed when that changes (another init model, data or heat-map sigma)."""
    folder = Path(run_dir) / PSEUDO_GT_DIR
    key = {
        "init": init.describe(),
        "data": str(Path(crops.folder).resolve()),
        "samples": len(crops),
        "heatmap_sigma": config.data.heatmap_sigma,
    }
    key_path, mesh_path = folder / "key.json", folder / "mesh_uvd.npy"
    if key_path.is_file() and mesh_path.is_file() and json.loads(key_path.read_text()) == key:
        return np.load(mesh_path)
    start = time.monotonic()
    meshes = pseudo_gt_meshes(model, crops, config, progress)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "mesh_uvd.tmp.npy"
    np.save(tmp, meshes)
    tmp.replace(mesh_path)
    checkpoints.write_json_atomically(key, key_path)
    logger.info("pseudo-GT meshes of %d samples in %.0f s -> %s", len(meshes), time.monotonic() - start, mesh_path)
    return meshes
