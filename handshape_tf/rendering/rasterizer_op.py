"""Builds, caches and loads tensorflow-graphics' CPU triangle rasterizer op.

The prebuilt kernels in the tensorflow-graphics 2021.12.3 wheel do not load with the
TensorFlow installed here, but the wheel ships the CPU kernel's C++ sources. On first use
`load_rasterizer_op()` compiles them against the installed TensorFlow into a cache folder
(default `~/.cache/handshape_tf/`, override with the environment variable
`HANDSHAPE_TF_CACHE`), keyed by the TensorFlow version, the tensorflow-graphics version and a
hash of the sources and compiler flags, then loads it and registers it as
`tensorflow_graphics.rendering.kernels.gen_rasterizer_op`, the module tfg's CPU backend
imports first.

The compiler is `$CXX` if set, else `g++`. Concurrent builds are serialised by a file lock
in the cache folder, and each build is written to a temporary file renamed into place, so a
reader never sees a half-written library.

Command line (the set-up script runs `handshape build-rasterizer`, the same without TensorFlow's
start-up notices): `python -m handshape_tf.rendering.rasterizer_op` builds the op if needed and
prints the path of the shared library.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import tensorflow as tf

logger = logging.getLogger(__name__)

CACHE_ENV = "HANDSHAPE_TF_CACHE"
COMPILER_ENV = "CXX"
DEFAULT_COMPILER = "g++"
TFG_MODULE_NAME = "tensorflow_graphics.rendering.kernels.gen_rasterizer_op"
_SOURCES = ("rasterize_triangles_impl.cc", "rasterize_triangles_op.cc")
_HEADERS = ("rasterize_triangles_impl.h",)
_BUILD_FLAGS = ("-std=c++17", "-shared", "-fPIC", "-O2")

_lock = threading.Lock()
_loaded: types.ModuleType | None = None


def default_cache_dir() -> Path:
    """The cache folder: `$HANDSHAPE_TF_CACHE` if set, else `~/.cache/handshape_tf`."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "handshape_tf"


def _kernel_source_dir() -> Path:
    spec = importlib.util.find_spec("tensorflow_graphics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tensorflow-graphics is not installed; expected tensorflow-graphics==2021.12.3")
    folder = Path(list(spec.submodule_search_locations)[0]) / "rendering" / "kernels"
    missing = [name for name in _SOURCES + _HEADERS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(
            f"tensorflow-graphics at {folder.parent.parent} lacks the rasterizer sources {missing}; "
            "expected the tensorflow-graphics==2021.12.3 wheel, which ships them"
        )
    return folder


def _compiler_command() -> list[str]:
    """The compiler command (`$CXX` split like a shell would, or `g++`), resolved on PATH."""
    command = shlex.split(os.environ.get(COMPILER_ENV, "") or DEFAULT_COMPILER)
    resolved = shutil.which(command[0])
    if resolved is None:
        raise RuntimeError(
            f"C++ compiler {command[0]!r} not found (from ${COMPILER_ENV} or the default "
            f"{DEFAULT_COMPILER!r}, searched PATH={os.environ.get('PATH', '')!r}); it is needed once "
            "to build the tensorflow-graphics rasterizer op. Install it with "
            "`apt-get install g++` (Debian/Ubuntu) or set CXX to a C++17 compiler."
        )
    return [resolved, *command[1:]]


def _build_key(source_dir: Path, compile_flags: list[str], link_flags: list[str]) -> str:
    digest = hashlib.sha256()
    for name in _SOURCES + _HEADERS:
        digest.update(name.encode())
        digest.update((source_dir / name).read_bytes())
    digest.update(" ".join([*_BUILD_FLAGS, *compile_flags, *link_flags]).encode())
    tfg_version = importlib.metadata.version("tensorflow-graphics")
    return f"tf{tf.__version__}-tfg{tfg_version}-{digest.hexdigest()[:16]}"


def library_path(cache_dir: str | Path | None = None) -> Path:
    """Where the op library for the installed TF/tfg lives (built or not) in `cache_dir`."""
    source_dir = _kernel_source_dir()
    key = _build_key(source_dir, tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags())
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"rasterizer_op-{key}.so"


def build_rasterizer_op(cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Compiles the op into `cache_dir` unless a build for this TF/tfg/source already exists.

    Args:
      cache_dir: folder for the library; None for `default_cache_dir()`.
      force: rebuild even if the library exists.

    Returns:
      Path of the shared library.

    Raises:
      RuntimeError: no compiler, missing sources, or the compilation failed (with its output).
    """
    target = library_path(cache_dir)
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".rasterizer_op.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # Released when the file closes.
        if target.is_file() and not force:  # Another process built it while we waited.
            return target
        compiler = _compiler_command()
        source_dir = _kernel_source_dir()
        handle, temp_name = tempfile.mkstemp(prefix=".rasterizer_op-", suffix=".so", dir=target.parent)
        os.close(handle)
        command = [
            *compiler,
            *_BUILD_FLAGS,
            *tf.sysconfig.get_compile_flags(),
            *(str(source_dir / name) for name in _SOURCES),
            "-o",
            temp_name,
            *tf.sysconfig.get_link_flags(),
        ]
        logger.info("building the rasterizer op into %s (about 10 s, once)", target)
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"building the rasterizer op failed (exit code {result.returncode}); command: "
                    f"{shlex.join(command)}\n{result.stderr[-4000:]}"
                )
            os.chmod(temp_name, 0o755)  # mkstemp creates it private (0600).
            os.replace(temp_name, target)
        finally:
            if os.path.exists(temp_name):
                os.remove(temp_name)
        logger.info("built %s in %.1f s", target, time.perf_counter() - start)
    return target


def load_rasterizer_op(cache_dir: str | Path | None = None) -> types.ModuleType:
    """Builds (first time only), loads and registers the rasterizer op for tfg.

    Safe to call repeatedly and from several threads: the op is loaded once per process.

    Args:
      cache_dir: folder for the library; None for `default_cache_dir()`.

    Returns:
      The op module, with `rasterize_triangles(vertices, triangles, image_width, image_height,
      num_layers, face_culling_mode)`.

    Raises:
      RuntimeError: see `build_rasterizer_op`.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            path = build_rasterizer_op(cache_dir)
            module = tf.load_op_library(str(path))
            sys.modules.setdefault(TFG_MODULE_NAME, module)
            _loaded = module
        return _loaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m handshape_tf.rendering.rasterizer_op", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: ${CACHE_ENV} or ~/.cache/handshape_tf")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = build_rasterizer_op(args.cache_dir, force=args.force)
    except RuntimeError as error:
        parser.exit(1, f"error: {error}\n")
    tf.load_op_library(str(path))  # Fails here, not at first use, if the build is unusable.
    print(path)


if __name__ == "__main__":
    main()
