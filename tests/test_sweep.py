"""Sweeps: grid expansion and labels, reproducible random subsets, refusals, resume/extend, backends, report pages."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from csil_diag.diag.entropy_run import EntropyRun
from csil_diag.diag.sweep import (
    Cell,
    Sweep,
    local_pool,
    parse_object,
    parse_select,
    parse_widths,
    random_subset,
    slice_cells,
)
from csil_diag.errors import UserError
from tests.test_entropy import tiny_config


# ------------------------------------------------------------------------------------ grids
def test_widths_select_object_parsing_and_refusals() -> None:
    assert parse_widths("0,16,64,all", 256) == [0, 16, 64, 256]
    assert parse_widths("64,16,16", 256) == [16, 64]
    with pytest.raises(UserError, match=r"--widths 300 is outside the site's width: use 0 … 256"):
        parse_widths("0,300", 256)
    with pytest.raises(UserError, match="integers or 'all'"):
        parse_widths("0,wide", 256)
    assert parse_select("leading") == ("leading", 1) and parse_select("random:3") == ("random", 3)
    for bad in ("random:0", "random:x", "first"):
        with pytest.raises(UserError, match="--select must be leading or random:R"):
            parse_select(bad)
    assert parse_object("with,without") == [True, False]
    with pytest.raises(UserError, match="--object takes"):
        parse_object("maybe")


def test_slice_cells_labels_inputs_and_reproducible_subsets() -> None:
    cells = slice_cells([0, 16, 64], [True, False], [("leading", 1), ("random", 3)], 64, subset_seed=7)
    labels = [c.label for c in cells]
    assert len(labels) == len(set(labels))
    # width 0: the low-dim reference; 16: leading + 3 random subsets; 64 = the full width: leading only (its random
    # subsets are all the leading cell's columns, in the same order)
    assert len(cells) == 2 * (1 + 4 + 1) and "w0064-random0-obj" not in {c.label for c in cells}
    only_random = slice_cells([64], [True], [("random", 3)], 64)
    assert [(c.label, c.input) for c in only_random] == [
        ("w0064-random0-obj", "pi0{" + ",".join(map(str, range(64))) + "}+joints+object")
    ]
    by = {c.label: c for c in cells}
    assert by["w0000-lowdim-obj"].input == "joints+object" and by["w0000-lowdim-noobj"].input == "joints"
    assert by["w0016-leading-obj"].input == "pi0[:16]+joints+object"
    assert by["w0016-leading-noobj"].columns == {"width": 16, "selection": "leading", "subset": 0, "object": False}
    subset = random_subset(64, 16, 1, 7)
    assert by["w0016-random1-obj"].input == "pi0{" + ",".join(map(str, subset)) + "}+joints+object"
    assert subset == random_subset(64, 16, 1, 7)  # reproducible from its seed
    assert len(set(subset)) == 16 and subset != random_subset(64, 16, 0, 7) and subset != random_subset(64, 16, 1, 8)
    assert subset != tuple(range(16))  # not the leading block
    assert sorted(random_subset(64, 64, 0, 7)) == list(range(64))


# ------------------------------------------------------------------------------------ running
LOWDIM_CELLS = [
    Cell("joints", "joints", None, {"object": False}),
    Cell("joints-object", "joints+object", None, {"object": True}),
]


def _base(demos: Path, **kw):
    return tiny_config(demos, input="joints", steps=2, every=2, **kw)


@pytest.fixture(scope="module")
def tiny_sweep(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweeps") / "s"
    result = Sweep(out, "test", _base(lift_demos), LOWDIM_CELLS, "test").run(parallel=2, workers_per_run=0)
    assert not result.failed
    return out


@pytest.mark.slow
def test_sweep_directory_and_summary(tiny_sweep: Path) -> None:
    meta = json.loads((tiny_sweep / "sweep.json").read_text())
    assert [c["label"] for c in meta["cells"]] == ["joints", "joints-object"]
    session = meta["sessions"][-1]
    assert session["parallel"] == 2 and 0.0 < session["cpu_utilisation"] <= 1.0 and session["seconds"] > 0
    assert session["points_finished"] == 4 and "finished" in session and "interrupted" not in session
    assert meta["shared"]["kind"] == "test" and "input" not in meta["shared"]
    summary = pd.read_parquet(tiny_sweep / "summary.parquet")
    assert set(summary.cell) == {"joints", "joints-object"}
    assert set(summary.groupby("cell").object.first().items()) == {("joints", False), ("joints-object", True)}
    assert len(summary) == 2 * 2 * 3  # cells × points × splits
    for label in ("joints", "joints-object"):  # each cell is an ordinary run directory
        run = json.loads((tiny_sweep / "runs" / label / "config.json").read_text())
        assert run["config"]["input"] == label.replace("-", "+")


@pytest.mark.slow
def test_a_cell_computes_what_a_plain_run_computes(lift_demos: Path, tiny_sweep: Path, tmp_path: Path) -> None:
    """Resume and backend independence rest on this: a cell run in a pool worker equals the same run started,
    interrupted and resumed in a plain process with the same thread limit — to the last bit."""
    config = asdict(replace(_base(lift_demos), input="joints+object"))
    with local_pool(1, 1) as pool:
        resumed = pool.submit(_interrupted_and_resumed, config, str(tmp_path / "plain")).result()
    cell = pd.read_parquet(tiny_sweep / "runs" / "joints-object" / "entropy.parquet")
    pd.testing.assert_frame_equal(resumed, cell, check_exact=True)


def _stop_at_step_2(event: str, seed: int, step: int) -> None:
    if event == "evaluate" and step == 2:
        raise KeyboardInterrupt


def _interrupted_and_resumed(config: dict, out: str) -> pd.DataFrame:
    from csil_diag.config import from_dict
    from csil_diag.diag.entropy_run import EntropyConfig

    cfg = from_dict(EntropyConfig, config)
    with pytest.raises(KeyboardInterrupt):
        EntropyRun(cfg, out, workers=0).run(_stop_at_step_2)
    return EntropyRun(cfg, out, workers=0).run()


@pytest.mark.slow
def test_rerun_skips_extends_and_refuses_changed_settings(lift_demos: Path, tiny_sweep: Path, tmp_path: Path) -> None:
    import shutil

    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    points = sweep / "runs" / "joints" / "points"
    before = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
    extra = Cell("eef", "eef", None, {"object": False})
    result = Sweep(sweep, "test", _base(lift_demos, seeds=(0, 1)), [*LOWDIM_CELLS, extra], "test").run(
        parallel=2, workers_per_run=0
    )
    assert not result.failed and result.cells == 3
    assert all(points.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())  # nothing recomputed
    assert set(result.summary.cell) == {"joints", "joints-object", "eef"}
    assert set(result.summary.seed) == {0, 1}
    with pytest.raises(UserError, match=r"other shared settings: --k 8 \(the run has 4\)"):
        Sweep(sweep, "test", _base(lift_demos, k_samples=8), LOWDIM_CELLS, "test").run(parallel=1, workers_per_run=0)
    with pytest.raises(UserError, match="cell joints was 'joints'"):
        Sweep(sweep, "test", _base(lift_demos), [Cell("joints", "eef+joints")], "test")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C still leaves the session's figures in sweep.json
        Sweep(sweep, "test", _base(lift_demos, seeds=(0, 1)), [*LOWDIM_CELLS, extra], "test").run(
            parallel=1, workers_per_run=0, on_progress=interrupt
        )
    session = json.loads((sweep / "sweep.json").read_text())["sessions"][-1]
    assert "interrupted" in session and "finished" not in session
    assert session["points_finished"] == 0 and session["seconds"] > 0


def test_an_unreachable_ray_address_is_one_line(lift_demos: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(UserError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:9"):
        Sweep(tmp_path / "s", "test", _base(lift_demos), LOWDIM_CELLS, "test").run(backend="ray", address="127.0.0.1:9")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_ray_backend_gives_the_same_numbers(lift_demos: Path, tiny_sweep: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a real local Ray instance
    try:
        result = Sweep(tmp_path / "s", "test", _base(lift_demos), LOWDIM_CELLS, "test").run(
            backend="ray", workers_per_run=0
        )
    finally:
        ray.shutdown()
    assert not result.failed
    local = pd.read_parquet(tiny_sweep / "summary.parquet")
    # The same function and thread settings, so the same numbers to the last bit.
    pd.testing.assert_frame_equal(result.summary, local, check_exact=True)


def _unpinned_affinity() -> set[int]:
    from csil_diag.procs import unpin

    unpin()  # what an env worker does first
    return os.sched_getaffinity(0)


def _thread_settings() -> tuple[str | None, str | None, set[int], set[int]]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as child:  # a child of the pinned run
        worker = child.submit(_unpinned_affinity).result()
    return os.environ.get("XLA_FLAGS"), os.environ.get("OMP_NUM_THREADS"), os.sched_getaffinity(0), worker


def test_local_pool_processes_run_with_the_runs_thread_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool spawns its processes at the first submit: the limit must reach them there, not only at construction.
    (It did not, once: the local backend's runs then had other XLA flags than Ray's, and other last float32 digits.)
    Each process is pinned to its own cores, which is what bounds XLA's threads; its env workers are not."""
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity and 2 cores, to give two runs one each")
    cores = sorted(os.sched_getaffinity(0))
    for name in ("XLA_FLAGS", "OMP_NUM_THREADS"):  # so the children can only have them from the pool
        monkeypatch.delenv(name, raising=False)
    with local_pool(2, 1) as pool:
        results = [f.result() for f in [pool.submit(_thread_settings) for _ in range(2)]]
    for flags, omp, pinned, worker in results:
        assert flags is not None and "--xla_cpu_multi_thread_eigen=false" in flags and omp == "1"
        assert len(pinned) == 1 and pinned <= set(cores[:2]) and worker == set(cores)


