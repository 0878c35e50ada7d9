"""A local HTTP server speaking TensorFlow Serving's REST API for an exported SavedModel.

    python -m handshape_tf.serve --model exported/handshape --port 8501 [--name handshape]
    curl localhost:8501/v1/models/handshape
    curl -d '{"instances": [<64 x 64 x 3 uint8 crop as nested lists>]}' \\
        localhost:8501/v1/models/handshape:predict

--model is a SavedModel directory (holding saved_model.pb; its version is its name when that
is a number, else 1) or TF Serving's base directory with numbered version subdirectories (the
highest is served). The model is written by `handshape_tf.inference.signature` /
`export.saved_model` (signatures serving_default and predict_encoded), but any SavedModel
works: requests are checked against its signatures.

Endpoints (NAME = --name; "/versions/N" may follow NAME and must be the served version):
  GET  /v1/models/NAME           model status, as TF Serving's GetModelStatus
  GET  /v1/models/NAME/metadata  signature definitions, as TF Serving's GetModelMetadata
  POST /v1/models/NAME:predict   {"signature_name": optional (default serving_default),
                                  "instances": [...]} (row format) -> {"predictions": [...]}, or
                                 {"inputs": ...} (columnar) -> {"outputs": ...}.
  POST /v1/models/NAME:detect    (with --detector) full photos: {"instances": [{"b64": "<PNG or
                                 JPEG file>"}, ...]} -> {"predictions": [{"hands": [...]}, ...]},
                                 per photo the hands the detector finds (up to --max-hands), each
                                 as `handshape_tf.predict --detector` writes it (box, score,
                                 handedness, and the mesh network's joints and mesh on its crop,
                                 through serving_default); a photo without a hand gives [].
Row format: each instance is the value of the single input, or an object {input name: value};
all instances must have the same shape and are stacked into one batch. Columnar: "inputs" is
the (batched) value of the single input, or an object {input name: value}. A prediction is an
object {output name: value}, or the bare value when the signature has one output. Inputs of
string type take JSON strings (UTF-8) or {"b64": "<base64>"} objects for binary data (e.g.
PNG/JPEG files for predict_encoded); string outputs whose name ends in "_bytes" are returned
as {"b64": ...}. Integer inputs (serving_default's uint8 images) must be JSON integers within
the type's range; float inputs take any JSON numbers.

Bounds on what one request may cost (memory stays within a known size whatever clients send):
  --max-body-mb      request body (default 32 MiB), checked from Content-Length before reading;
  --max-batch        instances, or the batch dimension of 'inputs' (default 64);
  --max-pixels       pixels encoded images decode to, summed over the request, each counted as
                     the max(H, W)^2 square predict_encoded pads it to (default 2^24, one
                     4096 x 4096 photo or 64 of 512 x 512), read from the file headers before
                     anything is decoded;
  --max-connections  connections served at once, one thread each (default 16); more get 503
                     with Retry-After; a client silent for 20 s is dropped (408 mid-body);
  --workers          requests parsed and run at once (default 2), the others wait.
After a large request the freed memory is handed back to the system (glibc malloc_trim).

Errors are JSON {"error": "..."} as in TF Serving: 400 malformed or too deeply nested JSON, a
missing or unknown key or signature, inputs of the wrong shape or type (JSON true/false are not
numbers), or an undecodable image; 404 unknown model, version or path; 405 a method the path
does not support; 408 a body that stalls; 411 no Content-Length; 413 a body, batch or pixel
count over its bound; 503 all connections busy; 500 an unexpected failure (logged; the server
keeps running).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ctypes
import ctypes.util
import json
import logging
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.cli import add_detector_arguments, add_verbose_argument, setup_logging, tf_error_text
from handshape_tf.inference.backends import CorruptModelError
from handshape_tf.inference.image_header import ImageHeaderError, image_size

logger = logging.getLogger("handshape_tf.serve")

DEFAULT_PORT = 8501
DEFAULT_NAME = "handshape"
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_PIXELS = 2**24
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_WORKERS = 2
IDLE_TIMEOUT_S = 20
# Bodies above this size are followed by malloc_trim: glibc otherwise keeps the freed
# JSON/numpy memory of a large request in its per-thread arenas for good.
_TRIM_AFTER_BYTES = 2**20
_VERBS = (":predict", ":detect")
EXIT_USAGE = 2

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?/?$")


class RequestError(Exception):
    """A request the server rejects: HTTP status and TF Serving-style message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def resolve_model_dir(path) -> tuple[Path, str]:
    """(SavedModel directory, version string) for --model (see the module docstring).

    Raises:
      FileNotFoundError: nothing at `path`.
      ValueError: neither a SavedModel nor a base directory of numbered SavedModels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path} does not exist (expected a SavedModel directory)")
    if (path / "saved_model.pb").is_file():
        return path, path.name if path.name.isdigit() else "1"
    versions = sorted(
        (int(child.name), child)
        for child in (path.iterdir() if path.is_dir() else [])
        if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )
    if not versions:
        raise ValueError(
            f"{path} is not a SavedModel directory (no saved_model.pb) nor a base directory with "
            f"numbered SavedModel versions"
        )
    number, directory = versions[-1]
    return directory, str(number)


class ServedModel:
    """A loaded SavedModel and the TF Serving REST semantics on top of it (no HTTP here).

    Args:
      path: --model (a SavedModel directory or a base directory of versions).
      name: the model name in URLs.
      max_batch: largest batch a request may hold (413 above).
      max_pixels: largest sum of max(H, W)^2 over the encoded images of a request (413 above).
      detector: a `HandDetector` for the :detect verb (None: the verb answers 404).
      max_hands: most hands :detect returns per photo.
    """

    def __init__(
        self,
        path,
        name: str = DEFAULT_NAME,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        detector=None,
        max_hands: int = 2,
    ):
        import tensorflow as tf

        for label, value in (("max_batch", max_batch), ("max_pixels", max_pixels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} is {value!r}; expected an int >= 1")
        self.directory, self.version = resolve_model_dir(path)
        self.name = name
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(self.directory))
        except (OSError, tf.errors.OpError) as error:  # unparsable saved_model.pb, damaged variables
            raise CorruptModelError(
                self.directory, f"TensorFlow cannot load the SavedModel ({tf_error_text(error)})"
            ) from None
        self.signatures = dict(self._loaded.signatures)
        self._signature_defs = _signature_defs(self.directory)
        self.detector = detector
        self.max_hands = max_hands
        self._detect_lock = threading.Lock()  # a LiteRT interpreter serves one call at a time
        self._predictor = None
        if detector is not None:
            from handshape_tf.inference import HandPredictor
            from handshape_tf.inference.backends import SavedModelBackend

            self._predictor = HandPredictor(SavedModelBackend(self.directory, loaded=self._loaded))
        logger.info(
            "serving %s version %s from %s: signatures %s", name, self.version, self.directory, sorted(self.signatures)
        )

    def check_target(self, name: str, version: str | None) -> None:
        """Raises a 404 RequestError unless the URL names this model (and version)."""
        if name != self.name:
            raise RequestError(HTTPStatus.NOT_FOUND, f"Servable not found for request: Latest({name})")
        if version is not None and version != self.version:
            raise RequestError(HTTPStatus.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")

    def status(self) -> dict[str, Any]:
        """GetModelStatus response."""
        return {
            "model_version_status": [
                {"version": self.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }

    def metadata(self) -> dict[str, Any]:
        """GetModelMetadata response with the SavedModel's signature definitions."""
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": self.version},
            "metadata": {"signature_def": {"signature_def": self._signature_defs}},
        }

    def predict(self, body: bytes) -> dict[str, Any]:
        """Predict response for a request body; raises RequestError for a bad request."""
        request = _parse_request(body)
        signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str) or signature_name not in self.signatures:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"Serving signature name: {signature_name!r} not found in signature def "
                f"(available: {sorted(self.signatures)})",
            )
        function = self.signatures[signature_name]
        _, specs = function.structured_input_signature
        has_rows, has_columns = "instances" in request, "inputs" in request
        if has_rows == has_columns:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                "Missing 'inputs' or 'instances' key"
                if not has_rows
                else "Request has both 'instances' and 'inputs' keys; expected one",
            )
        values = request["instances"] if has_rows else request["inputs"]
        if b"true" in body or b"false" in body:  # the walk costs time; most requests skip it
            _reject_booleans(values)
        try:
            if has_rows:
                arrays = _row_inputs(values, specs, self.max_batch)
            else:
                arrays = _columnar_inputs(values, specs, self.max_batch)
        except RecursionError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "inputs are nested too deeply for the signature") from None
        self._check_pixels(arrays)
        try:
            outputs = function(
                **{name: self._tf.constant(array, dtype=specs[name].dtype) for name, array in arrays.items()}
            )
        except (self._tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, tf_error_text(error)) from None
        values = {name: _to_json(name, tensor.numpy()) for name, tensor in outputs.items()}
        if has_rows:
            return {"predictions": _rows(values)}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}

    def detect(self, body: bytes) -> dict[str, Any]:
        """:detect response (module docstring) for a request body; raises RequestError."""
        import cv2

        from handshape_tf.inference.tracking import detect_hands

        if self.detector is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "this server has no hand detector; start it with --detector")
        request = _parse_request(body)
        instances = request.get("instances")
        if not isinstance(instances, list) or not instances:
            raise RequestError(HTTPStatus.BAD_REQUEST, "Missing 'instances': a list of {\"b64\": <image file>} objects")
        _check_batch(len(instances), self.max_batch, "instances")
        files = np.empty(len(instances), object)
        for index, instance in enumerate(instances):
            if not (isinstance(instance, dict) and set(instance) == {"b64"} and isinstance(instance["b64"], str)):
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, f'instance {index} is not a {{"b64": <base64 image file>}} object'
                )
            files[index] = _strings(instance, f"instance {index}")
        self._check_pixels({"instances": files})
        predictions = []
        for index, data in enumerate(files):
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"instance {index} is not a decodable PNG or JPEG image")
            with self._detect_lock:
                hands = detect_hands(self._predictor, self.detector, bgr[..., ::-1], max_hands=self.max_hands)
            predictions.append({"hands": [hand.to_dict() for hand in hands]})
        return {"predictions": predictions}

    def _check_pixels(self, arrays: dict[str, np.ndarray]) -> None:
        """413 when the encoded images of a request would decode to more than max_pixels."""
        total = 0
        for name, array in arrays.items():
            if array.dtype != object:
                continue
            for index, data in enumerate(array.flat):
                try:
                    size = image_size(data)
                except ImageHeaderError as error:
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"input {name!r} item {index}: {error}") from None
                if size is None:
                    continue
                total += max(size) ** 2
                if total > self.max_pixels:
                    raise RequestError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"input {name!r} item {index} is a {size[0]} x {size[1]} image: the request would decode to "
                        f"{total} pixels (each image padded to a square), over the limit of {self.max_pixels}",
                    )


