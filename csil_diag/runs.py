"""Run directories: atomic writes, checkpoints, the saved config, and what produced them."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from flax import serialization

from csil_diag.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pytree(path: str | os.PathLike, tree: Any) -> None:
    """A pytree (params, optimizer state) as flax msgpack, atomically."""
    atomic_write_bytes(path, serialization.to_bytes(tree))


def load_pytree(path: str | os.PathLike, target: Any) -> Any:
    """Restore into the structure of ``target``; a missing or mismatched file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} is missing; rerun the command that writes it")
    try:
        return serialization.from_bytes(target, path.read_bytes())
    except Exception as exc:  # msgpack / structure errors
        raise UserError(
            f"checkpoint {path} does not match this model ({exc}); delete it or use another --out"
        ) from None


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes (first 16 hex digits): ties a run to the exact dataset it used."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    for pkg in ("csil-diag", "jax", "jaxlib", "flax", "optax", "robosuite", "mujoco", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["cpus"] = str(os.cpu_count())
    return out


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