def _width_sweep(path: str, every: int, steps: int, cells: dict[str, tuple[int, str, float]]) -> tuple[dict, list]:
    """A slice sweep's report inputs without running it: per cell (width, selection, AUROC at the last step)."""
    frames = []
    for label, (width, selection, auroc) in cells.items():
        rows = [(step, auroc if step == steps else 0.5) for step in range(0, steps + 1, every)]
        frame = (
            pd.DataFrame(rows, columns=["step", "auroc_gauss_valid"])
            .assign(split="online", auroc_valid=lambda f: f.auroc_gauss_valid, cell=label, width=width, object=True)
            .assign(gap_gauss_valid=lambda f: 10 * (f.auroc_gauss_valid - 0.5))
        )
        frames.append(({}, frame.assign(selection=selection)))
    meta = {"path": path, "shared": {"every": every, "steps": steps, "task": "lift"}, "cells": [{"model": "m"}]}
    return meta, frames


def test_sweeps_that_complement_each_other_share_one_width_headline() -> None:
    """Leading cells evaluated every 250 steps and random subsets added at the last step only pool into one page; a
    sweep with another step count keeps its own, and so does one that measured a cell again (its seeds would count
    twice)."""
    from csil_diag.diag.verdict import separation_by_width
    from csil_diag.report.sweep_pages import width_groups

    lead = {"w0000-lowdim-obj": (0, "none", 0.6), "w0016-leading-obj": (16, "leading", 0.8)}
    leading = _width_sweep("lead", 250, 1000, lead)
    random = _width_sweep("rand", 1000, 1000, {"w0016-random1-obj": (16, "random", 0.9)})
    longer = _width_sweep("long", 1000, 5000, {"w0016-leading-obj": (16, "leading", 0.55)})
    again = _width_sweep("again", 1000, 1000, {"w0016-leading-obj": (16, "leading", 0.7)})
    groups = width_groups([leading, random, longer, again])
    assert [paths for paths, _ in groups] == [["lead", "rand"], ["long"], ["again"]]
    table = separation_by_width(groups[0][1]).set_index(["width", "selection"])
    assert list(table.index) == [(0, "none"), (16, "leading"), (16, "random")] and (table.n == 1).all()
    assert table.auroc_gauss.tolist() == [0.6, 0.8, 0.9]  # each cell's last step, not the 0.5 before it
    assert table.gap_gauss.tolist() == pytest.approx([1.0, 3.0, 4.0]) and table.gap_gauss_lo.isna().all()
    assert separation_by_width(groups[1][1]).auroc_gauss.tolist() == [0.55]


