"""Tests of the external dataset readers on tiny fixtures written in each dataset's layout.

Every fixture stores known 3D joints in the dataset's own units, order and frame; the tests
recompute what the reader must return with independent formulas (cv2.Rodrigues, column-vector
camera maths, name-based joint maps) and hand-computed cases.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from handshape_tf.assets.template import KEYPOINT_NAMES, load_template
from handshape_tf.data.external import (
    PaperRealWorldDataset,
    PaperSyntheticDataset,
    RHDDataset,
    STBCalibration,
    STBDataset,
    open_dataset,
)
from handshape_tf.data.external import rhd as rhd_module
from handshape_tf.data.external import stb as stb_module
from handshape_tf.data.external.paper_synthetic import global_to_camera

UV_TOL = 1e-3  # pixels


def _hand(rng: np.random.Generator, centre, spread: float) -> np.ndarray:
    """21 x 3 random points around `centre`."""
    return np.asarray(centre, np.float64) + rng.uniform(-spread, spread, size=(21, 3))


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _project(xyz: np.ndarray, fx, fy, cx, cy) -> np.ndarray:
    return np.stack([fx * xyz[:, 0] / xyz[:, 2] + cx, fy * xyz[:, 1] / xyz[:, 2] + cy], axis=1)


def _check_common(sample: dict, crop_is_image: bool) -> None:
    """Schema, dtypes, projection, root depth, scale and crop box of one sample."""
    height, width = sample["image"].shape[:2]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape[2] == 3
    shapes = {"intrinsics": (4,), "joints_xyz": (21, 3), "joints_uv": (21, 2), "crop_box": (4,)}
    for key, shape in shapes.items():
        assert sample[key].dtype == np.float32 and sample[key].shape == shape, key
    xyz = sample["joints_xyz"].astype(np.float64)
    uv = _project(xyz, *sample["intrinsics"].astype(np.float64))
    np.testing.assert_allclose(sample["joints_uv"], uv, atol=UV_TOL)
    assert sample["root_depth"] == sample["joints_xyz"][0, 2]
    np.testing.assert_allclose(sample["scale"], np.linalg.norm(xyz[9] - xyz[10]), rtol=1e-6)
    x0, y0, w, h = sample["crop_box"]
    if crop_is_image:
        np.testing.assert_array_equal(sample["crop_box"], [0, 0, width, height])
    else:
        assert w == h > 0
        uv = sample["joints_uv"]
        assert np.all(uv[:, 0] >= x0) and np.all(uv[:, 0] <= x0 + w)
        assert np.all(uv[:, 1] >= y0) and np.all(uv[:, 1] <= y0 + h)
    assert isinstance(sample["is_left"], bool) and isinstance(sample["name"], str)


# ----------------------------------------------------------------------------------------- STB


def _finger_names(fingers: tuple[str, ...]) -> list[str]:
    return ["palm"] + [f"{finger}_{j}" for finger in fingers for j in range(4)]


STB_NAMES = _finger_names(("little", "ring", "middle", "index", "thumb"))  # the STB readme
PAPER_AS_STB = _finger_names(("thumb", "index", "middle", "ring", "little"))
# The readme calibration scaled to 64 x 48 images.
SMALL_STB = STBCalibration(
    color_intrinsics=(60.792271, 60.788192, 31.478337, 23.642484),
    depth_intrinsics=(47.562768, 47.477709, 33.641179, 23.877962),
    depth_size=(64, 48),
)
IDENTITY_STB = STBCalibration(
    color_intrinsics=(50.0, 50.0, 31.5, 23.5),
    depth_intrinsics=(50.0, 50.0, 31.5, 23.5),
    rotation_vector=(0.0, 0.0, 0.0),
    translation=(0.0, 0.0, 0.0),
    depth_size=(64, 48),
)


def _encode_stb_depth(depth_mm: np.ndarray) -> np.ndarray:
    """H x W integer mm -> BGR uint8 image with R = mm % 256, G = mm // 256 (the STB readme)."""
    depth_mm = depth_mm.astype(np.int64)
    bgr = np.stack([np.zeros_like(depth_mm), depth_mm // 256, depth_mm % 256], axis=-1)
    return bgr.astype(np.uint8)


def _write_stb(root: Path, rng, frames: dict[str, int], depth_mm: np.ndarray, images_dir=True):
    """STB fixture: returns {sequence: N x 21 x 3 joints in the depth frame, STB order, mm}."""
    labels = {}
    image_root = root / "images" if images_dir else root
    for sequence, count in frames.items():
        joints = np.stack([_hand(rng, (0.0, 10.0, 500.0), 60.0) for _ in range(count)])
        labels[sequence] = joints
        (root / "labels").mkdir(parents=True, exist_ok=True)
        for camera in ("SK", "BB"):
            path = root / "labels" / f"{sequence}_{camera}.mat"
            scipy.io.savemat(path, {"handPara": joints.transpose(2, 1, 0)})
        for frame in range(count):
            color = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            _write(image_root / sequence / f"SK_color_{frame}.png", color)
            _write(image_root / sequence / f"SK_depth_{frame}.png", _encode_stb_depth(depth_mm))
    return labels


def _expected_stb_joints(depth_xyz: np.ndarray, calibration: STBCalibration) -> np.ndarray:
    """21 x 3 colour-frame joints in paper order with the wrist root, from STB depth-frame joints."""
    rotation, _ = cv2.Rodrigues(np.array(calibration.rotation_vector))
    color = (rotation.T @ (depth_xyz - np.array(calibration.translation)).T).T
    paper = color[[STB_NAMES.index(name) for name in PAPER_AS_STB]]
    ring_mcp = color[STB_NAMES.index("ring_0")]
    paper[0] = ring_mcp + 2.0 * (color[STB_NAMES.index("palm")] - ring_mcp)
    return paper


@pytest.fixture
def stb_root(tmp_path):
    rng = np.random.default_rng(0)
    depth = np.zeros((48, 64), np.int64)
    depth[10:30, 20:40] = rng.integers(300, 1500, size=(20, 20))
    frames = {sequence: 2 if sequence.startswith("B1") else 1 for sequence in stb_module.SEQUENCES}
    labels = _write_stb(tmp_path / "STB", rng, frames, depth)
    return tmp_path / "STB", labels, depth


def test_stb_joints_units_order_projection_and_wrist(stb_root):
    root, labels, _ = stb_root
    data = STBDataset(root, split="test", calibration=SMALL_STB)
    assert len(data) == 4
    order = [("B1Counting", 0), ("B1Counting", 1), ("B1Random", 0), ("B1Random", 1)]
    for index, (sequence, frame) in enumerate(order):
        sample = data[index]
        _check_common(sample, crop_is_image=False)
        assert sample["name"] == f"images/{sequence}/SK_color_{frame}.png"
        assert sample["is_left"] is True
        expected = _expected_stb_joints(labels[sequence][frame], SMALL_STB)
        np.testing.assert_allclose(sample["joints_xyz"], expected, atol=1e-3)
        fx, fy, cx, cy = SMALL_STB.color_intrinsics
        np.testing.assert_allclose(sample["intrinsics"], [fx, fy, cx + 0.5, cy + 0.5], rtol=1e-6)
        # Independent projection: OpenCV maps depth-frame joints straight to colour pixels
        # (x_color = R^T x_depth - R^T t, integer pixel centres, hence + 0.5). The wrist is not
        # an STB joint, so only keypoints 1..20 are compared.
        rotation, _ = cv2.Rodrigues(np.array(SMALL_STB.rotation_vector))
        stb_in_paper_order = labels[sequence][frame][[STB_NAMES.index(n) for n in PAPER_AS_STB]]
        rvec = -np.array(SMALL_STB.rotation_vector)
        tvec = -rotation.T @ np.array(SMALL_STB.translation)
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        uv, _ = cv2.projectPoints(stb_in_paper_order, rvec, tvec, K, None)
        np.testing.assert_allclose(sample["joints_uv"][1:], uv[1:, 0] + 0.5, atol=UV_TOL)
        assert sample["depth"].shape == (48, 64) and sample["depth"].dtype == np.float32
    # Keypoint 0 is the palm centre moved to the wrist: ring_MCP + 2 (palm - ring_MCP).
    sample = data[0]
    rotation, _ = cv2.Rodrigues(np.array(SMALL_STB.rotation_vector))
    palm = rotation.T @ (labels["B1Counting"][0][0] - np.array(SMALL_STB.translation))
    ring_mcp = sample["joints_xyz"][13].astype(np.float64)
    np.testing.assert_allclose(sample["joints_xyz"][0], ring_mcp + 2 * (palm - ring_mcp), atol=1e-3)
    assert np.linalg.norm(sample["joints_xyz"][0] - palm) > 1.0


def test_stb_split_membership_and_sequences(stb_root):
    root, _, _ = stb_root
    train = STBDataset(root, split="train", with_depth=False, calibration=SMALL_STB)
    test = STBDataset(root, split="test", with_depth=False, calibration=SMALL_STB)
    assert len(train) == 10 and len(test) == 4
    train_sequences = {train[i]["name"].split("/")[1] for i in range(len(train))}
    assert train_sequences == {f"B{b}{kind}" for b in range(2, 7) for kind in ("Counting", "Random")}
    assert all(test[i]["name"].split("/")[1].startswith("B1") for i in range(len(test)))
    assert "depth" not in train[0]
    only = STBDataset(root, sequences=["B3Random"], calibration=SMALL_STB)
    assert len(only) == 1 and only[-1]["name"] == "images/B3Random/SK_color_0.png"
    with pytest.raises(IndexError, match="index 1 out of range"):
        only[1]


def test_stb_sequences_directly_under_root(tmp_path):
    rng = np.random.default_rng(1)
    labels = _write_stb(tmp_path, rng, {"B1Counting": 1}, np.full((48, 64), 700), images_dir=False)
    sample = STBDataset(tmp_path, sequences=["B1Counting"], calibration=SMALL_STB)[0]
    assert sample["name"] == "B1Counting/SK_color_0.png"
    expected = _expected_stb_joints(labels["B1Counting"][0], SMALL_STB)
    np.testing.assert_allclose(sample["joints_xyz"], expected, atol=1e-3)


def test_stb_depth_decoding_round_trip(stb_root, tmp_path):
    root, _, depth = stb_root
    # Identity calibration: registration is the identity, so the sample depth is the decoded PNG.
    sample = STBDataset(root, sequences=["B2Random"], calibration=IDENTITY_STB)[0]
    np.testing.assert_array_equal(sample["depth"], depth.astype(np.float32))
    encoded = _encode_stb_depth(np.array([[0, 1, 255, 256], [1234, 4095, 65535, 700]]))
    _write(tmp_path / "d.png", encoded)
    decoded = stb_module.decode_depth(cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(decoded, [[0, 1, 255, 256], [1234, 4095, 65535, 700]])


def test_stb_depth_registration_hand_computed():
    calibration = SMALL_STB
    depth = np.zeros((48, 64), np.float32)
    depth[20, 30] = 500.0
    color_k = calibration.continuous(calibration.color_intrinsics)
    depth_k = calibration.continuous(calibration.depth_intrinsics)
    registered = stb_module.register_depth(
        depth, depth_k, color_k, calibration.rotation, np.array(calibration.translation), (48, 64)
    )
    fx_d, fy_d, cx_d, cy_d = depth_k
    point = np.array([(30.5 - cx_d) / fx_d * 500, (20.5 - cy_d) / fy_d * 500, 500.0])
    rotation, _ = cv2.Rodrigues(np.array(calibration.rotation_vector))
    color = rotation.T @ (point - np.array(calibration.translation))
    u = color_k[0] * color[0] / color[2] + color_k[2]
    v = color_k[1] * color[1] / color[2] + color_k[3]
    rows, cols = np.nonzero(registered)
    assert 1 <= len(rows) <= 4
    assert registered[int(v), int(u)] == pytest.approx(color[2], abs=1e-3)
    np.testing.assert_allclose(registered[rows, cols], color[2], atol=1e-3)
    assert np.all(np.abs(cols + 0.5 - u) < 1.0) and np.all(np.abs(rows + 0.5 - v) < 1.0)


def test_stb_depth_registration_nearest_wins():
    # Colour camera at half the depth resolution: depth pixels (10..11, 10..11) share colour (5, 5).
    depth = np.zeros((48, 64), np.float32)
    depth[10:12, 10:12] = [[500.0, 400.0], [600.0, 700.0]]
    depth_k, color_k = np.array([40.0, 40.0, 32.0, 24.0]), np.array([20.0, 20.0, 16.0, 12.0])
    registered = stb_module.register_depth(depth, depth_k, color_k, np.eye(3), np.zeros(3), (24, 32))
    assert registered[5, 5] == 400.0
    assert np.count_nonzero(registered) == 1


def test_stb_depth_registration_footprint_fills_finer_colour_grid():
    # Colour camera at twice the depth resolution: each depth pixel covers 2 x 2 colour pixels.
    registered = stb_module.register_depth(
        np.full((24, 32), 500.0, np.float32),
        np.array([20.0, 20.0, 16.0, 12.0]),
        np.array([40.0, 40.0, 32.0, 24.0]),
        np.eye(3),
        np.zeros(3),
        (48, 64),
    )
    np.testing.assert_array_equal(registered, np.full((48, 64), 500.0, np.float32))


def test_stb_bad_inputs(stb_root, tmp_path):
    root, _, _ = stb_root
    with pytest.raises(FileNotFoundError, match="STB root folder not found.*nowhere"):
        STBDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be one of.*'val'"):
        STBDataset(root, split="val")
    with pytest.raises(ValueError, match="unknown STB sequences.*B7Counting"):
        STBDataset(root, sequences=["B7Counting"])
    (root / "labels" / "B4Counting_SK.mat").unlink()
    for path in (root / "images" / "B3Random").iterdir():
        path.unlink()
    (root / "images" / "B3Random").rmdir()
    with pytest.raises(FileNotFoundError, match=r"B3Random.*B4Counting_SK\.mat"):
        STBDataset(root, split="train")
    STBDataset(root, split="test")  # B1 is complete
    scipy.io.savemat(root / "labels" / "B2Counting_SK.mat", {"handPara": np.zeros((3, 20, 1))})
    with pytest.raises(ValueError, match=r"handPara has shape \(3, 20, 1\); expected \(3, 21, N\)"):
        STBDataset(root, sequences=["B2Counting"])

    data = STBDataset(root, sequences=["B1Counting"], calibration=SMALL_STB)
    depth_path = root / "images" / "B1Counting" / "SK_depth_0.png"
    _write(depth_path, np.full((48, 64), 500, np.uint16))
    expected = r"expected uint8 with shape \(48, 64, 3\)"
    with pytest.raises(ValueError, match=r"got dtype uint16 and shape \(48, 64\); " + expected):
        data[0]
    _write(depth_path, np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"got dtype uint8 and shape \(24, 32, 3\); " + expected):
        data[0]
    color_path = root / "images" / "B1Counting" / "SK_color_1.png"
    color_path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(str(color_path))):
        data[1]
    color_path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(color_path))):
        data[1]


