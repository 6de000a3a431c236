"""`compare`'s parameter audit: each model's fine-tuning regime and its `vla diff` against the base checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from csil_diag.runs import atomic_write_json, read_json_file

AUDIT_FILE = "audit.json"


def model_regime(model_dir: Path) -> str:
    """The fine-tuning regime recorded in a checkpoint's train.json ('?' for a checkpoint trained elsewhere)."""
    path = Path(model_dir) / "train.json"
    if not path.exists():
        return "?"
    record = read_json_file(path, "the checkpoint is damaged; retrain it")
    train = record.get("identity", {}).get("train", {})
    return f"{record.get('kind', '')}:{train.get('regime', '?')}".strip(":")


def write_audit(sweep_dir: Path, base: Path, models: list[Path], labels: list[str]) -> None:
    """The `vla diff` parameter audit of every model against ``base``, stored in the sweep for its report."""
    from csil_diag.vla.diff import diff_checkpoints

    audit = {
        "base": str(base),
        "models": {
            label: [asdict(g) | {"relative": g.relative} for g in diff_checkpoints(base, model)]
            for label, model in zip(labels, models, strict=True)
        },
    }
    atomic_write_json(Path(sweep_dir) / AUDIT_FILE, audit)