@pytest.mark.slow
def test_a_slice_sweep_report_has_the_width_headline(lift_demos: Path, tmp_path: Path) -> None:
    """eef stands in for π0's embedding (8 wide): the grid, the width table and the report's headline page."""
    from csil_diag.diag.verdict import separation_by_width
    from csil_diag.report.pdf import build_report

    cells = slice_cells([0, 4], [True], [("leading", 1), ("random", 1)], 8, source="eef")
    assert [c.input for c in cells][:2] == ["joints+object", "eef[:4]+joints+object"]
    result = Sweep(tmp_path / "s", "slice-sweep", _base(lift_demos), cells, "test").run(parallel=2, workers_per_run=0)
    assert not result.failed
    table = separation_by_width(result.summary)
    assert list(zip(table.width, table.selection, strict=True)) == [(0, "none"), (4, "leading"), (4, "random")]
    assert (table.n == 1).all() and table.auroc_gauss_lo.isna().all()  # one seed: no interval, never a fake one
    online = result.summary[(result.summary.split == "online") & (result.summary.step == 2)]
    expected = online[online.cell == "w0004-leading-obj"].auroc_gauss_valid.mean()
    assert table[table.selection == "leading"].auroc_gauss.iloc[0] == pytest.approx(expected)
    report = build_report([tmp_path / "s"], tmp_path / "r.pdf")
    assert any(p.name == "r_widths0.png" for p in report.pngs)
    assert [p.name for p in report.tables] == ["r_widths0.csv"]  # the headline's numbers, beside its PNG
    pd.testing.assert_frame_equal(pd.read_csv(report.tables[0]), table, check_exact=False, atol=1e-4)
    assert report.pages == 10  # cover, verdict, widths, overlay, H, Σ log σ, separation, per-dim, success, summary


