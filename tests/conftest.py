"""Shared fixtures: small datasets made by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from csil_diag.data.demos import DemoConfig, generate_demos

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def lift_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three lift demos with both cameras at 32×32 (robomimic layout)."""
    out = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    config = DemoConfig(task="lift", n=3, cameras=("agentview", "wrist"), image_size=32, seed=0, valid_fraction=0.34)
    generate_demos(config, out, workers=1)
    return out