# ----------------------------------------------------------------------------------------- RHD

RHD_K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])


def _rhd_paper_index(k: int) -> int:
    """RHD index (within a hand) of paper keypoint k: fingers are stored tip first."""
    if k == 0:
        return 0
    finger, position = divmod(k - 1, 4)
    return 1 + 4 * finger + (3 - position)


def _encode_rhd_depth(codes: np.ndarray) -> np.ndarray:
    """H x W 16-bit codes -> BGR uint8 image with R = top byte, G = bottom byte (RHD readme)."""
    codes = np.asarray(codes, np.int64)
    return np.stack([np.zeros_like(codes), codes % 256, codes // 256], -1).astype(np.uint8)


def _write_rhd(root: Path, split: str, rng, masks, visible, depth_codes):
    """RHD fixture with one image per mask; returns the annotations (xyz in metres)."""
    annotations = {}
    folder = root / split
    for sample_id, (mask, vis) in enumerate(zip(masks, visible)):
        left, right = _hand(rng, (-0.05, 0.0, 0.5), 0.04), _hand(rng, (0.05, 0.0, 0.5), 0.04)
        xyz = np.concatenate([left, right])
        uv = _project(xyz, RHD_K[0, 0], RHD_K[1, 1], RHD_K[0, 2], RHD_K[1, 2])
        annotations[sample_id] = {
            "xyz": xyz.astype(np.float32),
            "uv_vis": np.concatenate([uv, vis[:, None]], axis=1).astype(np.float32),
            "K": RHD_K.astype(np.float32),
        }
        name = f"{sample_id:05d}.png"
        _write(folder / "color" / name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        _write(folder / "mask" / name, mask.astype(np.uint8))
        _write(folder / "depth" / name, _encode_rhd_depth(depth_codes))
    with open(folder / f"anno_{split}.pickle", "wb") as stream:
        pickle.dump(annotations, stream, protocol=2)
    return annotations


@pytest.fixture
def rhd_root(tmp_path):
    rng = np.random.default_rng(2)
    masks = []
    for left_pixels, right_pixels in ((300, 50), (40, 200), (100, 100)):
        mask = np.zeros((64, 64), np.uint8)
        mask[:5] = 1  # person
        mask.flat[320 : 320 + left_pixels] = rng.integers(2, 18, left_pixels)
        mask.flat[1000 : 1000 + right_pixels] = rng.integers(18, 34, right_pixels)
        masks.append(mask)
    visible = [np.ones(42), np.ones(42), np.concatenate([np.ones(21), np.zeros(21)])]
    depth_mm = rng.uniform(100, 4900, (64, 64))
    codes = np.round(depth_mm / 5000 * 65535)
    annotations = _write_rhd(tmp_path / "RHD", "training", rng, masks, visible, codes)
    _write_rhd(tmp_path / "RHD", "evaluation", rng, masks[:2], visible[:2], codes)
    return tmp_path / "RHD", annotations, masks, codes


def test_rhd_hand_selection_order_units_projection_depth(rhd_root):
    root, annotations, masks, codes = rhd_root
    data = RHDDataset(root, split="training")
    assert len(data) == 3
    for index, expect_left in enumerate((True, False, True)):
        sample = data[index]
        _check_common(sample, crop_is_image=False)
        assert sample["is_left"] is expect_left
        assert sample["name"] == f"training/color/{index:05d}.png"
        rows = [(0 if expect_left else 21) + _rhd_paper_index(k) for k in range(21)]
        xyz_m, uv_vis = annotations[index]["xyz"], annotations[index]["uv_vis"]
        np.testing.assert_allclose(sample["joints_xyz"], xyz_m[rows] * 1000.0, rtol=1e-6)
        np.testing.assert_allclose(sample["intrinsics"], [60, 60, 32, 32])
        np.testing.assert_allclose(sample["joints_uv"], uv_vis[rows, :2], atol=UV_TOL)
        labels = masks[index]
        hand = (labels >= 2) & (labels <= 17) if expect_left else labels >= 18
        np.testing.assert_array_equal(sample["mask"], hand)
        np.testing.assert_allclose(sample["depth"], codes / 65535 * 5000, atol=1e-3)
    assert KEYPOINT_NAMES[4] == "thumb_tip" and _rhd_paper_index(4) == 1  # paper thumb tip <- RHD 1
    forced = RHDDataset(root, split="training", hand="right", with_depth=False)
    assert [forced[i]["is_left"] for i in range(3)] == [False, False, False]
    assert "depth" not in forced[0]
    assert len(RHDDataset(root, split="evaluation")) == 2


def test_rhd_bad_inputs(rhd_root, tmp_path):
    root, _, _, _ = rhd_root
    with pytest.raises(ValueError, match="RHD hand must be one of.*'both'"):
        RHDDataset(root, hand="both")
    with pytest.raises(ValueError, match="RHD split must be one of.*'test'"):
        RHDDataset(root, split="test")
    with pytest.raises(FileNotFoundError, match="RHD root folder not found"):
        RHDDataset(tmp_path / "missing")
    (root / "evaluation" / "anno_evaluation.pickle").unlink()
    with pytest.raises(FileNotFoundError, match=r"anno_evaluation\.pickle"):
        RHDDataset(root, split="evaluation")
    data = RHDDataset(root)
    _write(root / "training" / "depth" / "00001.png", np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"depth image .*00001\.png: got dtype uint8 and shape \(32, 64"):
        data[1]
    (root / "training" / "color" / "00002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cannot decode image .*00002\.png"):
        data[2]
    with open(root / "training" / "anno_training.pickle", "wb") as stream:
        pickle.dump({0: {"xyz": np.zeros((21, 3)), "uv_vis": np.zeros((42, 3)), "K": np.eye(3)}}, stream)
    with pytest.raises(ValueError, match=r"sample 0 xyz has shape \(21, 3\); expected \(42, 3\)"):
        RHDDataset(root)


def test_rhd_depth_decoding_round_trip(tmp_path):
    mm = np.array([[0.0, 1.0, 250.5, 1000.0], [2500.0, 4999.9, 5000.0, 12.345]])
    codes = np.round(mm / 5000 * 65535).astype(np.int64)
    _write(tmp_path / "d.png", _encode_rhd_depth(codes))
    decoded = rhd_module.decode_depth(cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED))
    np.testing.assert_allclose(decoded, mm, atol=5000 / 65535 / 2 + 1e-4)


# ----------------------------------------------------------------------------- paper synthetic


def _maya_orientation(degrees: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation of Maya xyz Euler angles: Rz @ Ry @ Rx, from elementary matrices."""
    a, b, c = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _look_at_origin(rng, distance_cm: float) -> np.ndarray:
    """(7,) camPosition row: focal, Maya camera position (cm) and xyz Euler angles (deg)."""
    angles = rng.uniform(-60, 60, 3)
    position = distance_cm * _maya_orientation(angles)[:, 2]  # it looks down local -z: at 0
    return np.concatenate([[rng.uniform(200, 300)], position, angles])


def _camera_frame_mm(points_cm: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Column-vector form: OpenCV = diag(1, -1, -1) R_maya^T (p - t), times 10."""
    local = _maya_orientation(camera[4:]).T @ (points_cm - camera[1:4]).T
    return (np.diag([1.0, -1.0, -1.0]) @ local).T * 10.0


OBJ_TEXT = """# This file uses centimeters as units for non-parametric coordinates.
v 1.0 2.0 3.0
v 9.0 9.0 9.0
v 8.0 8.0 8.0
v -1.0 0.5 2.0
v 0.0 0.0 1.0
vt 0.1 0.2
vn 0.0 0.0 1.0
v 100.0 100.0 100.0
f 1/1/1 2/1/1 3/1/1
v 200.0 200.0 200.0
"""


@pytest.fixture
def synthetic_root(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "synthetic_train_val"
    cameras = np.round([[_look_at_origin(rng, 60.0) for _ in range(6)] for _ in range(2)], 6)
    gestures = np.round([_hand(rng, (0.0, 0.0, 0.0), 8.0) for _ in range(2)], 6)  # G x 21 x 3, cm
    labels = root / "3D_labels"
    labels.mkdir(parents=True)

    def table(prefix: str, values: np.ndarray) -> str:  # gesture-major rows "<name> v1 v2 ..."
        return "".join(
            f"{prefix}{i + 1:02d} " + " ".join(f"{x:.6f}" for x in row) + "\n"
            for gesture in values
            for i, row in enumerate(gesture)
        )

    (labels / "camPosition.txt").write_text(table("cam", cameras))
    (labels / "handGestures.txt").write_text(table("joint", gestures))
    (labels / "val-camera.txt").write_text("cam06\ncam12\ncam20\ncam21\n")
    (root / "hand_3D_mesh").mkdir()
    for gesture in range(2):
        (root / "hand_3D_mesh" / f"0214_lowP_vn_g.{gesture + 1:04d}.obj").write_text(OBJ_TEXT)
    for camera in ("cam01", "cam02", "cam06"):
        for gesture in range(2):
            rgba = np.zeros((40, 48, 4), np.uint8)
            rgba[..., :3] = (10, 20, 30)  # BGR as written by OpenCV
            rgba[5:30, 10:40, 3] = 255
            name = f"handV2_rgt01_specTest5_gPoses_ren_25cRrRs_l01_{camera}_.{gesture + 1:04d}.png"
            _write(root / "images" / "l01" / camera / name, rgba)
    return root, cameras, gestures


def test_global_to_camera_hand_computed():
    # Camera at z = 100 cm, no rotation: looks down -z at the origin, y up.
    camera = np.array([250.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0])
    points = global_to_camera(np.array([[1.0, 2.0, 0.0]]), camera)
    np.testing.assert_allclose(points, [[10.0, -20.0, 1000.0]], atol=1e-9)
    # Camera at x = 100 cm turned 90 degrees about y: looks down -x, its right is world -z.
    camera = np.array([250.0, 100.0, 0.0, 0.0, 0.0, 90.0, 0.0])
    points = global_to_camera(np.array([[0.0, 0.0, 5.0]]), camera)
    np.testing.assert_allclose(points, [[-50.0, 0.0, 1000.0]], atol=1e-9)


def test_paper_synthetic_split_transform_mask_and_mesh(synthetic_root):
    root, cameras, gestures = synthetic_root
    train = PaperSyntheticDataset(root, split="train", arm_vertex_range=(1, 3), hand="right")
    val = PaperSyntheticDataset(root, split="val", arm_vertex_range=(1, 3), hand="right")
    assert len(train) == 4 and len(val) == 2
    assert all("/cam06/" in val[i]["name"] for i in range(2))
    assert all("/cam06/" not in train[i]["name"] for i in range(4))
    for data in (train, val):
        for index in range(len(data)):
            sample = data[index]
            _check_common(sample, crop_is_image=True)
            camera_number, gesture_number = re.search(r"cam(\d+)_\.(\d+)", sample["name"]).groups()
            camera = cameras[int(gesture_number) - 1, int(camera_number) - 1]
            expected = _camera_frame_mm(gestures[int(gesture_number) - 1], camera)
            assert np.all(expected[:, 2] > 0)
            np.testing.assert_allclose(sample["joints_xyz"], expected, atol=1e-3)
            np.testing.assert_allclose(sample["intrinsics"], [camera[0], camera[0], 24, 20], rtol=1e-6)
            np.testing.assert_array_equal(sample["image"][0, 0], [30, 20, 10])
            mask = sample["mask"]
            assert mask.sum() == 25 * 30 and mask[5, 10] and not mask[4, 10]
            mesh = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0], [0.0, 0.0, 1.0]])  # 1, 2 dropped
            vertices = _camera_frame_mm(mesh, camera)
            np.testing.assert_allclose(sample["vertices_xyz"], vertices, atol=1e-3)
            assert sample["is_left"] is False


def test_paper_synthetic_bad_inputs(synthetic_root):
    root, _, _ = synthetic_root
    with pytest.raises(ValueError, match=r"cannot drop range \[473, 529\)"):
        PaperSyntheticDataset(root)[0]
    with pytest.raises(ValueError, match="split must be one of.*'test'"):
        PaperSyntheticDataset(root, split="test")
    bad = root / "images" / "l01" / "cam01" / "hand.png"
    _write(bad, np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"hand\.png; expected it to end in _camMM_\.NNNN\.png"):
        PaperSyntheticDataset(root)
    bad.unlink()
    # Sorted first in cam02, after the two cam01 images: training sample 2.
    corrupt = root / "images" / "l01" / "cam02" / "a_l01_cam02_.0001.png"
    corrupt.write_bytes(b"garbage")
    data = PaperSyntheticDataset(root, with_mesh=False)
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image {corrupt}")):
        data[2]
    corrupt.unlink()
    camera_file = root / "3D_labels" / "camPosition.txt"
    lines = camera_file.read_text().splitlines()
    camera_file.write_text("\n".join(lines[:3] + ["cam04 1 2 3"] + lines[4:]))
    with pytest.raises(ValueError, match=r"txt:4: got 'cam04 1 2 3'; expected a name and 7 numbers"):
        PaperSyntheticDataset(root)
    camera_file.write_text("\n".join(lines[:-1]))
    with pytest.raises(ValueError, match="11 rows with 6 distinct camera names"):
        PaperSyntheticDataset(root)
    camera_file.unlink()
    with pytest.raises(FileNotFoundError, match="camera parameter file not found.*camPosition.txt"):
        PaperSyntheticDataset(root)
    for path in (root / "hand_3D_mesh").iterdir():
        path.unlink()
    (root / "hand_3D_mesh").rmdir()
    with pytest.raises(FileNotFoundError, match="synthetic mesh folder not found.*hand_3D_mesh"):
        PaperSyntheticDataset(root)


# ---------------------------------------------------------------------------- paper real world


@pytest.fixture
def real_world_root(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "real_world_testset"
    joints_cm = np.stack([_hand(rng, (0.0, 0.0, 45.0), 6.0) for _ in range(2)])
    cam_param = np.array([[615.0, 612.0, 321.0, 238.0], [615.0, 612.0, 321.0, 238.0]])
    boxes = []
    for i in range(2):
        uv = _project(joints_cm[i], *cam_param[i]) + 0.5  # continuous full-frame pixels
        low, high = np.floor(uv.min(0)) - 10, np.ceil(uv.max(0)) + 10
        side = float((high - low).max())
        boxes.append([low[0], low[1], side, side])
        _write(root / "images" / f"{i:05d}.jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        (root / "real_hand_3D_mesh").mkdir(parents=True, exist_ok=True)
        (root / "real_hand_3D_mesh" / f"{i:05d}.obj").write_text(OBJ_TEXT)
    params = {
        "image_path": np.array(["images/00000.jpg", "images/00001.jpg"]),  # a char matrix
        "cam_param": cam_param,
        "bbox": np.array(boxes),
        "pose_root": joints_cm[:, 0],
        "pose_scale": np.linalg.norm(joints_cm[:, 9] - joints_cm[:, 10], axis=1)[:, None],
    }
    scipy.io.savemat(root / "params.mat", params)
    scipy.io.savemat(root / "pose_gt.mat", {"pose_gt": joints_cm})
    return root, joints_cm, cam_param, np.array(boxes)


def test_paper_real_world_crop_intrinsics_units_and_mesh(real_world_root):
    root, joints_cm, cam_param, boxes = real_world_root
    data = PaperRealWorldDataset(root, with_mesh=True, arm_vertex_range=None)
    assert len(data) == 2
    for i in range(2):
        sample = data[i]
        _check_common(sample, crop_is_image=True)
        assert sample["name"] == f"images/{i:05d}.jpg" and sample["image"].shape == (32, 32, 3)
        np.testing.assert_allclose(sample["joints_xyz"], joints_cm[i] * 10.0, rtol=1e-6)
        full_uv = _project(joints_cm[i], *cam_param[i]) + 0.5
        crop_uv = (full_uv - boxes[i, :2]) * 32.0 / boxes[i, 2:]
        np.testing.assert_allclose(sample["joints_uv"], crop_uv, atol=UV_TOL)
        assert np.all((crop_uv > 0) & (crop_uv < 32))
        assert sample["vertices_xyz"].shape == (5, 3)
        np.testing.assert_allclose(sample["vertices_xyz"][0], [10.0, 20.0, 30.0])
    assert "vertices_xyz" not in PaperRealWorldDataset(root)[0]


def test_paper_real_world_cell_array_paths_and_bad_inputs(real_world_root, tmp_path):
    root, joints_cm, cam_param, boxes = real_world_root
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0], cells[1, 0] = "images/00000.jpg", "images/00001.jpg "
    params = {"image_path": cells, "cam_param": cam_param[:1], "bbox": boxes}  # one shared camera
    scipy.io.savemat(root / "params.mat", params)
    data = PaperRealWorldDataset(root)
    assert data[1]["name"] == "images/00001.jpg"
    (root / "images" / "00001.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(ValueError, match=r"cannot decode image .*00001\.jpg"):
        data[1]
    scipy.io.savemat(root / "pose_gt.mat", {"pose_gt": joints_cm[:1]})
    with pytest.raises(ValueError, match=r"pose_gt has shape \(1, 21, 3\); expected \(2, 21, 3\)"):
        PaperRealWorldDataset(root)
    scipy.io.savemat(root / "params.mat", {"image_path": cells, "cam_param": cam_param})
    with pytest.raises(ValueError, match=r"missing arrays \['bbox'\]"):
        PaperRealWorldDataset(root)
    (root / "pose_gt.mat").unlink()
    with pytest.raises(FileNotFoundError, match="real-world pose_gt.mat not found"):
        PaperRealWorldDataset(root)


# ------------------------------------------------------------------------------- open_dataset


def test_open_dataset_detects_each_layout(stb_root, rhd_root, synthetic_root, real_world_root, tmp_path):
    assert isinstance(open_dataset(stb_root[0], split="test", calibration=SMALL_STB), STBDataset)
    assert isinstance(open_dataset(rhd_root[0]), RHDDataset)
    evaluation = open_dataset(rhd_root[0] / "evaluation")
    assert isinstance(evaluation, RHDDataset) and evaluation.split == "evaluation"
    assert len(evaluation) == 2
    assert isinstance(open_dataset(synthetic_root[0], with_mesh=False), PaperSyntheticDataset)
    assert isinstance(open_dataset(real_world_root[0]), PaperRealWorldDataset)
    (tmp_path / "empty").mkdir()
    layouts = r"camPosition\.txt.*params\.mat.*_SK\.mat.*anno_training\.pickle"
    with pytest.raises(ValueError, match="matches no known dataset layout; expected one of: .*" + layouts):
        open_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        open_dataset(tmp_path / "nothing here")


def test_paper_sets_take_the_side_of_their_skeletons(real_world_root, caplog):
    """hand="auto": the side most ground-truth skeletons have (geometry.chirality), logged."""
    root, _, _, _ = real_world_root
    template = load_template().keypoints * 100.0 + [0.0, 0.0, 45.0]  # cm, 45 cm in front
    for skeleton, expect_left in ((template, False), (template * [-1.0, 1.0, 1.0], True)):
        scipy.io.savemat(root / "pose_gt.mat", {"pose_gt": np.stack([skeleton, skeleton])})
        with caplog.at_level(logging.INFO, logger="handshape_tf.data.external"):
            data = PaperRealWorldDataset(root)
        assert data.is_left is expect_left and data[1]["is_left"] is expect_left
        assert f"{'left' if expect_left else 'right'} hands by their ground-truth joints (100% agree)" in caplog.text
        assert PaperRealWorldDataset(root, hand="right")[0]["is_left"] is False
    with pytest.raises(ValueError, match="hand must be one of .*received 'both'"):
        PaperRealWorldDataset(root, hand="both")
