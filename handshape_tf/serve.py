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
Row format: each instance is the value of the single input, or an object {input name: value};
all instances must have the same shape and are stacked into one batch. Columnar: "inputs" is
the (batched) value of the single input, or an object {input name: value}. A prediction is an
object {output name: value}, or the bare value when the signature has one output. Inputs of
string type take JSON strings (UTF-8) or {"b64": "<base64>"} objects for binary data (e.g.
PNG/JPEG files for predict_encoded); string outputs whose name ends in "_bytes" are returned
as {"b64": ...}. Integer inputs (serving_default's uint8 images) must be JSON integers within
the type's range; float inputs take any JSON numbers.

Errors are JSON {"error": "..."} as in TF Serving: 400 malformed JSON, a missing or unknown key
or signature, or inputs of the wrong shape or type; 404 unknown model, version or path; 405 a
method the path does not support; 411 no Content-Length; 413 a body over --max-body-mb; 500
an unexpected failure (logged; the server keeps running). Each connection is served by its own
thread (ThreadingHTTPServer), so concurrent clients run concurrently.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.cli import tf_error_text
from handshape_tf.inference.backends import CorruptModelError

logger = logging.getLogger("handshape_tf.serve")

DEFAULT_PORT = 8501
DEFAULT_NAME = "handshape"
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
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
    """

    def __init__(self, path, name: str = DEFAULT_NAME):
        import tensorflow as tf

        self.directory, self.version = resolve_model_dir(path)
        self.name = name
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(self.directory))
        except (OSError, tf.errors.OpError) as error:  # unparsable saved_model.pb, damaged variables
            raise CorruptModelError(self.directory, f"TensorFlow cannot load the SavedModel ({tf_error_text(error)})") from None
        self.signatures = dict(self._loaded.signatures)
        self._signature_defs = _signature_defs(self.directory)
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
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"JSON Parse error: {error}") from None
        if not isinstance(request, dict):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"Request body is a JSON {type(request).__name__}; expected an object"
            )
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
        if has_rows:
            arrays = _row_inputs(request["instances"], specs)
        else:
            arrays = _columnar_inputs(request["inputs"], specs)
        try:
            outputs = function(
                **{name: self._tf.constant(array, dtype=specs[name].dtype) for name, array in arrays.items()}
            )
        except (self._tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            message = getattr(error, "message", None) or str(error)
            raise RequestError(HTTPStatus.BAD_REQUEST, message.strip().splitlines()[0]) from None
        values = {name: _to_json(name, tensor.numpy()) for name, tensor in outputs.items()}
        if has_rows:
            return {"predictions": _rows(values)}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


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


def _row_inputs(instances, specs) -> dict[str, np.ndarray]:
    """{input name: batched array} from row-format instances."""
    if not isinstance(instances, list) or not instances:
        raise RequestError(HTTPStatus.BAD_REQUEST, "'instances' must be a non-empty JSON list (one entry per example)")
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


def _columnar_inputs(inputs, specs) -> dict[str, np.ndarray]:
    """{input name: batched array} from a columnar 'inputs' value."""
    named = _named_values(inputs, specs, "'inputs'")
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
    timeout = 60  # seconds a client may stall before its connection is dropped

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
        self.wfile.write(body)

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
        if rest.startswith(":") and rest != ":predict":
            self._discard_body()
            raise RequestError(
                HTTPStatus.NOT_FOUND, f"Unsupported verb {rest!r} in {path}; this server implements :predict"
            )
        allowed = "POST" if rest == ":predict" else "GET"
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
        return HTTPStatus.OK, served.predict(body), None

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
        body = self.rfile.read(length)
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


class ModelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the served model and the body size limit as attributes."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], served: ServedModel, max_body_bytes: int):
        self.served = served
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _Handler)


def make_server(
    model,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    name: str = DEFAULT_NAME,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ModelServer:
    """A bound (not yet serving) server; call `serve_forever()` and later `shutdown()`.

    Args:
      model: --model path, or an already loaded `ServedModel`.
      host: interface to listen on (127.0.0.1: this machine only).
      port: TCP port; 0 picks a free one (read it from `server.server_address[1]`).
      name: model name in URLs (ignored when `model` is a ServedModel).
      max_body_bytes: larger request bodies get 413.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes is {max_body_bytes}; expected >= 1")
    served = model if isinstance(model, ServedModel) else ServedModel(model, name=name)
    return ModelServer((host, port), served, max_body_bytes)


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
        help="largest request body, MiB (default 64)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port is {args.port}; expected 0..65535")
    if not args.max_body_mb > 0:
        parser.error(f"--max-body-mb is {args.max_body_mb}; expected > 0")
    if not re.fullmatch(r"[^/:?#\s]+", args.name):
        parser.error(f"--name is {args.name!r}; expected a name without '/', ':', '?', '#' or spaces")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        served = ServedModel(args.model, name=args.name)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    server = make_server(served, host=args.host, port=args.port, max_body_bytes=max(1, int(args.max_body_mb * 2**20)))
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