def _parse_request(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; 400 for anything else."""
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"JSON Parse error: {error}") from None
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "JSON Parse error: nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"Request body is a JSON {type(request).__name__}; expected an object"
        )
    return request


def _reject_booleans(value) -> None:
    """400 for a JSON true/false anywhere in the inputs (numpy would read them as 1 and 0)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"inputs hold the JSON value {str(item).lower()}; expected numbers"
            )
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _check_batch(size: int, max_batch: int, where: str) -> None:
    if size > max_batch:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{where} holds a batch of {size}; the limit is {max_batch} (--max-batch): split the request",
        )


def _signature_defs(directory: Path) -> dict[str, Any]:
    """The SignatureDefs of the SavedModel's serving MetaGraph as TF Serving prints them."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    meta_graph = next(
        (graph for graph in saved_model.meta_graphs if "serve" in graph.meta_info_def.tags), saved_model.meta_graphs[0]
    )
    return {
        key: json_format.MessageToDict(
            meta_graph.signature_def[key], always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )
        for key in sorted(meta_graph.signature_def)
    }


def _row_inputs(instances, specs, max_batch: int) -> dict[str, np.ndarray]:
    """{input name: batched array} from row-format instances."""
    if not isinstance(instances, list) or not instances:
        raise RequestError(HTTPStatus.BAD_REQUEST, "'instances' must be a non-empty JSON list (one entry per example)")
    _check_batch(len(instances), max_batch, "'instances'")
    names = sorted(specs)
    columns: dict[str, list] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        named = _named_values(instance, specs, f"instance {index}")
        for name in names:
            columns[name].append(named[name])
    arrays = {}
    for name in names:
        rows = [
            _to_array(value, specs[name], f"instance {index} input {name!r}", batched=False)
            for index, value in enumerate(columns[name])
        ]
        shapes = {row.shape for row in rows}
        if len(shapes) > 1:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"input {name!r}: instances have different shapes {sorted(shapes)}; all must have the same shape",
            )
        arrays[name] = np.stack(rows)
    return arrays


def _columnar_inputs(inputs, specs, max_batch: int) -> dict[str, np.ndarray]:
    """{input name: batched array} from a columnar 'inputs' value."""
    named = _named_values(inputs, specs, "'inputs'")
    for name, value in named.items():
        if isinstance(value, list) and specs[name].shape.rank:
            _check_batch(len(value), max_batch, f"input {name!r}")
    return {name: _to_array(value, specs[name], f"input {name!r}", batched=True) for name, value in named.items()}


def _named_values(value, specs, where: str) -> dict[str, Any]:
    """{input name: JSON value}: an object keyed by the input names, or the single input's value."""
    is_object = isinstance(value, dict) and set(value) != {"b64"}
    if is_object:
        if set(value) != set(specs):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"{where} has keys {sorted(value)}; the signature's inputs are {sorted(specs)}",
            )
        return value
    if len(specs) != 1:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{where} is a bare value but the signature has inputs {sorted(specs)}; send an object keyed by input name",
        )
    return {next(iter(specs)): value}


