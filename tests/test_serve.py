"""The TF Serving-compatible REST server: status, metadata, predictions in both formats and
base64, the 4xx answers, concurrent clients, and survival after bad requests."""

import base64
import http.client
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from handshape_tf.inference import HandPredictor
from handshape_tf.inference.image_header import image_size
from handshape_tf.inference.signature import save_serving_model
from handshape_tf.serve import main
from handshape_tf.serving.http import make_server
from handshape_tf.serving.model import RequestError, ServedModel, resolve_model_dir

SIZE = 64
MAX_BODY = 2 * 2**20
NAME = "hands"


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def saved_dir(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    save_serving_model(model, base / "3")
    return base


@pytest.fixture(scope="module")
def server(saved_dir):
    server = make_server(saved_dir, port=0, name=NAME, max_body_bytes=MAX_BODY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def api(model):
    return HandPredictor.from_keras_model(model)


def _request(server, method, path, body=None, headers=None):
    """(status, parsed JSON) of one request on a fresh connection."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _crops(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.uint8)


def test_model_status_and_metadata_like_tf_serving(server):
    status, body = _request(server, "GET", f"/v1/models/{NAME}")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert _request(server, "GET", f"/v1/models/{NAME}/versions/3")[0] == 200
    status, body = _request(server, "GET", f"/v1/models/{NAME}/metadata")
    assert status == 200 and body["model_spec"] == {"name": NAME, "signature_name": "", "version": "3"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    images = default["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "64", "64", "3"]
    assert set(default["outputs"]) == {"heatmaps", "mesh_uvd", "pose_uvd", "joints_uv"}
    assert signatures["predict_encoded"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"


def test_row_format_gives_the_same_numbers_as_the_api(server, api):
    crops = _crops(2)
    status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", {"instances": crops.tolist()})
    assert status == 200 and len(body["predictions"]) == 2
    for crop, row in zip(crops, body["predictions"], strict=True):
        expected = api.predict(crop)
        assert set(row) == {"heatmaps", "mesh_uvd", "pose_uvd", "joints_uv"}
        np.testing.assert_allclose(row["mesh_uvd"], expected.mesh_uvd, atol=2e-5)
        np.testing.assert_allclose(row["pose_uvd"], expected.pose_uvd, atol=2e-5)
        np.testing.assert_allclose(row["heatmaps"], expected.heatmaps, atol=2e-5)
        np.testing.assert_allclose(row["joints_uv"], expected.joints_uv, atol=2e-3)  # crop = image: same pixels
    # Instances as objects keyed by input name, and an explicit version.
    status, named = _request(
        server, "POST", f"/v1/models/{NAME}/versions/3:predict", {"instances": [{"images": crops[1].tolist()}]}
    )
    assert status == 200
    np.testing.assert_allclose(named["predictions"][0]["mesh_uvd"], body["predictions"][1]["mesh_uvd"], atol=1e-6)


def test_columnar_format_and_base64_images(server, api):
    crops = _crops(3, seed=1)
    status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", {"inputs": {"images": crops.tolist()}})
    assert status == 200 and set(body["outputs"]) == {"heatmaps", "mesh_uvd", "pose_uvd", "joints_uv"}
    assert np.shape(body["outputs"]["mesh_uvd"]) == (3, 1159, 3)
    expected = api.predict(list(crops))
    np.testing.assert_allclose(body["outputs"]["pose_uvd"], np.stack([e.pose_uvd for e in expected]), atol=2e-5)
    # PNG files of crop size: padding and resizing are identities, so the numbers are the same.
    encoded = [base64.b64encode(cv2.imencode(".png", crop[..., ::-1])[1].tobytes()).decode() for crop in crops[:2]]
    request = {"signature_name": "predict_encoded", "instances": [{"b64": data} for data in encoded]}
    status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", request)
    assert status == 200, body
    for row, e in zip(body["predictions"], expected[:2], strict=True):
        np.testing.assert_allclose(row["mesh_uvd"], e.mesh_uvd, atol=2e-5)
    status, body = _request(
        server, "POST", f"/v1/models/{NAME}:predict", {"signature_name": "predict_encoded", "inputs": [{"b64": "@@@"}]}
    )
    assert status == 400 and "invalid base64 data" in body["error"]


@pytest.mark.parametrize(
    "request_body, message",
    [
        (b"{not json", "JSON Parse error"),
        (b"[1, 2]", "Request body is a JSON list; expected an object"),
        ({"instance": []}, "Missing 'inputs' or 'instances' key"),
        ({"instances": [], "inputs": []}, "Request has both 'instances' and 'inputs' keys"),
        ({"instances": []}, "'instances' must be a non-empty JSON list"),
        ({"instances": [[[[0, 0, 0]] * 32] * 32]}, r"has shape \[32, 32, 3\]; the signature expects \[64, 64, 3\]"),
        (
            {"instances": np.full((1, 64, 64, 3), 0.5).tolist()},
            "non-integer numbers .* expected integers for dtype uint8",
        ),
        (
            {"instances": np.full((1, 64, 64, 3), 300).tolist()},
            r"values span \[300, 300\]; dtype uint8 holds \[0, 255\]",
        ),
        ({"instances": [[["a"]]]}, "got JSON values of type string; expected numbers for dtype uint8"),
        ({"instances": [[[0, 0], [0]]]}, "nested lists of different lengths"),
        ({"instances": [{"pixels": []}]}, r"has keys \['pixels'\]; the signature's inputs are \['images'\]"),
        ({"signature_name": "classify", "instances": [0]}, "Serving signature name: 'classify' not found"),
        ({"signature_name": "predict_encoded", "instances": [3]}, r"expected a string or \{\"b64\": ...\}"),
    ],
)
def test_bad_predict_requests_get_400(server, request_body, message):
    status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", request_body)
    assert status == 400
    assert set(body) == {"error"}
    assert re.search(message, body["error"]), body["error"]


def test_unknown_model_path_method_and_size_get_the_right_status(server):
    assert _request(server, "GET", "/v1/models/other") == (
        404,
        {"error": "Servable not found for request: Latest(other)"},
    )
    assert _request(server, "GET", f"/v1/models/{NAME}/versions/9")[0] == 404
    assert _request(server, "POST", "/v1/models/other:predict", {"instances": [0]})[0] == 404
    assert _request(server, "GET", "/v2/anything")[0] == 404
    status, body = _request(server, "POST", f"/v1/models/{NAME}:classify", {"examples": []})
    assert status == 404 and "this server implements :predict and :detect" in body["error"]
    status, body = _request(server, "PUT", f"/v1/models/{NAME}:predict", {"instances": [0]})
    assert status == 405 and "use POST" in body["error"]
    assert _request(server, "POST", f"/v1/models/{NAME}", {})[0] == 405
    assert _request(server, "GET", f"/v1/models/{NAME}:predict")[0] == 405
    assert _request(server, "DELETE", f"/v1/models/{NAME}/metadata")[0] == 405
    # The server answers 413 from the Content-Length header without reading the body, so the
    # request is sent raw (http.client would still be writing the body when the server closes).
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
            + b"x" * 1024
        )
        reply = sock.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 413") and f"exceeds the limit of {MAX_BODY} bytes" in reply


def test_missing_content_length_and_truncated_bodies(server):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = sock.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 411") and "Missing Content-Length header" in reply
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{}}".encode())
        sock.shutdown(socket.SHUT_WR)
        reply = sock.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 400") and "Request body ended after 2 of 100 bytes" in reply


def test_concurrent_clients_and_survival_after_bad_requests(server, api):
    crops = _crops(8, seed=2)

    def call(index):
        if index % 2:  # interleave garbage with the good requests
            _request(server, "POST", f"/v1/models/{NAME}:predict", b"\xff\xfe garbage")
        return _request(server, "POST", f"/v1/models/{NAME}:predict", {"instances": [crops[index].tolist()]})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(8)))
    expected = api.predict(list(crops))
    for (status, body), e in zip(results, expected, strict=True):
        assert status == 200
        np.testing.assert_allclose(body["predictions"][0]["mesh_uvd"], e.mesh_uvd, atol=2e-5)
    assert _request(server, "GET", f"/v1/models/{NAME}")[0] == 200


def test_keep_alive_connection_serves_several_requests(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for path in (f"/v1/models/{NAME}", f"/v1/models/{NAME}/metadata", f"/v1/models/{NAME}"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())
    finally:
        connection.close()


def test_model_directory_resolution_and_cli_errors(saved_dir, tmp_path, capsys):
    assert resolve_model_dir(saved_dir) == (saved_dir / "3", "3")
    assert resolve_model_dir(saved_dir / "3") == (saved_dir / "3", "3")
    with pytest.raises(ValueError, match="is not a SavedModel directory .* nor a base directory"):
        resolve_model_dir(tmp_path)
    assert main(["--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "model not found" in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "saved_model.pb").write_bytes((saved_dir / "3" / "saved_model.pb").read_bytes()[:5000])
    assert main(["--model", str(cut), "--port", "0"]) == 2
    assert f"error: corrupt model file {cut}: TensorFlow cannot load the SavedModel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", str(saved_dir), "--name", "a/b"])
    assert "--name is 'a/b'" in capsys.readouterr().err


def test_served_model_answers_without_http(server):
    served = server.served
    assert isinstance(served, ServedModel) and served.version == "3" and served.name == NAME
    response = served.predict(json.dumps({"inputs": _crops(1).tolist()}).encode())
    assert np.shape(response["outputs"]["joints_uv"]) == (1, 21, 2)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A SavedModel with two inputs (float32 and string), string outputs and a one-output signature."""
    import tensorflow as tf

    @tf.function(
        input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"), tf.TensorSpec([None], tf.string, name="text")]
    )
    def both(x, text):
        return {"total": tf.reduce_sum(x, axis=1), "echo": text, "echo_bytes": text}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def single(x):
        return {"total": tf.reduce_sum(x, axis=1)}

    root = tf.Module()
    root.both, root.single = both, single
    path = tmp_path_factory.mktemp("toy") / "7"
    tf.saved_model.save(root, str(path), signatures={"serving_default": both, "single": single})
    return ServedModel(path, name="toy")


def test_multiple_inputs_strings_and_single_outputs(toy_model):
    def predict(request):
        return toy_model.predict(json.dumps(request).encode())

    binary = base64.b64encode(b"\x00\xff").decode()
    rows = predict({"instances": [{"x": [1, 2.5], "text": "héllo"}, {"x": [0, -1], "text": {"b64": binary}}]})
    assert rows == {
        "predictions": [
            {"total": 3.5, "echo": "héllo", "echo_bytes": {"b64": base64.b64encode("héllo".encode()).decode()}},
            {"total": -1.0, "echo": "\x00\ufffd", "echo_bytes": {"b64": binary}},
        ]
    }
    columns = predict({"inputs": {"x": [[1, 1]], "text": ["a"]}})
    assert columns == {"outputs": {"total": [2.0], "echo": ["a"], "echo_bytes": [{"b64": "YQ=="}]}}
    assert predict({"signature_name": "single", "instances": [[1, 2], [3, 4]]}) == {"predictions": [3.0, 7.0]}
    assert predict({"signature_name": "single", "inputs": [[1, 2]]}) == {"outputs": [3.0]}
    with pytest.raises(RequestError, match=r"bare value but the signature has inputs \['text', 'x'\]") as error:
        predict({"instances": [[1, 2]]})
    assert error.value.status == 400
    with pytest.raises(RequestError, match=r"instance 0 input 'x' has shape \[3\]; the signature expects \[2\]"):
        predict({"instances": [{"x": [1, 2, 3], "text": "a"}]})
    with pytest.raises(RequestError, match=r"input 'x': instances have different shapes"):
        predict({"signature_name": "single", "instances": [[1, 2], [1, 2, 3]]})
    for value in ([[True, False]], [[1, True]]):  # numpy would read [1, true] as [1, 1]
        with pytest.raises(RequestError, match="inputs hold the JSON value (true|false); expected numbers"):
            predict({"signature_name": "single", "inputs": value})


# --- bounds on a request and on connections -------------------------------------------------


def _encoded(request_images):
    return {
        "signature_name": "predict_encoded",
        "instances": [{"b64": base64.b64encode(b).decode()} for b in request_images],
    }


def _png(height, width):
    return cv2.imencode(".png", np.zeros((height, width), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def test_image_header_sizes_for_every_format_tensorflow_decodes():
    image = np.zeros((37, 53, 3), np.uint8)
    for extension in (".png", ".jpg", ".bmp", ".webp"):
        assert image_size(cv2.imencode(extension, image)[1].tobytes()) == (53, 37), extension
    gif = b"GIF89a" + (53).to_bytes(2, "little") + (37).to_bytes(2, "little") + b"\x00" * 20
    assert image_size(gif) == (53, 37)
    assert image_size(b"plain text") is None
    with pytest.raises(ValueError, match="PNG file of 12 bytes with an unreadable header"):
        image_size(b"\x89PNG\r\n\x1a\n" + b"abcd")


def test_batch_and_pixel_bounds_are_checked_before_decoding(server):
    served = server.served
    status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", {"instances": _crops(3).tolist()})
    assert status == 200
    served.max_batch, served.max_pixels = 2, 64 * 64 + 10 * 10
    try:
        for request in ({"instances": _crops(3).tolist()}, {"inputs": _crops(3).tolist()}):
            status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", request)
            assert status == 413 and "holds a batch of 3; the limit is 2 (--max-batch)" in body["error"]
        # 16000 x 16000 pixels in 243 KiB: refused from the header, nothing is decoded.
        status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", _encoded([_png(16000, 16000)]))
        assert status == 413 and "item 0 is a 16000 x 16000 image" in body["error"]
        # Counted as the padded square: 64 x 64 fits, a second 10 x 1 image (10 x 10) fits, 11 x 1 does not.
        assert _request(server, "POST", f"/v1/models/{NAME}:predict", _encoded([_png(64, 64), _png(1, 10)]))[0] == 200
        status, body = _request(server, "POST", f"/v1/models/{NAME}:predict", _encoded([_png(64, 64), _png(1, 11)]))
        assert status == 413 and "item 1 is a 11 x 1 image" in body["error"]
    finally:
        served.max_batch, served.max_pixels = 64, 2**24


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"[" * 5000 + b"]" * 5000, 400, "JSON Parse error: nested too deeply"),
        (json.dumps(_encoded([b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(9)])).encode(), 400, "PNG"),
        (json.dumps(_encoded([b"GIF89a" + bytes(30)])).encode(), 400, "GIF"),
        (json.dumps({"instances": [[[[True, 0, 0]] * SIZE] * SIZE]}).encode(), 400, "JSON value true"),
    ],
)
def test_client_mistakes_get_4xx_with_a_message(server, body, status, message):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("POST", f"/v1/models/{NAME}:predict", body=body)
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    connection.close()
    assert response.status == status and message in error and error != "Graph execution error:", error


def test_stalled_body_gets_408_and_vanished_clients_leave_no_traceback(saved_dir, monkeypatch, caplog):
    from handshape_tf.serving.http import _Handler

    monkeypatch.setattr(_Handler, "timeout", 1)
    server = make_server(saved_dir, port=0, name=NAME, max_connections=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    head = f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode()
    try:
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(head)
            reply = sock.makefile("rb").read().decode()
        assert reply.startswith("HTTP/1.1 408") and "Request body not received within 1 s" in reply
        # Two stalled connections hold both slots: a third is refused at once with 503.
        stalled = [socket.create_connection((host, port), timeout=30) for _ in range(2)]
        for sock in stalled:
            sock.sendall(head)
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(head)
            reply = sock.makefile("rb").read().decode()
        assert reply.startswith("HTTP/1.1 503") and "Retry-After: 1" in reply and "all connections are in use" in reply
        for sock in stalled:  # leave before the 408 is written
            sock.close()
        threading.Event().wait(2.5)
        status, _ = _request(server, "GET", f"/v1/models/{NAME}")
        assert status == 200  # the slots came back
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert "Traceback" not in caplog.text and "Internal error" not in caplog.text


def test_port_in_use_is_a_message_not_a_traceback(server, saved_dir, capsys):
    port = server.server_address[1]
    assert main(["--model", str(saved_dir), "--port", str(port)]) == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def _b64_png(rgb: np.ndarray) -> dict:
    return {"b64": base64.b64encode(cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()).decode()}


def test_detect_finds_hands_in_full_photos_like_predict_does(saved_dir, model, server):
    """:detect (--detector) on the example render padded into a larger photo: the hands and their
    meshes are those `detect_hands` gives with the same weights in Keras; a photo without a hand
    gives []; a server without a detector answers 404; bad instances 400."""
    from handshape_tf.assets import SHIPPED_DETECTOR, SHIPPED_SIDE
    from handshape_tf.inference.detection import HandDetector
    from handshape_tf.inference.tracking import detect_hands
    from mobile_demo.demo import DEFAULT_IMAGE

    example = cv2.imread(str(DEFAULT_IMAGE))[..., ::-1]
    pad = example.shape[0] // 2
    photo = np.ascontiguousarray(cv2.copyMakeBorder(example, pad, pad, pad, pad, cv2.BORDER_REFLECT))
    detector = HandDetector(SHIPPED_DETECTOR, side=SHIPPED_SIDE)
    served = ServedModel(saved_dir, name=NAME, detector=detector, max_hands=2)
    body = json.dumps({"instances": [_b64_png(photo), _b64_png(np.zeros((90, 120, 3), np.uint8))]}).encode()
    found, empty = served.detect(body)["predictions"]
    assert empty == {"hands": []}
    expected = detect_hands(HandPredictor.from_keras_model(model), detector, photo, max_hands=2)
    assert len(found["hands"]) == len(expected) >= 1
    for got, want in zip(found["hands"], expected):
        want = want.to_dict()
        assert got["handedness"] == want["handedness"]
        np.testing.assert_allclose(got["box"], want["box"], atol=1e-3)
        np.testing.assert_allclose(got["hand"]["joints_uv"], want["hand"]["joints_uv"], atol=0.05)
    for instances, message in (
        ([], "Missing 'instances'"),
        ([{"image": "x"}], "instance 0 is not a"),
        ([{"b64": base64.b64encode(b"not an image").decode()}], "not a decodable PNG or JPEG"),
    ):
        with pytest.raises(RequestError, match=message):
            served.detect(json.dumps({"instances": instances}).encode())
    status, answer = _request(server, "POST", f"/v1/models/{NAME}:detect", {"instances": [_b64_png(photo)]})
    assert status == 404 and "start it with --detector" in answer["error"]
