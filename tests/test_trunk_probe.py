"""The trunk probe: nearest-demo distances in three spaces and where online/expert separation is lost."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from csil_diag.config import HetStatConfig
from csil_diag.diag.trunk_probe import (
    HEAD,
    POSTERIOR,
    SPACES,
    nearest_distances,
    probe_run,
    probe_spaces,
    reading,
)
from csil_diag.diag.verdict import NEGLIGIBLE_GAP
from csil_diag.envs.rollouts import load_online_states, time_in_episode
from csil_diag.errors import UserError
from csil_diag.features.sources import term_columns
from csil_diag.features.spec import InputSpec
from csil_diag.policy.hetstat import HetStat

TINY = HetStatConfig(hidden=(32, 32), bottleneck=8, features=32, covariance_blocks=4)


@pytest.fixture(scope="module")
def tiny_run(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny entropy run (steps 0, 2, 4; only the last parameters kept)."""
    from test_entropy import tiny_config

    from csil_diag.diag.entropy_run import EntropyRun

    out = tmp_path_factory.mktemp("probe") / "run"
    EntropyRun(tiny_config(lift_demos, checkpoints="last"), out, workers=0).run()
    return out


def test_nearest_distances_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    q, ref = rng.standard_normal((2500, 7)), rng.standard_normal((333, 7))
    brute = np.sqrt(((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest_distances(q, ref, chunk=1024), brute, rtol=1e-4, atol=1e-4)
    assert nearest_distances(ref[:5], ref).max() == 0.0  # a reference point is its own nearest neighbour


def test_time_in_episode_counts_each_episode_separately() -> None:
    np.testing.assert_array_equal(time_in_episode(np.array([0, 1, 0, 1, 1, 2])), [0, 0, 1, 1, 2, 0])


def test_probe_spaces_separation_and_its_absence() -> None:
    model = HetStat(TINY, 7)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    rng = np.random.default_rng(1)
    train = rng.standard_normal((400, 4)).astype(np.float32)
    valid = rng.standard_normal((100, 4)).astype(np.float32)
    episodes = np.repeat(np.arange(10), 10)
    # Online states drawn like the demos: no space can tell them apart (AUROC ≈ 0.5).
    same = rng.standard_normal((100, 4)).astype(np.float32)
    rows = {r["space"]: r for r in probe_spaces(model, params, train, valid, episodes, same, episodes, 200)}
    assert set(rows) == {*SPACES, HEAD} and rows["bottleneck"]["width"] == 8 and rows["features"]["width"] == 32
    assert all(abs(rows[s]["auroc"] - 0.5) < 0.15 for s in SPACES), rows
    # Online states far from the demos: the input separates them perfectly.
    far = (same + 6.0).astype(np.float32)
    rows = {r["space"]: r for r in probe_spaces(model, params, train, valid, episodes, far, episodes, 200)}
    assert rows["input"]["auroc"] == 1.0 and rows["input"]["auroc_lo"] > 0.9
    assert rows["input"]["online_distance"] > rows["input"]["valid_distance"]
    # An untrained head (L = I) gives σ equal on every state up to rounding, far states included: whatever its
    # AUROC ranks, the gap is negligible and the reading says σ does not separate.
    assert abs(rows[HEAD]["gap"]) < NEGLIGIBLE_GAP and rows[HEAD]["width"] == 7
    at_init = pd.DataFrame([{"step": 0, **r} for r in rows.values()])
    assert "σ does not" in reading(at_init) and "lost in the head" in reading(at_init)


def test_input_terms_say_which_part_of_the_input_separates() -> None:
    """Online states that differ from the demos only in the first term's columns: that term's row separates, the
    other's does not, and the input's is the whole (a metric of the part, not of the joints standing in for it)."""
    model = HetStat(TINY, 7)
    params = model.init(jax.random.key(0), jnp.zeros((1, 6)))
    rng = np.random.default_rng(2)
    train, valid, online = (rng.standard_normal((n, 6)).astype(np.float32) for n in (400, 100, 100))
    online[:, :4] += 6.0
    episodes = np.repeat(np.arange(10), 10)
    terms = {"pi0[:4]": slice(0, 4), "joints": slice(4, 6)}
    probed = probe_spaces(model, params, train, valid, episodes, online, episodes, 200, terms=terms)
    rows = {r["space"]: r for r in probed}
    assert list(rows)[:3] == ["input", "input: pi0[:4]", "input: joints"]
    assert rows["input: pi0[:4]"]["auroc"] == 1.0 and rows["input: pi0[:4]"]["width"] == 4
    assert abs(rows["input: joints"]["auroc"] - 0.5) < 0.15 and rows["input: joints"]["width"] == 2
    text = reading(pd.DataFrame([{"step": 0, **r} for r in rows.values()]))
    assert "AUROC input 1.00 (pi0[:4] 1.00, joints 0." in text


def test_term_columns_place_each_input_term() -> None:
    spec = InputSpec.parse("pi0[:64]+joints+object")
    assert term_columns(spec, 83, {"pi0": 256}) == {
        "pi0[:64]": slice(0, 64),
        "joints": slice(64, 73),
        "object": slice(73, 83),  # the task's object width: what remains
    }
    assert term_columns(InputSpec.parse("joints+pi0{3,9}"), 11, {"pi0": 32}) == {
        "joints": slice(0, 9),
        "pi0{3,9}": slice(9, 11),
    }
    with pytest.raises(ValueError, match="cannot place"):
        term_columns(InputSpec.parse("pi0+joints"), 50, {"pi0": 32})


def test_reading_names_where_separation_is_lost() -> None:
    def frame(values: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
        return pd.DataFrame(
            [{"step": 10, "space": s, "auroc": a, "auroc_lo": lo, "auroc_hi": hi} for s, (a, lo, hi) in values.items()]
        )

    lost = frame({"input": (0.9, 0.8, 0.95), "bottleneck": (0.52, 0.45, 0.6), "features": (0.5, 0.4, 0.6)})
    assert "the trunk collapses it" in reading(lost)
    absent = frame({"input": (0.55, 0.45, 0.65), "bottleneck": (0.5, 0.4, 0.6), "features": (0.5, 0.4, 0.6)})
    assert "the embedding" in reading(absent)
    kept = frame({"input": (0.9, 0.8, 0.95), "bottleneck": (0.85, 0.7, 0.9), "features": (0.8, 0.7, 0.9)})
    assert "separated in every space" in reading(kept)  # a probe written before the head row
    features = {"input": (0.99, 0.98, 1.0), "bottleneck": (0.92, 0.87, 0.95), "features": (0.92, 0.88, 0.95)}

    def with_head(auroc: tuple[float, float, float], gap: float) -> pd.DataFrame:
        f = frame({**features, HEAD: auroc})
        return f.assign(gap=np.where(f.space == HEAD, gap, np.nan))

    assert "lost in the head" in reading(with_head((0.55, 0.45, 0.65), 1.0))
    assert "lost in the head" in reading(with_head((0.9, 0.8, 0.95), 0.004))  # ranks, but σ is the same
    partial = reading(with_head((0.69, 0.62, 0.75), 2.0))
    assert "separated in every space and in σ" in partial and "largest loss is features → head σ (-0.23)" in partial
    assert "largest loss is input → bottleneck (-0.07)" in reading(with_head((0.9, 0.85, 0.95), 2.0))
    posterior = frame({**features, HEAD: (0.69, 0.62, 0.75), POSTERIOR: (0.80, 0.74, 0.85)})
    posterior["gap"] = np.where(posterior.space.isin([HEAD, POSTERIOR]), 2.0, np.nan)
    assert "a Bayesian head on the same features reads 0.80" in reading(posterior)
    posterior.loc[posterior.space == POSTERIOR, "gap"] = 0.001  # a negligible gap is no separation, whatever the AUROC
    assert "Bayesian" not in reading(posterior)
    features["bottleneck"] = features["features"] = (0.97, 0.95, 0.99)
    assert "largest loss" not in reading(with_head((0.95, 0.9, 0.98), 2.0))


def test_probe_of_an_entropy_run(tiny_run: Path, tmp_path: Path) -> None:
    out = tiny_run
    online = load_online_states(out / "features" / "seed0_step00000004.npz")
    assert online["x"].shape[1] == 19 and len(online["x"]) == len(online["t"]) == len(online["episode"])
    frame, notes = probe_run(out)
    assert not notes
    terms = {"input: joints", "input: object"}  # which part of joints+object carries the input's separation
    assert sorted(frame.step.unique()) == [0, 4] and set(frame.space) == {*SPACES, *terms, HEAD, POSTERIOR}
    assert frame[frame.space.isin(terms)].groupby("space").width.first().to_dict() == {
        "input: joints": 9,
        "input: object": 10,
    }
    assert frame.auroc.between(0, 1).all() and (out / "probes" / "trunk.parquet").exists()
    # The head row is the entropy run's own variance-only AUROC on the same states.
    run = pd.read_parquet(out / "entropy.parquet")
    logged = run[(run.split == "online") & (run.step == 4)].auroc_gauss_valid.iloc[0]
    assert frame[(frame.space == HEAD) & (frame.step == 4)].auroc.iloc[0] == pytest.approx(logged, abs=1e-9)
    assert set(frame[frame.space == POSTERIOR].step) == {0, 4}  # the noise variance: the training demos' MSE
    from csil_diag.report.pdf import build_report

    summary = build_report([out], tmp_path / "r.pdf")
    assert any(p.name.endswith("_trunk_probe.png") for p in summary.pngs)


def test_a_run_without_online_states_is_one_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "old"
    shutil.copytree(tiny_run, out)
    shutil.rmtree(out / "features")  # as a run made before online states were kept
    with pytest.raises(UserError, match="no point with kept online states"):
        probe_run(out)


def test_an_unfinished_seed_is_named_as_unfinished_not_as_an_old_run(tiny_run: Path, tmp_path: Path) -> None:
    import json
    import shutil

    out = tmp_path / "extended"
    shutil.copytree(tiny_run, out)
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["seeds"] = [0, 1]  # as a sweep extended to seed 1 before its first point
    (out / "config.json").write_text(json.dumps(meta))
    frame, notes = probe_run(out)
    assert set(frame.seed) == {0}
    assert notes == ["seed 1: no finished point yet (the run is incomplete: rerun its command to resume it)"]
    for name in ("points", "features"):
        shutil.rmtree(out / name)
    with pytest.raises(UserError, match="has no finished point yet; rerun its command"):
        probe_run(out)


def test_projections_are_reproducible_and_reported(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from csil_diag.diag.projections import embed_2d, project_run
    from csil_diag.report.pdf import build_report

    x = np.random.default_rng(0).standard_normal((300, 12))
    for method in ("pca", "tsne"):
        a, b = embed_2d(x, method, seed=3), embed_2d(x, method, seed=3)
        assert a.shape == (300, 2) and np.array_equal(a, b), method
    with pytest.raises(UserError, match="--method must be one of"):
        embed_2d(x, "mds")

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    frame = project_run(out, "pca", max_states=400)
    assert set(frame.space) == set(SPACES) and sorted(frame.step.unique()) == [0, 4]
    assert set(frame.split) == {"train", "valid", "online"} and len(frame) <= 3 * 400 + 30
    again = project_run(out, "pca", max_states=400)
    pd.testing.assert_frame_equal(frame, again)
    summary = build_report([out], tmp_path / "r.pdf")
    names = {p.name for p in summary.pngs}
    assert {"r_projection0_pca_split.png", "r_projection0_pca_t.png", "r_projection0_pca_success.png"} <= names