def _dims(shape) -> list[int]:
    return [-1 if d is None else d for d in shape.as_list()]


def _to_array(value, spec, where: str, batched: bool) -> np.ndarray:
    """Numpy array of a JSON value for a TensorSpec (batched: includes the batch dimension)."""
    dtype = spec.dtype
    expected = spec.shape if batched else spec.shape[1:]
    if dtype.is_bool or dtype.is_complex or dtype.is_quantized:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{where}: dtype {dtype.name} is not supported by this server")
    if dtype.name == "string":
        array = np.array(_strings(value, where), dtype=object)
    else:
        array = _numbers(value, dtype, where)
    if not expected.is_compatible_with(array.shape):
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{where} has shape {list(array.shape)}; the signature expects {_dims(expected)} "
            f"({'with' if batched else 'without'} the batch dimension, -1 = any)",
        )
    return array


def _strings(value, where: str):
    """Nested lists of str / {"b64": ...} -> nested lists of bytes."""
    if isinstance(value, list):
        return [_strings(item, where) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{where}: invalid base64 data ({error})") from None
    raise RequestError(
        HTTPStatus.BAD_REQUEST,
        f'{where}: got {type(value).__name__} {str(value)[:40]}; expected a string or {{"b64": ...}}',
    )


def _numbers(value, dtype, where: str) -> np.ndarray:
    """Nested lists of JSON numbers -> array checked against the dtype's kind and range."""
    try:
        array = np.array(value)
    except ValueError:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"{where}: nested lists of different lengths; expected a rectangular tensor"
        ) from None
    if array.dtype.kind not in "iuf":
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{where}: got JSON values of type {_kind_name(array)}; expected numbers for dtype {dtype.name}",
        )
    if dtype.is_integer:
        if array.dtype.kind == "f" and array.size:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"{where}: got non-integer numbers (e.g. {array.flat[0]!r}); expected integers for dtype {dtype.name}",
            )
        if array.size and (array.min() < dtype.min or array.max() > dtype.max):
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"{where}: values span [{array.min()}, {array.max()}]; dtype {dtype.name} holds "
                f"[{dtype.min}, {dtype.max}]",
            )
    return array.astype(dtype.as_numpy_dtype)


