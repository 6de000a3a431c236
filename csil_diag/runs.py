"""Run directories: atomic writes, checkpoints, the saved config, and what produced them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from flax import serialization

from csil_diag.errors import UserError


def umask_mode() -> int:
    """0666 less the process umask: what ``open()`` would have given (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, umask_mode())
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
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Upgrades of saved state dicts from older layouts, registered by the models that own them (the HetStat's factor):
# the store restores any checkpoint through them without knowing a model.
STATE_UPGRADES: list[Callable[[Any], Any]] = []


def register_state_upgrade(upgrade: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Add ``upgrade`` (state dict → state dict, identity on today's layout) to what :func:`load_pytree` applies."""
    if upgrade not in STATE_UPGRADES:
        STATE_UPGRADES.append(upgrade)
    return upgrade


def _upgrade(state: Any) -> Any:
    for upgrade in STATE_UPGRADES:
        state = upgrade(state)
    return state


def save_pytree(path: str | os.PathLike, tree: Any) -> None:
    """A pytree (params, optimizer state) as flax msgpack, atomically."""
    atomic_write_bytes(path, serialization.to_bytes(tree))


def load_pytree(path: str | os.PathLike, target: Any) -> Any:
    """Restore into the structure of ``target``; a missing or mismatched file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} is missing; rerun the command that writes it")
    try:
        state = _upgrade(serialization.msgpack_restore(path.read_bytes()))
        return serialization.from_state_dict(target, state)
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


# ------------------------------------------------------------------------------------ output paths
def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path.cwd()


def _check_writable_parent(path: Path, option: str, inside: bool = False) -> None:
    """The nearest existing ancestor of ``path`` (``inside``: of ``path`` itself) must be a directory we can create
    things in.

    A probe directory is made and removed at once: ``os.access`` says yes to root on /proc and on
    read-only mounts, so only trying tells the truth."""
    parent = _nearest_existing(path if inside else path.parent)
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a directory; choose another {option}")
    try:
        read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise UserError(f"{option} {path}: {parent} is on a read-only file system; choose another {option}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".csil-diag-probe-"))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"{option} {path}: cannot create anything in {parent} ({reason}); choose another {option}"
        ) from None


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that cannot be written: an existing directory at its path, a parent
    that is a file or cannot be created, a read-only file system. Writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is an existing directory; give a file path such as {path / 'out'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} exists and is not writable; choose another {option}")
    _check_writable_parent(path, option)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output directory that cannot be used: an existing non-directory at its path, a
    parent that cannot be created, a read-only file system. Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is an existing file, not a directory; choose another {option}")
    _check_writable_parent(path, option, inside=True)
    return path


def read_json_file(path: str | os.PathLike, fix: str) -> Any:
    """A JSON file written by csil-diag; an unreadable or corrupt one is a one-line UserError naming it and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is unreadable or corrupt ({type(exc).__name__}); {fix}") from None


def read_parquet_file(path: str | os.PathLike, fix: str) -> pd.DataFrame:
    """A parquet file written by csil-diag; an unreadable or corrupt one is a one-line UserError naming it."""
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise UserError(f"{path} is unreadable or corrupt ({type(exc).__name__}); {fix}") from None


# ------------------------------------------------------------------------------------ identity
def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: data}


def identity_differences(saved: dict[str, Any], wanted: dict[str, Any], options: dict[str, str]) -> list[str]:
    """What differs between a run's saved identity and the one asked for, named as the user knows it: the CLI option
    (``options`` maps a dotted identity key such as ``bc.learning_rate`` to ``--lr``) with both values."""
    old, new = _flatten(saved), _flatten(wanted)
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{options.get(key, key)} {new.get(key)!r} (the run has {old.get(key)!r})")
    return out


def read_saved_config(out: Path) -> dict[str, Any] | None:
    """``<out>/config.json`` of a run directory being resumed (None for a new one); a damaged one is a UserError."""
    path = Path(out) / "config.json"
    if not path.exists():
        return None
    return read_json_file(path, f"delete {out} to start over, or choose another --out")


def check_resume(out: Path, saved: dict[str, Any] | None, identity: dict[str, Any], options: dict[str, str]) -> None:
    """Refuse to resume a run directory made with other settings, naming each differing option. A VLA fingerprint
    not yet known (the model is loaded later) is not compared; older runs kept the dataset's path, which is not
    compared either (the dataset is identified by its sha256)."""
    if saved is None:
        return
    old = {k: v for k, v in saved.get("identity", {}).items() if k != "demos"}
    if "vla_model" not in identity:
        old.pop("vla_model", None)
    diff = identity_differences(old, identity, options)
    if diff:
        raise UserError(
            f"{out} holds a run with other settings: {'; '.join(diff)}; "
            "repeat the run's options to resume it, or choose another --out"
        )


# ------------------------------------------------------------------------------------ the run directory
LOCK_FILE = ".lock"


def take_lock(lock_file: Path, name: Path, what: str, option: str = "--out") -> Any:
    """An exclusive ``flock`` on ``lock_file`` for ``name`` (held while the returned handle is open), or a one-line
    refusal naming the holder. The kernel drops the lock when its holder dies, however it dies, so a stale lock of a
    killed process is simply taken over; the file records who holds it, for the refusal message."""
    import fcntl

    try:
        handle = open(lock_file, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    except OSError as exc:
        raise UserError(f"cannot create {lock_file} ({exc.strerror}); choose another {option}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(f"{name} is in use by {holder}; wait for it to finish or choose another {option}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} ({what}, since {now_utc()})\n")
    handle.flush()
    return handle


class RunDir:
    """A run directory: checked before any work, locked (:func:`take_lock` on ``<dir>/.lock``) while a process writes
    it, removed again when a run that created it fails before writing anything."""

    def __init__(self, path: str | os.PathLike, option: str = "--out") -> None:
        self.path = Path(path)
        self.option = option
        self._handle: Any = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._handle is not None

    def check(self) -> RunDir:
        check_output_dir(self.path, self.option)
        return self

    def acquire(self, what: str) -> RunDir:
        """Create the directory if needed and take its lock, or refuse in one line naming the holder."""
        self.check()
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.path} ({exc.strerror}); choose another {self.option}") from None
        self._handle = take_lock(self.path / LOCK_FILE, self.path, what, self.option)
        return self

    def release(self, remove_lock_file: bool = False) -> None:
        """Drop the lock; a directory this process created and left empty (but for the lock) goes too.
        ``remove_lock_file``: also delete ``.lock`` (before the directory is published under another name)."""
        if self._handle is None:
            return
        exists = self.path.is_dir()
        if remove_lock_file or (self._created and exists and {p.name for p in self.path.iterdir()} <= {LOCK_FILE}):
            (self.path / LOCK_FILE).unlink(missing_ok=True)
        if self._created and exists and not any(self.path.iterdir()):
            with contextlib.suppress(OSError):
                self.path.rmdir()
        self._handle.close()
        self._handle = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
