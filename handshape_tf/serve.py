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
import logging
import re
import sys
from pathlib import Path

from handshape_tf.cli import add_detector_arguments, add_verbose_argument, setup_logging
from handshape_tf.serving.http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    make_server,
)
from handshape_tf.serving.model import DEFAULT_MAX_BATCH, DEFAULT_MAX_PIXELS, DEFAULT_NAME, ServedModel

logger = logging.getLogger("handshape_tf.serve")

EXIT_USAGE = 2


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
