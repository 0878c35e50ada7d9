"""Full frames for the detector: composited hands, their boxes and sides, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from handshape_tf.data.backgrounds import BackgroundSource
from handshape_tf.data.domains import PHOTO
from handshape_tf.data.full_frames import FrameComposer, FrameConfig, HandPool, box_iou, mask_box, render_hand_pool


@pytest.fixture(scope="module")
def pool(fixture_photo_bank):
    from handshape_tf.data.renderer import HandRenderer

    renderer = HandRenderer(64, BackgroundSource(fixture_photo_bank / "train"), PHOTO.without("occluders"))
    return render_hand_pool(renderer, seed=3, count=6)


@pytest.fixture(scope="module")
def black_backgrounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("black")
    for index in range(2):
        cv2.imwrite(str(folder / f"black-{index}.png"), np.zeros((300, 300, 3), np.uint8))
    return BackgroundSource(folder)


def test_pool_holds_rendered_hands_and_round_trips(pool, tmp_path):
    assert pool.rgba.shape == (6, 64, 64, 4) and pool.rgba.dtype == np.uint8
    assert pool.joints_uv.shape == (6, 21, 2)
    assert all((pool.rgba[k, ..., 3] >= 128).sum() > 50 for k in range(len(pool)))
    pool.save(tmp_path / "pool.npz")
    again = HandPool.load(tmp_path / "pool.npz")
    assert np.array_equal(again.rgba, pool.rgba) and np.array_equal(again.is_left, pool.is_left)


def test_mask_box_and_iou_by_hand():
    alpha = np.zeros((10, 12), np.float32)
    alpha[2:5, 3:9] = 1.0
    alpha[6, 10] = 0.4  # below the threshold
    assert mask_box(alpha).tolist() == [3, 2, 6, 3]
    assert mask_box(np.zeros((4, 4))) is None
    assert box_iou([0, 0, 2, 2], [[1, 0, 2, 2], [5, 5, 1, 1]]).round(6).tolist() == [[round(2 / 6, 6), 0.0]]


def test_frames_are_deterministic_per_seed_and_index(pool, fixture_photo_bank):
    composer = FrameComposer(
        pool, BackgroundSource(fixture_photo_bank / "train"), PHOTO, FrameConfig(width=96, height=96)
    )
    first, again = composer.frame(5, 2), composer.frame(5, 2)
    other = composer.frame(5, 3)
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["boxes"], again["boxes"])
    assert not np.array_equal(first["image"], other["image"])


def test_boxes_are_the_visible_alpha_of_each_hand(pool, fixture_photo_bank):
    config = FrameConfig(
        width=128, height=96, hand_counts=(0.0, 0.0, 0.0, 1.0), distractors=(2, 4), distractors_in_front=0.5
    )
    composer = FrameComposer(pool, BackgroundSource(fixture_photo_bank / "train"), PHOTO, config)
    labelled = 0
    for index in range(6):
        frame = composer.frame(0, index, return_alpha=True)
        assert frame["image"].shape == (96, 128, 3)
        assert len(frame["boxes"]) == len(frame["is_left"]) == len(frame["joints_uv"]) == len(frame["alpha"]) <= 3
        for box, alpha in zip(frame["boxes"], frame["alpha"]):
            assert np.array_equal(mask_box(alpha), box)
            x0, y0, w, h = box.astype(int)
            assert x0 >= 0 and y0 >= 0 and x0 + w <= 128 and y0 + h <= 96
            labelled += 1
    assert labelled >= 10


def test_boxes_match_the_composited_pixels_over_black(pool, black_backgrounds):
    """Independent of the alpha bookkeeping: over a black background, without camera effects,
    distractors or forearms, the lit pixels of a one-hand frame are its box (up to the soft edge)."""
    config = FrameConfig(
        width=128,
        height=128,
        hand_counts=(0.0, 1.0),
        hand_size=(0.15, 0.3),
        distractors=(0, 0),
        forearm_probability=0.0,
        max_outside=0.0,
    )
    composer = FrameComposer(pool, black_backgrounds, PHOTO.without("camera"), config)
    for index in range(5):
        frame = composer.frame(1, index)
        assert len(frame["boxes"]) == 1
        lit = frame["image"].max(axis=-1) > 0
        rows, columns = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
        x0, y0, w, h = frame["boxes"][0]
        # The box holds the pixels of alpha >= 0.5; the lit area adds at most the soft edge (one
        # pixel of the 64 px crop, scaled about 1-1.5 times, plus bilinear interpolation).
        edge = 3
        assert columns[0] <= x0 and columns[-1] + 1 >= x0 + w and rows[0] <= y0 and rows[-1] + 1 >= y0 + h
        assert x0 - columns[0] <= edge and columns[-1] + 1 - (x0 + w) <= edge
        assert y0 - rows[0] <= edge and rows[-1] + 1 - (y0 + h) <= edge
        # The hand's joints lie on the hand: inside its box, up to a few pixels at fingertips.
        joints = frame["joints_uv"][0]
        assert np.all(joints[:, 0] >= x0 - 3) and np.all(joints[:, 0] <= x0 + w + 3)
        assert np.all(joints[:, 1] >= y0 - 3) and np.all(joints[:, 1] <= y0 + h + 3)


def test_mirroring_a_pool_hand_flips_its_side(pool, black_backgrounds):
    base = dict(width=96, height=96, hand_counts=(0.0, 1.0), distractors=(0, 0), forearm_probability=0.0)
    never = FrameComposer(pool, black_backgrounds, PHOTO, FrameConfig(mirror_probability=0.0, **base))
    always = FrameComposer(pool, black_backgrounds, PHOTO, FrameConfig(mirror_probability=1.0, **base))
    for index in range(4):
        a, b = never.frame(2, index), always.frame(2, index)
        assert len(a["is_left"]) == len(b["is_left"]) == 1
        assert a["is_left"][0] != b["is_left"][0]


def test_frames_without_hands_have_empty_labels(pool, fixture_photo_bank):
    composer = FrameComposer(
        pool,
        BackgroundSource(fixture_photo_bank / "train"),
        PHOTO,
        FrameConfig(width=64, height=64, hand_counts=(1.0,)),
    )
    frame = composer.frame(0, 0, return_alpha=True)
    assert frame["boxes"].shape == (0, 4) and frame["joints_uv"].shape == (0, 21, 2)
    assert frame["is_left"].shape == (0,) and frame["alpha"].shape == (0, 64, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 16}, "at least 32"),
        ({"hand_counts": (0.5, 0.2)}, "summing to 1"),
        ({"hand_size": (0.5, 0.2)}, "low <= high"),
        ({"distractors": (3, 1)}, "0 <= low <= high"),
    ],
)
def test_frame_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrameConfig(**kwargs)


def test_clip_hands_cross_keep_their_side_and_frames_are_reproducible(pool, fixture_photo_bank):
    composer = FrameComposer(
        pool, BackgroundSource(fixture_photo_bank / "test"), PHOTO, FrameConfig(width=128, height=96)
    )
    frames = composer.clip(seed=4, num_frames=12, num_hands=2, poses_per_hand=3)
    assert len(frames) == 12
    centres = {0: [], 1: []}
    for frame in frames:
        assert frame["image"].shape == (96, 128, 3) and len(frame["boxes"]) == len(frame["hand_ids"])
        for box, hand, left in zip(frame["boxes"], frame["hand_ids"], frame["is_left"]):
            assert bool(left) == (hand == 1)  # hand 0 is a right hand, hand 1 a left one, all along
            centres[int(hand)].append(box[0] + box[2] / 2)
    assert centres[0][0] < 50 < 78 < centres[0][-1] and centres[1][0] > 78 > 50 > centres[1][-1]  # they cross
    again = composer.clip(seed=4, num_frames=12, num_hands=2, poses_per_hand=3)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(frames, again))
    with pytest.raises(ValueError, match="expected each >= 1"):
        composer.clip(seed=4, num_frames=0)