KILLABLE = """
import sys
from pathlib import Path
from csil_diag.diag.sweep import Sweep
from tests.test_sweep import LOWDIM_CELLS, _base
Sweep(sys.argv[2], "test", _base(Path(sys.argv[1])), LOWDIM_CELLS, "test").run(parallel=2, workers_per_run=0)
"""


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(
    lift_demos: Path, tiny_sweep: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(lift_demos), str(out)], cwd=root)
    try:
        deadline = time.time() + 240
        while not list(out.glob("runs/*/points/*.parquet")):  # kill it once the first point is written
            assert proc.poll() is None and time.time() < deadline, "the sweep ended or stalled before a point"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = len(list(out.glob("runs/*/points/*.parquet")))
    assert 1 <= partial < 4  # killed mid-way
    time.sleep(2)  # its workers die with it (PR_SET_PDEATHSIG); their run-directory locks go with them
    result = Sweep(out, "test", _base(lift_demos), LOWDIM_CELLS, "test").run(parallel=2, workers_per_run=0)
    pd.testing.assert_frame_equal(result.summary, pd.read_parquet(tiny_sweep / "summary.parquet"), check_exact=True)


# ------------------------------------------------------------------------------------ generic grids (csil-diag sweep)
def test_set_parsing_typing_and_refusals() -> None:
    from csil_diag.diag.sweep import parse_set

    assert parse_set("hetstat.trunk=plain,spectral") == ("hetstat.trunk", ["plain", "spectral"])
    assert parse_set("hetstat.rf_skip=false,true") == ("hetstat.rf_skip", [False, True])
    assert parse_set("bc.learning_rate=1e-4,3e-4") == ("bc.learning_rate", [1e-4, 3e-4])
    assert parse_set("hetstat.hidden=1024x1024,256") == ("hetstat.hidden", [(1024, 1024), (256,)])
    assert parse_set("input=pi0{1,5}+joints,joints") == ("input", ["pi0{1,5}+joints", "joints"])  # commas in braces
    assert parse_set("horizon=none,100") == ("horizon", [None, 100])
    for bad, message in [
        ("seeds=0,1", "not a setting a sweep can vary"),
        ("task=can", "not a setting a sweep can vary"),
        ("hetstat.bogus=1", "not a setting a sweep can vary"),
        ("hetstat", "takes KEY=V1,V2"),
        ("steps=abc", "not a valid int"),
        ("hetstat.rf_skip=maybe", "not a valid bool"),
        ("steps=10,10", "listed twice"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_set(bad)


def test_grid_cells_are_the_product_with_labels_columns_and_settings() -> None:
    from csil_diag.diag.sweep import grid_cells, parse_set

    cells = grid_cells(
        "pi0+joints", [parse_set("hetstat.trunk=plain,spectral"), parse_set("hetstat.input_transform=none,pca:64")]
    )
    assert [c.label for c in cells] == [
        "trunk=plain__input_transform=none",
        "trunk=plain__input_transform=pca:64",
        "trunk=spectral__input_transform=none",
        "trunk=spectral__input_transform=pca:64",
    ]
    assert cells[3].settings == {"hetstat.trunk": "spectral", "hetstat.input_transform": "pca:64"}
    assert cells[3].columns == {"trunk": "spectral", "input_transform": "pca:64"} and cells[3].input == "pi0+joints"
    swept_input = grid_cells("joints", [parse_set("input=joints,joints+object")])
    assert [(c.input, c.settings) for c in swept_input] == [("joints", {}), ("joints+object", {})]
    with pytest.raises(UserError, match="twice"):
        grid_cells("joints", [parse_set("steps=2"), parse_set("steps=4")])


@pytest.mark.slow
def test_a_settings_sweep_runs_each_cell_with_its_settings_and_reports_them(lift_demos: Path, tmp_path: Path) -> None:
    from csil_diag.diag.sweep import grid_cells, parse_set
    from csil_diag.report.pdf import build_report

    cells = grid_cells("joints", [parse_set("hetstat.trunk=plain,spectral")])
    out = tmp_path / "s"
    result = Sweep(out, "sweep", _base(lift_demos), cells, "test").run(parallel=2, workers_per_run=0)
    assert not result.failed
    meta = json.loads((out / "sweep.json").read_text())
    assert "trunk" not in meta["shared"]["hetstat"]  # varied by the grid, so not a shared setting
    for label, trunk in [("trunk=plain", "plain"), ("trunk=spectral", "spectral")]:
        run = json.loads((out / "runs" / label / "config.json").read_text())
        assert run["config"]["hetstat"]["trunk"] == trunk
    summary = pd.read_parquet(out / "summary.parquet")
    assert set(zip(summary.cell, summary.trunk, strict=True)) == {
        ("trunk=plain", "plain"),
        ("trunk=spectral", "spectral"),
    }
    # the two trunks give different numbers (the setting reached the run)
    online = summary[summary.split == "online"].set_index(["cell", "step"]).gaussian_entropy
    assert online.loc["trunk=plain"].tolist() != online.loc["trunk=spectral"].tolist()
    # resuming with a cell's settings changed under the same label is refused
    changed = [replace(cells[1], settings={"hetstat.trunk": "plain"})]
    with pytest.raises(UserError, match="trunk=spectral"):
        Sweep(out, "sweep", _base(lift_demos), changed, "test")
    report = build_report([out], tmp_path / "r.pdf")
    assert report.pages >= 3
    from csil_diag.report.pdf import load_sweep
    from csil_diag.report.sweep_pages import settings_page

    sweep_meta, runs = load_sweep(out)
    text = "\n".join(t.get_text() for fig in settings_page(sweep_meta, runs) for t in fig.texts)
    assert "trunk=spectral" in text and "(trunk=plain)" in text  # the baseline is the cell with every remedy off


def _cells_sweep(path: str, shared: dict, cells: list[tuple[str, dict, float, float]], width: int = 8) -> tuple:
    """A sweep's report inputs without running it: per cell (--input, settings, AUROC, held-out NLL), 3 seeds."""
    runs, metas = [], []
    for number, (spec, settings, auroc, nll) in enumerate(cells):
        label = f"c{number}"
        metas.append({"label": label, "input": spec, "model": "m", "settings": settings})
        online = pd.DataFrame({"seed": [0, 1, 2], "auroc_gauss_valid": [auroc - 0.01, auroc, auroc + 0.01]})
        online = online.assign(split="online", auroc_valid=online.auroc_gauss_valid, success_rate=0.5)
        valid = pd.DataFrame({"seed": [0, 1, 2], "split": "valid", "demo_nll": nll, "demo_mse": 0.04})
        table = pd.concat([online, valid], ignore_index=True).assign(step=1000)
        runs.append(({"label": label, "vla": {"width": width}}, table))
    return {"path": path, "kind": "sweep", "shared": shared, "cells": metas}, runs


def test_remedies_meet_their_baseline_across_sweeps_on_one_page() -> None:
    """A remedy sweep's cells sit beside the slice sweep's baselines of the same input (the full width spelled
    either way), with the demo fit relative to that baseline; other settings (steps, network) are another pool."""
    from csil_diag.report.sweep_pages import remedy_rows

    shared = {"steps": 1000, "every": 1000, "hetstat": {"features": 64, "log_lengthscale_init": -5.0}}
    slices = _cells_sweep("slices", shared, [("joints", {}, 0.6, -10.0), ("pi0[:8]+joints", {}, 0.5, 2.0)])
    skip = {"hetstat.rf_skip": True, "hetstat.log_lengthscale_init": -4.0}
    remedies = _cells_sweep(
        "remedies",
        {**shared, "every": 250, "hetstat": {"features": 64}},  # the schedule and the grid's keys may differ
        [
            ("joints", skip, 0.9, -9.0),
            ("pi0+joints", skip, 0.8, 3.0),
            ("pi0+joints", {"hetstat.rf_skip": False}, 0.0, 1.0),
        ],
    )
    longer = _cells_sweep("longer", {**shared, "steps": 5000}, [("joints", skip, 0.7, -9.0)])
    wider = _cells_sweep("wider", {**shared, "hetstat": {"features": 128}}, [("joints", skip, 0.7, -9.0)])
    pools = remedy_rows([slices, remedies, longer, wider])
    assert [paths for paths, _ in pools] == [["slices", "remedies"]]  # a pool without a baseline makes no page
    rows = pools[0][1].set_index(["input", "remedy"])
    assert list(rows.index) == [
        ("joints", "baseline"),
        ("joints", "log-lengthscale -4, rf skip"),
        ("pi0+joints", "baseline"),  # the remedy sweep's rf_skip=false cell replaces the slice sweep's: one row each
        ("pi0+joints", "log-lengthscale -4, rf skip"),
    ]
    assert rows.loc[("pi0+joints", "baseline"), "auroc_gauss"][0] == pytest.approx(0.0)
    # NLL Δ > 0 means a worse (higher) fit, whether the NLL is negative or positive
    assert rows.loc[("joints", "log-lengthscale -4, rf skip"), "d_nll"] == pytest.approx(0.1)
    assert rows.loc[("pi0+joints", "log-lengthscale -4, rf skip"), "d_nll"] == pytest.approx(2.0)
    assert rows.d_mse.tolist() == [0.0] * 4
    mean, lo, hi = rows.loc[("joints", "log-lengthscale -4, rf skip"), "auroc_gauss"]
    assert mean == pytest.approx(0.9) and lo < mean < hi  # the seeds' t-interval