def _kind_name(array: np.ndarray) -> str:
    return {"U": "string", "O": "object/mixed", "b": "boolean"}.get(array.dtype.kind, array.dtype.name)


def _to_json(name: str, array: np.ndarray):
    """JSON value of an output array (strings decoded, or base64 for names ending in _bytes)."""
    if array.dtype == object:
        encode = (
            (lambda b: {"b64": base64.b64encode(b).decode("ascii")})
            if name.endswith("_bytes")
            else (lambda b: b.decode("utf-8", errors="replace"))
        )
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.ndim else encode(array.item())
    return array.tolist()


def _rows(values: dict[str, Any]) -> list:
    """Row-format predictions from {output name: batched JSON value}."""
    sizes = {name: len(value) if isinstance(value, list) else None for name, value in values.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"outputs have batch sizes {sizes}; the row format needs one batch dimension shared by all outputs "
            f"(use 'inputs' for the columnar format)",
        )
    names = list(values)
    count = next(iter(sizes.values()))
    if len(names) == 1:
        return values[names[0]]
    return [{name: values[name][index] for name in names} for index in range(count)]


class _Handler(BaseHTTPRequestHandler):
    """HTTP front end of a `ServedModel` (attribute `served` of the server)."""

    protocol_version = "HTTP/1.1"
    server_version = "handshape_tf-serve"
    timeout = IDLE_TIMEOUT_S  # seconds a client may stall before its connection is dropped

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        logger.info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict, allow: str | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (ConnectionError, TimeoutError) as error:  # the client left before its answer
            logger.info("%s left before the response (%s)", self.address_string(), type(error).__name__)
            self.close_connection = True

    def _handle(self, method: str) -> None:
        try:
            status, payload, allow = self._route(method)
        except RequestError as error:
            status, payload, allow = error.status, {"error": error.message}, None
        except Exception as error:  # a bug must not take the server down
            logger.exception("error while handling %s %s", method, self.path)
            status, payload, allow = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"Internal error: {error}"}, None
        self._send_json(status, payload, allow)

    def _route(self, method: str) -> tuple[int, dict, str | None]:
        served: ServedModel = self.server.served
        path = self.path.split("?", 1)[0]
        match = _ROUTE.match(path)
        if match is None:
            self._discard_body()
            raise RequestError(HTTPStatus.NOT_FOUND, f"Malformed request: {method} {path}")
        rest = match["rest"] or ""
        if rest.startswith(":") and rest not in _VERBS:
            self._discard_body()
            raise RequestError(
                HTTPStatus.NOT_FOUND,
                f"Unsupported verb {rest!r} in {path}; this server implements :predict and :detect",
            )
        allowed = "POST" if rest in _VERBS else "GET"
        if method != allowed:
            self._discard_body()
            served.check_target(match["name"], match["version"])
            return (
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"Method {method} not allowed on {path}; use {allowed}"},
                allowed,
            )
        if method == "GET":
            served.check_target(match["name"], match["version"])
            return HTTPStatus.OK, served.metadata() if rest == "/metadata" else served.status(), None
        body = self._read_body()
        served.check_target(match["name"], match["version"])
        with self.server.workers:
            try:
                return HTTPStatus.OK, served.detect(body) if rest == ":detect" else served.predict(body), None
            finally:
                if len(body) > _TRIM_AFTER_BYTES:
                    del body
                    release_memory()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding is not supported; send a Content-Length")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Missing Content-Length header")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {length_header!r}") from None
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Request body of {length} bytes exceeds the limit of {limit} bytes",
            )
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"Request body not received within {self.timeout} s ({length} bytes announced)",
            ) from None
        if len(body) != length:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Request body ended after {len(body)} of {length} bytes")
        return body

    def _discard_body(self) -> None:
        """Drops the connection after this response when the client sent a body we do not read."""
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def do_GET(self):  # noqa: N802 (BaseHTTPRequestHandler's naming)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self):  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self):  # noqa: N802
        self._handle("PATCH")


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_memory() -> None:
    """Returns freed heap memory of all threads' malloc arenas to the system (glibc only)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_BUSY = json.dumps({"error": "Server busy: all connections are in use; retry shortly"}).encode()


class ModelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the served model, the body limit and bounded concurrency.

    At most `max_connections` connections have a thread; a connection over that gets 503 at
    once. At most `workers` requests are parsed and run at the same time.
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        served: ServedModel,
        max_body_bytes: int,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        workers: int = DEFAULT_WORKERS,
    ):
        self.served = served
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.connections = threading.BoundedSemaphore(max_connections)
        self.workers = threading.BoundedSemaphore(workers)
        self._refused = 0  # connections refused since the last warning (accept thread only)
        self._refused_logged = -float("inf")
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        if not self.connections.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def _refuse(self, request) -> None:
        """503 without reading the request (the accept loop must not wait on this client)."""
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Connection: close\r\nContent-Length: {len(_BUSY)}\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.sendall(head.encode() + _BUSY)
        except OSError:
            pass
        self.shutdown_request(request)
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 10.0:  # one line per 10 s under a flood
            logger.warning(
                "all %d connection slots busy: refused %d connection(s) with 503", self.max_connections, self._refused
            )
            self._refused, self._refused_logged = 0, now

    def handle_error(self, request, client_address):
        """One log line for clients that vanish; the traceback only for real failures."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.info("%s: connection dropped (%s)", client_address[0], type(error).__name__)
        else:
            logger.exception("error on the connection from %s", client_address[0])


