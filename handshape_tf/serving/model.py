"""TF Serving's REST semantics on a loaded SavedModel: status, metadata, :predict, :detect (no HTTP).

Request bodies (JSON) become numpy batches checked against the signature's inputs (shape, dtype,
--max-batch, --max-pixels) and outputs go back to JSON; `handshape_tf.serve` documents the
formats, the bounds and the error statuses.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

from handshape_tf.cli import tf_error_text
from handshape_tf.inference.backends import CorruptModelError
from handshape_tf.inference.image_header import ImageHeaderError, image_size

logger = logging.getLogger("handshape_tf.serve")  # the server logs under its command's name

DEFAULT_NAME = "handshape"
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_PIXELS = 2**24


class RequestError(Exception):
    """A request the server rejects: HTTP status and TF Serving-style message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def resolve_model_dir(path) -> tuple[Path, str]:
    """(SavedModel directory, version string) for --model (see `handshape_tf.serve`).

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
        """:detect response (see `handshape_tf.serve`) for a request body; raises RequestError."""
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
