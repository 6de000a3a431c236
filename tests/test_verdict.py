"""The report's verdict follows the numbers: constructed runs with known separation read as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csil_diag.diag.entropy import separation_summary
from csil_diag.diag.verdict import run_verdict, seed_outcome
from csil_diag.report.pdf import build_report, verdict_page

A = 7


def _metrics(gauss: np.ndarray, entropy: np.ndarray) -> dict[str, np.ndarray]:
    std = np.exp(np.repeat(gauss[:, None] / A, A, axis=1))
    return {"entropy": entropy, "gaussian_entropy": gauss, "std": std}


def _online_row(seed: int, online_gauss, expert_gauss, online_h=None, expert_h=None) -> dict:
    """An online row as `csil-diag entropy` writes it, from per-state values of 6 online and 6 held-out episodes."""
    online_h = online_gauss if online_h is None else online_h
    expert_h = expert_gauss if expert_h is None else expert_h
    groups = np.repeat(np.arange(6), 20)
    online, expert = _metrics(online_gauss, online_h), _metrics(expert_gauss, expert_h)
    row = separation_summary(online, groups, expert, groups, "valid", 500, seed)
    return {"seed": seed, "step": 1000, "split": "online", **row}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


RNG = np.random.default_rng(0)
N = 120


def test_identical_sigma_reads_exactly_no_separation() -> None:
    same = np.full(N, -3.2)
    row = _online_row(0, same, same)
    assert row["gap_gauss_valid"] == 0.0 and row["gap_gauss_valid_lo"] == 0.0 and row["gap_gauss_valid_hi"] == 0.0
    assert row["auroc_gauss_valid"] == 0.5
    verdict = run_verdict(_table([row]), episodes=6, valid_demos=6)
    assert verdict.outcome == "not separated"
    assert verdict.sentence.startswith("NOT SEPARATED")


def test_sigma_equal_to_a_negligible_margin_reads_no_separation_although_auroc_ranks_it() -> None:
    """An untrained HetStat: σ nearly constant, slightly higher on every expert state (4th decimal). Perfectly
    ranked (AUROC 0), tight CI below 0, yet a gap of ~0.0004 nats: not a separation, let alone a collapse."""

    def rows(shift: float) -> dict:
        expert = -3.2 + RNG.uniform(0.0, 1e-4, N)
        return _online_row(0, expert - shift - 1e-4, expert)

    row = rows(A * np.log1p(3e-5))
    assert row["auroc_gauss_valid"] == 0.0 and row["gap_gauss_valid_hi"] < 0.0
    verdict = run_verdict(_table([row]), episodes=6, valid_demos=6)
    assert verdict.outcome == "not separated"
    assert any("AUROC ranks differences too small to matter" in w for w in verdict.warnings)
    # The same shape at a 5 % σ difference per dimension is a real (reversed) separation, without the warning.
    verdict = run_verdict(_table([rows(A * np.log1p(0.05))]), episodes=6, valid_demos=6)
    assert verdict.outcome == "reversed"
    assert not any("too small to matter" in w for w in verdict.warnings)


def test_identical_sigma_with_h_moving_warns_that_h_is_not_the_variance() -> None:
    """The residual-mode artefact: σ the same everywhere, H different (the tanh Jacobian at π0's action)."""
    same = np.full(N, -3.2)
    row = _online_row(0, same, same, online_h=RNG.normal(2.0, 0.3, N), expert_h=RNG.normal(-1.0, 0.3, N))
    verdict = run_verdict(_table([row]), episodes=6, valid_demos=6)
    assert verdict.outcome == "not separated"
    assert any("H separates but Σ log σ does not" in w for w in verdict.warnings)


def test_higher_online_sigma_is_separated_lower_is_reversed_and_disagreement_is_mixed() -> None:
    up = [_online_row(s, RNG.normal(1.0, 0.2, N), RNG.normal(-2.0, 0.2, N)) for s in range(3)]
    down = [_online_row(s, RNG.normal(-2.0, 0.2, N), RNG.normal(1.0, 0.2, N)) for s in range(3)]
    assert run_verdict(_table(up), episodes=10, valid_demos=20).outcome == "separated"
    reversed_ = run_verdict(_table(down), episodes=10, valid_demos=20)
    assert reversed_.outcome == "reversed" and "collapse" in reversed_.sentence
    assert not reversed_.warnings  # 3 seeds × 10 rollouts × 20 held-out demos: enough to say
    mixed = run_verdict(_table([up[0], down[1], up[2]]), episodes=10, valid_demos=20)
    assert mixed.outcome == "mixed" and "2 separated, 1 reversed" in mixed.sentence


def test_too_few_seeds_or_rollouts_are_warned() -> None:
    row = _online_row(0, RNG.normal(1.0, 0.2, N), RNG.normal(-2.0, 0.2, N))
    warnings = run_verdict(_table([row]), episodes=4, valid_demos=2).warnings
    assert any("only 1 seed" in w for w in warnings)
    assert any("only 4 online rollouts" in w for w in warnings)
    assert any("only 2 held-out demos" in w for w in warnings)


@pytest.mark.parametrize(
    ("gap", "low", "high", "outcome"),
    [
        (0.0, 0.0, 0.0, "not separated"),
        (0.0, float("nan"), float("nan"), "not separated"),
        (0.5, float("nan"), float("nan"), "undetermined"),
        (0.5, 0.1, 0.9, "separated"),
        (-0.5, -0.9, -0.1, "reversed"),
        (0.2, -0.1, 0.5, "not separated"),
        (0.005, 0.004, 0.006, "not separated"),
        (-0.005, -0.006, -0.004, "not separated"),
        (0.02, 0.01, 0.03, "separated"),
    ],
)
def test_seed_outcome(gap: float, low: float, high: float, outcome: str) -> None:
    assert seed_outcome(gap, low, high) == outcome


def test_report_verdict_page_of_a_run_without_separation(tmp_path: Path) -> None:
    """A run directory whose σ never separates: the report's verdict page says so."""
    import json

    from tests.test_entropy import tiny_config

    same = np.full(N, -3.2)
    rows = [_online_row(s, same, same) for s in range(3)]
    table = pd.DataFrame(
        [
            {**r, "step": step, "entropy": -1.0, "gaussian_entropy": -3.2, "success_rate": 0.0, "auroc_train": 0.5}
            | {f"std_dim{i}": 0.3 for i in range(A)}
            for r in rows
            for step in (0, 1000)
        ]
    )
    expert = table.assign(split="valid")
    run = tmp_path / "flat"
    run.mkdir()
    pd.concat([table, expert, expert.assign(split="train")]).to_parquet(run / "entropy.parquet")
    from dataclasses import asdict

    config = asdict(tiny_config(tmp_path / "demos.hdf5", seeds=(0, 1, 2), episodes=6, steps=1000, every=1000))
    meta = {
        "config": config,
        "demos": {"fingerprint": "x", "train_demos": 54, "valid_demos": 6, "train_states": 1, "valid_states": 1},
        "versions": {},
        "input_width": 19,
    }
    (run / "config.json").write_text(json.dumps(meta))
    from csil_diag.report.pdf import load_run

    text = "\n".join(t.get_text() for page in verdict_page([load_run(run)]) for t in page.texts)
    assert "NOT SEPARATED at step 1000" in text
    assert all(f"seed {s}: not separated" in text for s in range(3))
    assert "only 6 online rollouts per point" in text
    summary = build_report([run], tmp_path / "r.pdf")
    assert summary.pages == 9


def test_residual_mode_with_sigma_identical_reads_no_separation_although_h_moves() -> None:
    """The step-0 residual case, exactly: one state representation everywhere (σ identical), π0's action near its
    ±1 bounds on online states and near 0 on expert states. Σ log σ must read exactly no separation; H moves with
    the tanh Jacobian at π0's action, and the verdict says so."""
    import jax

    from csil_diag.config import HetStatConfig
    from csil_diag.diag.entropy import make_state_evaluator
    from csil_diag.policy.hetstat import HetStat

    model = HetStat(HetStatConfig(hidden=(16,), bottleneck=4, features=16, covariance_blocks=2), A)
    x = np.zeros((N, 5), np.float32)
    params = model.init(jax.random.key(0), x)
    evaluate = make_state_evaluator(model, "residual", 16)
    online = evaluate(params, x, np.full((N, A), 0.95, np.float32), 1)
    expert = evaluate(params, x, np.zeros((N, A), np.float32), 2)
    groups = np.repeat(np.arange(6), 20)
    row = separation_summary(online, groups, expert, groups, "valid", 200, 0)
    assert row["gap_gauss_valid"] == 0.0 and row["auroc_gauss_valid"] == 0.5
    assert row["auroc_gauss_valid_lo"] == row["auroc_gauss_valid_hi"] == 0.5
    assert row["gap_valid"] < -1.0 and row["auroc_valid"] < 0.1  # H: the Jacobian at a ≈ ±0.95, not σ
    verdict = run_verdict(_table([{"seed": 0, "step": 1000, "split": "online", **row}]), 10, 20)
    assert verdict.outcome == "not separated"