def make_server(
    model,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    name: str = DEFAULT_NAME,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    workers: int = DEFAULT_WORKERS,
) -> ModelServer:
    """A bound (not yet serving) server; call `serve_forever()` and later `shutdown()`.

    Args:
      model: --model path, or an already loaded `ServedModel` (which holds max_batch and
        max_pixels).
      host: interface to listen on (127.0.0.1: this machine only).
      port: TCP port; 0 picks a free one (read it from `server.server_address[1]`).
      name: model name in URLs (ignored when `model` is a ServedModel).
      max_body_bytes: larger request bodies get 413.
      max_connections: connections served at once; more get 503.
      workers: requests parsed and run at once.

    Raises:
      OSError: the address cannot be bound (e.g. the port is in use).
    """
    for label, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_connections", max_connections),
        ("workers", workers),
    ):
        if value < 1:
            raise ValueError(f"{label} is {value}; expected >= 1")
    served = model if isinstance(model, ServedModel) else ServedModel(model, name=name)
    return ModelServer((host, port), served, max_body_bytes, max_connections, workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, type=Path, help="SavedModel directory, or a base directory of versions"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any free)"
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"model name in URLs (default {DEFAULT_NAME})")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / 2**20,
        help=f"largest request body, MiB (default {DEFAULT_MAX_BODY_BYTES // 2**20})",
    )
    limits = {
        "max_batch": (DEFAULT_MAX_BATCH, "largest batch of a request"),
        "max_pixels": (DEFAULT_MAX_PIXELS, "largest pixel count encoded images of a request decode to"),
        "max_connections": (DEFAULT_MAX_CONNECTIONS, "connections served at once (more get 503)"),
        "workers": (DEFAULT_WORKERS, "requests parsed and run at once"),
    }
    for key, (default, text) in limits.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=default, help=f"{text} (default {default})")
    add_detector_arguments(parser, "answer :detect requests with full photos")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port is {args.port}; expected 0..65535")
    if not args.max_body_mb > 0:
        parser.error(f"--max-body-mb is {args.max_body_mb}; expected > 0")
    for key in limits:
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} is {getattr(args, key)}; expected >= 1")
    if args.max_hands < 1:
        parser.error(f"--max-hands is {args.max_hands}; expected >= 1")
    if not re.fullmatch(r"[^/:?#\s]+", args.name):
        parser.error(f"--name is {args.name!r}; expected a name without '/', ':', '?', '#' or spaces")
    setup_logging(args.verbose, timestamps=True)
    try:
        detector = None
        if args.detector is not None:
            from handshape_tf.inference.detection import HandDetector

            detector = HandDetector(args.detector, side=args.side_model)
        served = ServedModel(
            args.model,
            name=args.name,
            max_batch=args.max_batch,
            max_pixels=args.max_pixels,
            detector=detector,
            max_hands=args.max_hands,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        server = make_server(
            served,
            host=args.host,
            port=args.port,
            max_body_bytes=max(1, int(args.max_body_mb * 2**20)),
            max_connections=args.max_connections,
            workers=args.workers,
        )
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    host, port = server.server_address[:2]
    logger.info("listening on http://%s:%d/v1/models/%s", host, port, served.name)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
