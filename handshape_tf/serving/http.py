"""HTTP front end of a `ServedModel`: routes, bounded request bodies, connections and workers.

`make_server` gives a bound `ModelServer`; `handshape_tf.serve` is its command line and documents
the endpoints and the bounds.
"""

from __future__ import annotations

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

from handshape_tf.serving.model import DEFAULT_NAME, RequestError, ServedModel

logger = logging.getLogger("handshape_tf.serve")  # the server logs under its command's name

DEFAULT_PORT = 8501
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_WORKERS = 2
IDLE_TIMEOUT_S = 20
# Bodies above this size are followed by malloc_trim: glibc otherwise keeps the freed
# JSON/numpy memory of a large request in its per-thread arenas for good.
_TRIM_AFTER_BYTES = 2**20
_VERBS = (":predict", ":detect")

_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?/?$")


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
