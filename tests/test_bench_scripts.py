"""The measurement modules behind the records in results/ run at their smallest size and report what their records
say: every timing positive and finite, one figure per compared variant, the record file under its command line."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import jax
import optax
import pytest

import csil_diag.policy.hetstat as hetstat_module
from csil_diag.benchmarks import factor_layout_ab, optimizer_memory, optimizer_share, render_profile
from csil_diag.benchmarks.speed import bc_param_count, bc_runner, bc_step_flops


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _record(path: Path, module: str) -> list[str]:
    """The record's lines after its command line, which must name the module (not a results/ script)."""
    command, *lines = path.read_text().splitlines()
    assert command.startswith(f"$ python -m {module} ")
    return lines


def test_factor_layout_ab_times_the_other_checkouts_hetstat_against_todays(tmp_path: Path) -> None:
    out = tmp_path / "ab.txt"
    result = factor_layout_ab.main([hetstat_module.__file__, "full", "--quick", "--out", str(out)])
    assert set(result["s_per_step"]) == {"old", "new"}
    assert all(_positive(s) for s in result["s_per_step"].values())
    assert _positive(result["matmul_gflops"])
    quick = factor_layout_ab.QUICK
    cfg = replace(quick.hetstat, covariance="full")
    assert result["useful_gflop_per_step"] == bc_step_flops(cfg, quick.width, quick.batch)["useful"] / 1e9
    lines = _record(out, factor_layout_ab.MODULE)
    assert [line.split(":")[0] for line in lines] == ["full old", "full new"]
    assert all(re.search(r"ms/step, [\d.]+ GF/s = [\d.]+ of matmul [\d.]+ GF/s$", line) for line in lines)


def test_the_old_hetstat_is_loaded_from_its_file_not_imported() -> None:
    old = factor_layout_ab.load_hetstat(hetstat_module.__file__)
    assert old.__name__ == "HetStat" and old is not hetstat_module.HetStat
    assert old.__module__ == "old_hetstat"


def test_optimizer_share_times_each_optimizer_and_covariance(tmp_path: Path) -> None:
    out = tmp_path / "share.txt"
    result = optimizer_share.main(["--quick", "--out", str(out)])
    assert set(result["s_per_step"]) == {(c, o) for c in ("full", "diagonal") for o in optimizer_share.OPTIMIZERS}
    assert all(_positive(s) for s in result["s_per_step"].values()) and _positive(result["matmul_gflops"])
    lines = _record(out, optimizer_share.MODULE)
    assert lines[0].startswith("matmul 256x1024x1024: ") and len(lines) == 5
    assert all(re.search(r"ms/step = \d+% of the matmul rate in useful FLOPs$", line) for line in lines[1:])


def test_the_sgd_step_really_runs_sgd_and_the_default_comes_back() -> None:
    from csil_diag.config import BCConfig
    from csil_diag.policy import bc as bc_module
    from csil_diag.policy.hetstat import HetStat

    default = bc_module.make_optimizer
    model = HetStat(factor_layout_ab.TINY, 7)

    def moments(state) -> bool:  # AdamW keeps first and second moments; plain SGD keeps none
        is_adam = lambda s: isinstance(s, optax.ScaleByAdamState)
        return any(map(is_adam, jax.tree_util.tree_leaves(state.opt_state, is_leaf=is_adam)))

    with optimizer_share.bc_optimizer(optimizer_share.OPTIMIZERS["sgd"]):
        _, sgd = bc_runner(model, BCConfig(batch_size=8), 16, 1)
    assert bc_module.make_optimizer is default
    _, adamw = bc_runner(model, BCConfig(batch_size=8), 16, 1)
    assert not moments(sgd) and moments(adamw)


def test_optimizer_memory_reports_streams_updates_and_the_leaf(tmp_path: Path) -> None:
    out = tmp_path / "memory.txt"
    result = optimizer_memory.main(["--quick", "--out", str(out)])
    quick = optimizer_memory.QUICK
    assert list(result["stream_ms"]) == list(quick.streams)
    assert result["parameters"] == bc_param_count(quick.hetstat, quick.width)
    assert set(result["update_ms"]) == {"adamw", "sgd"} and set(result["leaf_ms"]) == {True, False}
    figures = [*result["stream_ms"].values(), *result["update_ms"].values(), *result["leaf_ms"].values()]
    assert all(math.isfinite(ms) for ms in figures)
    # AdamW's ten passes and its arithmetic against SGD's three: measurably slower even at this size
    assert _positive(result["update_ms"]["adamw"]) and result["update_ms"]["adamw"] > result["update_ms"]["sgd"]
    assert all(_positive(ms) for ms in (*result["stream_ms"].values(), *result["leaf_ms"].values()))
    lines = _record(out, optimizer_memory.MODULE)
    assert len(lines) == len(quick.streams) + 2 + 2
    assert lines[-2].startswith("AdamW's three loops on one 1.0 M leaf, as optax writes it")


def test_render_rate_times_the_steps_and_hashes_their_frames() -> None:
    size = render_profile.QUICK
    result = render_profile.rate(size)
    assert _positive(result["ms"])
    assert re.fullmatch(r"[0-9a-f]{16}", result["frames"])


@pytest.mark.slow
def test_render_profile_finds_the_renderer_and_identical_frames_across_thread_settings(tmp_path: Path) -> None:
    out = tmp_path / "render.txt"
    result = render_profile.main(["--quick", "--out", str(out)])
    settings = result["settings"]
    assert set(settings["flags"]) == {"SHADOW", "REFLECTION", "SKYBOX"} and settings["flags"]["REFLECTION"] == 0
    assert settings["triangles"] > 0 and settings["meshes"] > 0 and settings["lights"] >= 1
    top = result["profile"]["top"]
    assert len(top) == 6 and any("mjr_render" in name for name, _, _ in top)
    assert all(calls > 0 and ms >= 0 for _, calls, ms in top) and _positive(result["profile"]["total_ms"])
    rates = result["rates"]
    assert list(rates) == list(render_profile.QUICK.threads)
    assert all(len(each) == render_profile.QUICK.processes for each in rates.values())
    assert all(_positive(r["ms"]) for each in rates.values() for r in each)
    assert len({r["frames"] for each in rates.values() for r in each}) == 1  # the thread setting leaves every pixel
    lines = _record(out, render_profile.MODULE)
    assert lines[0].startswith("render flags ") and lines[-1].startswith("LP_NUM_THREADS=1, one process: ")
