"""Exports: SavedModel / TFLite / ONNX match Keras, builtin ops only, atomic failures, benchmark."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from export import benchmark, common, parity
from export import onnx as onnx_export
from export import saved_model as saved_model_export
from export import tflite as tflite_export
from handshape_tf.inference.backends import KerasBackend, TFLiteBackend

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, spread_tiny_model):
    """(model, its .keras path, 3 procedural 64 x 64 crops, Keras outputs on them)."""
    model = spread_tiny_model
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    crops = common.sample_crops(64, None, 3)
    return model, path, crops, KerasBackend(model).run(crops)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


# --- parity numbers -------------------------------------------------------------------------


def test_compare_in_pixels_and_millimetres():
    reference = {"mesh_uvd": np.zeros((2, 4, 3)), "pose_uvd": np.zeros((2, 21, 3))}
    mesh = np.zeros((2, 4, 3))
    mesh[1, 2] = [0.03, 0.04, -0.1]  # |(du, dv)| = 0.05 -> 5 px at S = 100; |dd| = 0.1 bone
    candidate = {"mesh_uvd": mesh, "pose_uvd": np.zeros((2, 21, 3))}
    mesh_diff, pose_diff = parity.compare(reference, candidate, image_size=100)
    bone_mm = parity.nominal_scale_mm()
    assert bone_mm == pytest.approx(46.89, abs=0.01)
    assert mesh_diff.max_uv_px == pytest.approx(5.0)
    assert mesh_diff.mean_uv_px == pytest.approx(5.0 / 8)
    assert mesh_diff.max_d_mm == pytest.approx(0.1 * bone_mm)
    assert mesh_diff.mean_d_mm == pytest.approx(0.1 * bone_mm / 8)
    assert (pose_diff.max_uv_px, pose_diff.max_d_mm) == (0.0, 0.0)
    problems = parity.violations([mesh_diff, pose_diff], parity.TOLERANCES["int8"])
    assert problems == []
    problems = parity.violations([mesh_diff, pose_diff], parity.TOLERANCES["fp16"])
    assert problems == [
        "mesh_uvd max_uv_px = 5 > 0.4",  # bounds in pixels: 4e-3 and 1e-3 of the 100 px crop
        "mesh_uvd mean_uv_px = 0.625 > 0.1",
        "mesh_uvd max_d_mm = 4.689 > 1",
        "mesh_uvd mean_d_mm = 0.5861 > 0.25",
    ]


def test_compare_rejects_nan_and_mismatched_outputs():
    reference = {"mesh_uvd": np.zeros((1, 4, 3)), "pose_uvd": np.zeros((1, 21, 3))}
    broken = {"mesh_uvd": np.full((1, 4, 3), np.nan), "pose_uvd": np.zeros((1, 21, 3))}
    assert len(parity.violations(parity.compare(reference, broken, 64), parity.TOLERANCES["int8"])) == 4
    with pytest.raises(ValueError, match=r"shapes \(1, 4, 3\) and \(1, 5, 3\); expected the same B x P x 3"):
        parity.compare(reference, {**reference, "mesh_uvd": np.zeros((1, 5, 3))}, 64)
    with pytest.raises(ValueError, match="expected both to contain 'pose_uvd'"):
        parity.compare(reference, {"mesh_uvd": np.zeros((1, 4, 3))}, 64)


# --- atomic writes and sample crops -----------------------------------------------------------


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="conversion broke"):
        with common.atomic_output(target) as partial:
            partial.write_text("half")
            raise RuntimeError("conversion broke")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    with common.atomic_output(target) as partial:
        partial.write_text("new")
    assert target.read_text() == "new" and _leftovers(tmp_path) == []
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with common.atomic_output(empty) as partial:
        partial.mkdir()
        (partial / "saved_model.pb").write_text("fresh")
    assert sorted(p.name for p in empty.iterdir()) == ["saved_model.pb"] and _leftovers(tmp_path) == []
    with pytest.raises(common.ExportError, match="wrote nothing"):
        with common.atomic_output(tmp_path / "empty.onnx"):
            pass


def _user_folder(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "photo.jpg").write_bytes(b"jpeg")
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_atomic_output_never_deletes_a_directory(tmp_path):
    folder = tmp_path / "victim"
    before = _user_folder(folder)
    for make in (lambda partial: partial.write_text("export"), lambda partial: partial.mkdir()):
        with pytest.raises(common.ExportError, match="victim"):
            with common.atomic_output(folder) as partial:
                make(partial)
        assert {p.name: p.read_text() for p in folder.iterdir()} == before and _leftovers(tmp_path) == []
    target = tmp_path / "model.tflite"
    target.write_text("old")
    with pytest.raises(common.ExportError, match="model.tflite is an existing file"):
        with common.atomic_output(target) as partial:
            partial.mkdir()
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_file_export_refuses_an_existing_directory(tiny, tmp_path, capsys):
    _, path, _, _ = tiny
    folder = tmp_path / "victim"
    before = _user_folder(folder)
    for exporter in (tflite_export, onnx_export):
        assert exporter.main(["--model", str(path), "--out", str(folder)]) == 2
        assert f"--out {folder} is an existing directory; expected a file path" in capsys.readouterr().err
        assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_saved_model_output_adds_a_version_and_refuses_the_rest(tmp_path):
    assert common.saved_model_output(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert common.saved_model_output(tmp_path / "empty") == tmp_path / "empty"
    base = tmp_path / "base"
    for version in ("1", "2", "10"):
        (base / version).mkdir(parents=True)
    (base / "README").write_text("notes")
    assert common.saved_model_output(base) == base / "11"
    (base / "10" / "saved_model.pb").write_bytes(b"pb")
    with pytest.raises(common.ExportError, match=r"already holds a SavedModel; pass its base folder \(.*base\)"):
        common.saved_model_output(base / "10")
    _user_folder(tmp_path / "victim")
    with pytest.raises(common.ExportError, match="non-empty directory \\(2 entries\\) without numbered versions"):
        common.saved_model_output(tmp_path / "victim")
    with pytest.raises(common.ExportError, match="is an existing file"):
        common.saved_model_output(base / "README")


@pytest.mark.parametrize("layout", ["versioned base", "folder of files"])
def test_saved_model_cli_keeps_existing_versions_and_files(tiny, saved_model_dir, tmp_path, capsys, layout):
    _, path, _, _ = tiny
    base = tmp_path / "handshape"
    if layout == "versioned base":
        for version in ("1", "2"):
            (base / version).mkdir(parents=True)
            (base / version / "saved_model.pb").write_bytes((saved_model_dir / "saved_model.pb").read_bytes())
    else:
        _user_folder(base)
    before = {p.relative_to(base): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    if layout == "versioned base":
        saved_model_export.main(["--model", str(path), "--out", str(base), "--verify-count", "2"])
        assert f"wrote {base / '3'}" in capsys.readouterr().out
        assert (base / "3" / "saved_model.pb").is_file()
    else:
        assert saved_model_export.main(["--model", str(path), "--out", str(base)]) == 2
        assert "without numbered versions" in capsys.readouterr().err
    assert {p: base.joinpath(p).read_bytes() for p in before} == before


def test_sample_crops_from_images_and_fallback(tmp_path):
    import cv2

    fallback = common.sample_crops(32, None, 3)
    assert fallback.shape == (3, 32, 32, 3) and fallback.dtype == np.uint8
    np.testing.assert_array_equal(fallback, common.sample_crops(32, None, 3))  # deterministic
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 2] = 255  # BGR red
    cv2.imwrite(str(tmp_path / "red.png"), wide)
    (crop,) = common.sample_crops(16, tmp_path, 5)
    # Centred square of side 40: rows 0-3 and 12-15 are padding, the middle is red (RGB).
    assert crop.shape == (16, 16, 3)
    np.testing.assert_array_equal(crop[8, 8], [255, 0, 0])
    np.testing.assert_array_equal(crop[0, 8], [0, 0, 0])
    with pytest.raises(common.ExportError, match="does not exist"):
        common.sample_crops(16, tmp_path / "missing", 2)


def test_sample_crops_from_a_shard_folder(tmp_path):
    from handshape_tf.data import shards

    samples = []
    for index in range(3):
        image = np.full((48, 48, 3), 60 * index, np.uint8)
        samples.append(
            {
                "image": image,
                "image_rgba": np.zeros((48, 48, 4), np.uint8),
                "mask": np.zeros((48, 48), bool),
                "depth": np.zeros((48, 48), np.float32),
                "joints_uv": np.zeros((21, 2)),
                "joints_xyz": np.zeros((21, 3)),
                "vertices_xyz": np.zeros((5, 3)),
                "intrinsics": np.ones(4),
                "root_depth": 500.0,
                "scale": 30.0,
                "is_left": False,
                "pose": np.zeros(2),
                "shape": np.zeros(1),
                "camera": np.eye(4),
            }
        )
    name = shards.shard_name(0, 1)
    shards.write_shard(tmp_path / name, samples)
    shards.write_metadata(
        tmp_path, {"image_size": 48, "num_vertices": 5, "pose_size": 2, "shape_size": 1, "shards": [name]}
    )
    crops = common.sample_crops(24, tmp_path, 2)
    assert crops.shape == (2, 24, 24, 3)
    np.testing.assert_array_equal(crops[:, 12, 12, 0], [0, 60])  # the first two images, resized


# --- the three exports ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model_dir(tiny, tmp_path_factory):
    model, _, crops, _ = tiny
    out = tmp_path_factory.mktemp("serving") / "handshape" / "1"
    report = saved_model_export.export_saved_model(model, out, crops)
    assert "SavedModel 1" in report and _leftovers(out.parent) == []
    return out


def test_saved_model_matches_keras_and_has_the_serving_signature(tiny, saved_model_dir):
    _, _, crops, reference = tiny
    loaded = tf.saved_model.load(str(saved_model_dir))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "images": (tf.uint8, [None, 64, 64, 3])
    }
    outputs = {name: (spec.dtype, spec.shape.as_list()) for name, spec in signature.structured_outputs.items()}
    assert outputs == {
        "heatmaps": (tf.float32, [None, 16, 16, 21]),
        "mesh_uvd": (tf.float32, [None, 1159, 3]),
        "pose_uvd": (tf.float32, [None, 21, 3]),
        "joints_uv": (tf.float32, [None, 21, 2]),
    }
    result = signature(images=tf.constant(crops))
    np.testing.assert_allclose(result["mesh_uvd"].numpy(), reference["mesh_uvd"], atol=1e-5)
    np.testing.assert_allclose(result["pose_uvd"].numpy(), reference["pose_uvd"], atol=1e-5)


@pytest.mark.slow
def test_saved_model_cli_describes_the_signature(saved_model_dir):
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--dir",
            str(saved_model_dir),
            "--all",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "signature_def['serving_default']" in shown
    assert "inputs['images'] tensor_info:" in shown and "dtype: DT_UINT8" in shown
    for name in ("heatmaps", "mesh_uvd", "pose_uvd", "joints_uv"):
        assert f"outputs['{name}'] tensor_info:" in shown


def test_tflite_fp32_matches_keras_with_builtin_ops_only(tiny, tmp_path):
    model, _, crops, reference = tiny
    out = tmp_path / "tiny.tflite"
    report = tflite_export.export_tflite(model, out, "none", crops)
    assert "builtin ops: " in report and _leftovers(tmp_path) == []
    content = out.read_bytes()
    names = tflite_export.check_builtin_ops(content)
    assert {"CONV_2D", "GATHER", "FULLY_CONNECTED"} <= set(names)
    assert not [n for n in names if n.startswith("CUSTOM") or "Flex" in n]
    backend = TFLiteBackend(out)
    outputs = backend.run(crops)  # batch of 3 on a model converted at batch 1
    assert outputs["mesh_uvd"].shape == (3, 1159, 3)
    np.testing.assert_allclose(outputs["mesh_uvd"], reference["mesh_uvd"], atol=1e-5)
    np.testing.assert_allclose(outputs["pose_uvd"], reference["pose_uvd"], atol=1e-5)
    np.testing.assert_allclose(outputs["heatmaps"], reference["heatmaps"], atol=1e-4)
    # The check discriminates: the outputs differ between crops by far more than the bound.
    spread = parity.compare({k: v[:1] for k, v in reference.items()}, {k: v[1:2] for k, v in reference.items()}, 64)
    assert spread[0].max_uv_px > 100 * parity.TOLERANCES["fp32"].max_uv * 64


def test_check_builtin_ops_rejects_flex_ops():
    @tf.function(input_signature=[tf.TensorSpec([4, 3], tf.float32)])
    def sparse_product(x):
        adjacency = tf.sparse.SparseTensor([[0, 1], [1, 0], [2, 3]], [1.0, 2.0, 3.0], [4, 4])
        return tf.sparse.sparse_dense_matmul(adjacency, x)

    function = sparse_product.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], sparse_product)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    assert any(name.startswith("CUSTOM:Flex") for name in tflite_export.operator_names(content))
    with pytest.raises(common.ExportError, match=r"non-builtin ops \['CUSTOM:FlexSparseTensorDenseMatMul'\]"):
        tflite_export.check_builtin_ops(content)


@pytest.fixture(scope="module")
def onnx_path(tiny, tmp_path_factory):
    model, _, crops, _ = tiny
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx_export.export_onnx(model, out, crops)
    return out


def test_onnx_matches_keras(tiny, onnx_path):
    _, _, crops, reference = tiny
    backend = onnx_export.OnnxBackend(onnx_path)
    outputs = backend.run(crops)
    assert backend.image_size == 64 and set(outputs) == {"heatmaps", "mesh_uvd", "pose_uvd"}
    np.testing.assert_allclose(outputs["mesh_uvd"], reference["mesh_uvd"], atol=1e-5)
    np.testing.assert_allclose(outputs["pose_uvd"], reference["pose_uvd"], atol=1e-5)


def test_export_beyond_tolerance_leaves_no_output(tiny, onnx_path, tmp_path, monkeypatch):
    _, _, crops, reference = tiny
    monkeypatch.setitem(parity.TOLERANCES, "fp32", parity.Tolerance(0.0, 0.0, 0.0, 0.0))
    for target in (tmp_path / "fresh.onnx", tmp_path / "existing.onnx"):
        if target.name == "existing.onnx":
            target.write_bytes(b"previous export")
        with pytest.raises(common.ExportError, match=r"does not match the Keras model \(mesh_uvd max_uv_px = "):
            common.export_verified(
                target,
                write=lambda path: path.write_bytes(onnx_path.read_bytes()),
                open_backend=onnx_export.OnnxBackend,
                reference=reference,
                crops=crops,
                tolerance=parity.TOLERANCES["fp32"],
                label="ONNX",
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.onnx"]
    assert (tmp_path / "existing.onnx").read_bytes() == b"previous export"


@pytest.mark.slow
def test_failing_cli_export_exits_1_without_output(tiny, tmp_path, monkeypatch, capsys):
    _, path, _, _ = tiny
    monkeypatch.setitem(parity.TOLERANCES, "fp32", parity.Tolerance(0.0, 0.0, 0.0, 0.0))
    out = tmp_path / "model.tflite"
    assert tflite_export.main(["--model", str(path), "--out", str(out), "--verify-count", "2"]) == 1
    assert "does not match the Keras model (mesh_uvd max_uv_px = " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_a_missing_model(tmp_path, capsys):
    assert tflite_export.main(["--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "m.tflite")]) == 2
    assert "none.keras does not exist; expected a .keras file from training" in capsys.readouterr().err


def test_cli_reports_a_truncated_model_without_a_traceback(tiny, tmp_path, capsys):
    _, path, _, _ = tiny
    cut = tmp_path / "cut.keras"
    cut.write_bytes(path.read_bytes()[:30000])
    assert onnx_export.main(["--model", str(cut), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"corrupt model file {cut}: not a readable .keras zip archive" in capsys.readouterr().err


def test_int8_without_calibration_data_is_refused_before_loading(tmp_path, capsys):
    status = tflite_export.main(
        ["--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "m.tflite"), "--quantize", "int8"]
    )
    assert status == 2
    assert "--quantize int8 needs --calibration-data" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_tflite_quantized_builds_and_stays_close(tiny, tmp_path, quantize):
    model, _, crops, reference = tiny
    out = tmp_path / f"tiny_{quantize}.tflite"
    tflite_export.export_tflite(model, out, quantize, crops, common.sample_crops(64, None, 8, seed=1))
    tflite_export.check_builtin_ops(out.read_bytes())
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_path=str(out)).get_input_details()
    if quantize == "int8":
        assert detail["dtype"] == np.uint8
        assert detail["quantization"][1] == 0 and detail["quantization"][0] == pytest.approx(1 / 255)
    else:
        assert detail["dtype"] == np.float32
    differences = parity.compare(reference, TFLiteBackend(out).run(crops), 64)
    assert parity.violations(differences, parity.TOLERANCES[quantize]) == []
    fp32_size = len(tflite_export.convert_keras(common.export_twin(model)))
    assert out.stat().st_size < 0.7 * fp32_size


# --- benchmark ------------------------------------------------------------------------------


def test_stage_models_compose_to_the_full_model(tiny):
    model, _, crops, reference = tiny
    stages = benchmark.stage_models(model)
    images = crops.astype(np.float32) / 255.0
    hourglass = stages["hourglass"](images, training=False)
    mesh = stages["encoder_mesh"]([hourglass["heatmaps"], hourglass["features"]], training=False)["mesh_uvd"]
    pose = stages["pose"](mesh, training=False)["pose_uvd"]
    np.testing.assert_allclose(hourglass["heatmaps"], reference["heatmaps"], atol=1e-6)
    np.testing.assert_allclose(mesh, reference["mesh_uvd"], atol=1e-6)
    np.testing.assert_allclose(pose, reference["pose_uvd"], atol=1e-6)


def _benchmark(args):
    result = subprocess.run(
        [sys.executable, "-m", "export.benchmark", "--presets", "tiny", "--runs", "2", "--batch", "2", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _rows(output):
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == "tiny":
            rows[(parts[1], int(parts[2]), parts[3])] = parts[4:]
    return rows


def test_benchmark_table_ratios_and_paper_column():
    results = [
        benchmark.Result("mediapipe", "tflite_fp32", "full", 2, 8.0, 9.0, None),
        benchmark.Result("cpu", "tflite_int8", "full", 2, 6.0, 7.0, 120.0),
        benchmark.Result("cpu", "tflite_int8", "hourglass", 2, 4.0, 5.0, 200.0),
        benchmark.Result("cpu", "onnx", "pose", 1, 1.0, 1.5, 900.0),
        benchmark.Result("frame-ours", "tflite", "frame", 1, 7.0, 7.5, None),
        benchmark.Result("frame-mediapipe", "tflite", "frame", 1, 14.0, 14.5, None),
    ]
    table = benchmark.format_table(results, {"cpu": 1_516_918}, 32).splitlines()
    assert table[0] == (
        "MediaPipe hand_landmark_full.tflite (LiteRT, 2 thread(s)): 8.00 ms median, 9.00 ms p90 at batch 1"
    )
    assert table[2].split() == ["cpu", "tflite_int8", "2", "full", "6.00", "7.00", "120.0", "0.75", "19.9"]
    assert table[3].split() == ["cpu", "tflite_int8", "2", "hourglass", "4.00", "5.00", "200.0", "12.6"]
    assert table[4].split() == ["cpu", "onnx", "1", "pose", "1.00", "1.50", "900.0", "2.6"]
    assert table[5].endswith("cpu: 1,516,918 parameters.")
    assert table[6].startswith("A frame with 2 hands, model invocations only, 1 thread(s): shipped detector")
    assert "7.00 ms (p90 7.50)" in table[6] and "14.00 ms (p90 14.50)" in table[6] and table[6].endswith("ratio 0.50")


def test_frame_pipelines_run_the_shipped_models_and_mediapipes_stand_ins(tmp_path):
    """The frame timing invokes both pipelines end to end (the shipped files stand in for
    MediaPipe's, which are not installed here)."""
    from handshape_tf.assets import SHIPPED_DETECTOR, SHIPPED_MODEL

    spec = {"mediapipe_palm_model": str(SHIPPED_DETECTOR), "mediapipe_model": str(SHIPPED_MODEL)}
    pipelines = benchmark.frame_pipelines(spec, threads=1)
    assert set(pipelines) == {"frame-ours", "frame-mediapipe"}
    for run in pipelines.values():
        run()


def test_litert_timing_runs_any_batch(tiny, tmp_path):
    model, _, _, _ = tiny
    path = tmp_path / "pose.tflite"
    path.write_bytes(tflite_export.convert_keras(benchmark.stage_models(common.export_twin(model))["pose"]))
    make = benchmark.litert_runner(path, threads=1)
    (joints,) = make(4)()
    assert joints.shape == (4, 21, 3)
    median, p90, throughput = benchmark.measure(make, runs=3, batch=4, batch_runs=2)
    assert 0 < median <= p90 and throughput > 0


@pytest.mark.slow
def test_benchmark_command_times_formats_and_stages():
    output = _benchmark(["--formats", "keras", "onnx", "--threads", "1", "--batch-runs", "1"])
    rows = _rows(output)
    assert set(rows) == {(f, 1, s) for f in ("keras", "onnx") for s in benchmark.STAGES}
    for (_, _, stage), values in rows.items():
        median, p90, throughput, paper = map(float, values)
        assert 0 < median <= p90 and throughput > 0 and paper == benchmark.PAPER_MS[stage]
    assert "paper Sec. 5.2, GTX 1080 GPU: a different machine" in output
    assert "tiny: 332,994 parameters" in output


@pytest.mark.slow
def test_benchmark_all_formats_threads_and_mediapipe_ratio(tiny, tmp_path):
    model, _, crops, _ = tiny
    stand_in = tmp_path / "landmarks.tflite"  # any LiteRT model exercises the MediaPipe path
    tflite_export.export_tflite(model, stand_in, "none", crops)
    output = _benchmark(
        ["--threads", "1", "2", "--stages", "full", "pose", "--batch-runs", "1", "--mediapipe-model", str(stand_in)]
    )
    rows = _rows(output)
    assert set(rows) == {(f, t, s) for f in benchmark.FORMATS for t in (1, 2) for s in ("full", "pose")}
    for (_, _, stage), values in rows.items():
        assert len(values) == (5 if stage == "full" else 4)  # the MediaPipe ratio on full rows only
    assert "MediaPipe hand_landmark_full.tflite (LiteRT, 2 thread(s))" in output
