"""Bad input and faults: one line naming the problem and the fix, exit 2, nothing new written; the run-directory lock;
corrupt run files recomputed or refused by name; equivalent resumes accepted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from csil_diag import cli
from csil_diag.diag.entropy_run import EntropyRun
from csil_diag.errors import UserError
from csil_diag.runs import RunDir, check_output_dir, check_output_file, identity_differences
from tests.test_entropy import tiny_config


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``csil-diag ARGS`` in this process (fast): (exit code, stderr). Any exception other than the CLI's own exit
    propagates, so a traceback fails the test."""
    monkeypatch.setattr(sys, "argv", ["csil-diag", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# ------------------------------------------------------------------------------------ dataset validation
def _variant(src: Path, dst: Path, change) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        change(f)
    return dst


def _mask_names_absent_demo(f: h5py.File) -> None:
    names = [*f["mask/train"][()], b"demo_999"]
    del f["mask/train"]
    f["mask/train"] = np.array(names)


def _narrow_object(f: h5py.File) -> None:
    obs = f["data/demo_1/obs/object"][()]
    del f["data/demo_1/obs/object"]
    f["data/demo_1/obs/object"] = obs[:, :8]


def _short_obs(f: h5py.File) -> None:
    """demo_2 cut to 6 actions, its joint positions to 3 steps."""
    actions = f["data/demo_2/actions"][()][:6]
    del f["data/demo_2/actions"]
    f["data/demo_2/actions"] = actions
    for key in list(f["data/demo_2/obs"]):
        value = f[f"data/demo_2/obs/{key}"][()]
        del f[f"data/demo_2/obs/{key}"]
        f[f"data/demo_2/obs/{key}"] = value[:3] if key == "robot0_joint_pos" else value[:6]


def _nan_action(f: h5py.File) -> None:
    f["data/demo_0/actions"][3, 2] = np.nan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_mask_names_absent_demo, "mask/train names demo_999, absent from data/"),
        (_narrow_object, "obs/object is (8,) per step but demo_0's is (10,)"),
        (_short_obs, "has 3 steps but 6 actions"),
        (_nan_action, "actions contains NaN or inf"),
    ],
)
def test_a_damaged_dataset_is_refused_before_any_work(
    lift_demos: Path, tmp_path: Path, monkeypatch, capsys, change, message: str
) -> None:
    bad = _variant(lift_demos, tmp_path / "bad.hdf5", change)
    before = listing(tmp_path)
    code, err = run_cli(
        monkeypatch, capsys, "entropy", "--task", "lift", "--demos", str(bad), "--out", str(tmp_path / "r")
    )
    assert_one_line(code, err, message, "regenerate it")
    assert listing(tmp_path) == before  # no run directory


def test_a_directory_as_dataset_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    code, err = run_cli(monkeypatch, capsys, "demos", "info", str(tmp_path))
    assert_one_line(code, err, "is a directory, not an HDF5 file")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all\n" * 10)
    code, err = run_cli(monkeypatch, capsys, "demos", "info", str(tmp_path / "junk.hdf5"))
    assert_one_line(code, err, "not a readable HDF5 file")


# ------------------------------------------------------------------------------------ option parsing
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seeds", "a,b"), "--seeds takes comma-separated non-negative integers"),
        (("--seeds", "-1"), "--seeds takes comma-separated non-negative integers"),
        (("--seeds", "0,0"), "names a seed twice"),
        (("--lr", "nan"), "--lr must be a positive number"),
        (("--lr", "-1e-4"), "--lr must be a positive number"),
        (("--std-floor", "-1"), "--std-floor must be a positive number"),
        (("--std-floor", "nan"), "--std-floor must be a positive number"),
    ],
)
def test_bad_entropy_options(lift_demos: Path, tmp_path: Path, monkeypatch, capsys, args, message: str) -> None:
    base = ("entropy", "--task", "lift", "--demos", str(lift_demos), "--out", str(tmp_path / "r"))
    code, err = run_cli(monkeypatch, capsys, *base, *args)
    assert_one_line(code, err, message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "-1"), "--seed must be a non-negative integer"),
        (("--noise", "nan"), "--noise and --speed-jitter must be numbers ≥ 0"),
        (("--speed-jitter", "inf"), "--noise and --speed-jitter must be numbers ≥ 0"),
        (("--n", "0"), "--n must be at least 1"),
    ],
)
def test_bad_demos_options_write_nothing(tmp_path: Path, monkeypatch, capsys, args, message: str) -> None:
    code, err = run_cli(monkeypatch, capsys, "demos", "--task", "lift", "--out", str(tmp_path / "d.hdf5"), *args)
    assert_one_line(code, err, message)
    assert listing(tmp_path) == set()  # no <out>.partial either


@pytest.mark.parametrize("n", ["0", "-1"])
def test_replay_needs_a_positive_count(lift_demos: Path, monkeypatch, capsys, n: str) -> None:
    code, err = run_cli(monkeypatch, capsys, "demos", "replay", str(lift_demos), "--n", n)
    assert_one_line(code, err, f"--n must be at least 1 (got {n})")


def test_asking_fewer_demos_than_a_file_holds_says_so(lift_demos: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "lift.hdf5"
    shutil.copy(lift_demos, out)
    with h5py.File(out, "r") as f:
        meta = f["data"].attrs["csil_diag"]
    generator = json.loads(meta)["generator"]
    args = ["demos", "--task", "lift", "--n", "1", "--out", str(out), "--cameras", ",".join(generator["cameras"])]
    args += ["--image-size", str(generator["image_size"]), "--valid-fraction", str(generator["valid_fraction"])]
    monkeypatch.setattr(sys, "argv", ["csil-diag", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert "already held 3 demos, more than the 1 asked for" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ output paths
def test_output_path_checks_write_nothing(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is an existing file, not a directory"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(UserError, match="is an existing directory"):
        check_output_file(tmp_path)
    with pytest.raises(UserError, match=r"file, not a directory"):
        check_output_file(tmp_path / "file" / "report.pdf")
    with pytest.raises(UserError, match="cannot create anything in /proc"):
        check_output_dir("/proc/csil-diag-x")
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert listing(tmp_path) == {"file"}  # checks create nothing

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda _path: ReadOnly())
    with pytest.raises(UserError, match="read-only file system"):
        check_output_file(tmp_path / "r.pdf")


@pytest.fixture(scope="module")
def small_run(lift_demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "run"
    EntropyRun(tiny_config(lift_demos, steps=2, every=2), out, workers=0).run()
    return out


def test_entropy_and_report_refuse_unusable_outputs(
    lift_demos: Path, small_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "file").write_text("x")
    base = ("entropy", "--task", "lift", "--demos", str(lift_demos), "--out")
    assert_one_line(*run_cli(monkeypatch, capsys, *base, str(tmp_path / "file")), "is an existing file")
    assert_one_line(*run_cli(monkeypatch, capsys, *base, "/proc/x"), "cannot create anything in /proc")
    (tmp_path / "dir").mkdir()
    code, err = run_cli(monkeypatch, capsys, "report", str(small_run), "--out", str(tmp_path / "dir"))
    assert_one_line(code, err, "is an existing directory")
    assert listing(tmp_path) == {"file", "dir"}  # no PNGs beside it


# ------------------------------------------------------------------------------------ corrupt run files
def test_report_names_a_corrupt_run_file(small_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("entropy.parquet", "config.json"):
        run = tmp_path / name
        shutil.copytree(small_run, run)
        (run / name).write_bytes(b"\x00garbage")
        code, err = run_cli(monkeypatch, capsys, "report", str(run), "--out", str(tmp_path / "r.pdf"))
        assert_one_line(code, err, f"{run / name} is unreadable or corrupt")
    assert not (tmp_path / "r.pdf").exists()


def test_a_corrupt_config_is_refused_by_name(lift_demos: Path, small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config.json is unreadable or corrupt .*delete"):
        EntropyRun(tiny_config(lift_demos, steps=2, every=2), run, workers=0)


def test_a_corrupt_point_is_recomputed_to_the_same_numbers(lift_demos: Path, small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    point = run / "points" / "seed0_step00000000.parquet"
    later = run / "points" / "seed0_step00000002.parquet"
    later_mtime = later.stat().st_mtime_ns
    point.write_bytes(b"PAR1 damaged")
    (run / "entropy.parquet").write_bytes(b"damaged too")
    table = EntropyRun(tiny_config(lift_demos, steps=2, every=2), run, workers=0).run()
    reference = pd.read_parquet(small_run / "entropy.parquet")
    pd.testing.assert_frame_equal(table, reference, check_exact=False, rtol=1e-5)
    assert later.stat().st_mtime_ns == later_mtime  # the intact point was not evaluated again


# ------------------------------------------------------------------------------------ resume identity
def test_equivalent_spellings_resume_and_a_changed_option_is_named(
    lift_demos: Path, small_run: Path, tmp_path: Path, monkeypatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    monkeypatch.chdir(lift_demos.parent)
    relative = os.path.relpath(lift_demos)
    assert not os.path.isabs(relative)
    EntropyRun(tiny_config(relative, steps=2, every=2, input="joints + object"), run, workers=0).run()
    from csil_diag.config import BCConfig

    changed = tiny_config(lift_demos, steps=2, every=2, bc=BCConfig(learning_rate=3e-4))
    with pytest.raises(UserError, match=r"--lr 0\.0003 \(the run has 0\.0001\)"):
        EntropyRun(changed, run, workers=0)
    assert identity_differences({"a": {"b": 1}}, {"a": {"b": 1}}, {}) == []
    assert identity_differences({"bc": {"x": 1}}, {"bc": {"x": 2}}, {"bc.x": "--x"}) == ["--x 2 (the run has 1)"]


# ------------------------------------------------------------------------------------ the lock
HOLD = """
import sys, time
from csil_diag.runs import RunDir
held = RunDir(sys.argv[1]).acquire("test holder")
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_directory_has_one_writer_and_a_dead_holder_is_taken_over(lift_demos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(
            [sys.executable, "-m", "csil_diag.cli", "entropy", "--task", "lift", "--demos", str(lift_demos),
             "--out", str(out)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert_one_line(proc.returncode, proc.stderr, f"is in use by pid {holder.pid} (test holder")
        assert listing(out) == {".lock"}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops a killed holder's lock: the next process takes it over
        try:
            RunDir(out).acquire("second").release()
            break
        except UserError:
            assert time.time() < deadline, "the lock of a killed process was not released"
            time.sleep(0.1)


def test_a_failed_start_leaves_no_directory(lift_demos: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(UserError, match="no checkpoint directory"):
        EntropyRun(tiny_config(lift_demos, input="pi0+joints", model=str(tmp_path / "nope")), out, workers=0)
    assert not out.exists()


HOLD_FILE = """
import sys, time
from pathlib import Path
from csil_diag.runs import take_lock
held = take_lock(Path(sys.argv[1] + ".lock"), Path(sys.argv[1]), "another demos")
print("held", flush=True)
time.sleep(120)
"""


def test_demos_has_one_writer_per_output(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "d.hdf5"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FILE, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = run_cli(monkeypatch, capsys, "demos", "--task", "lift", "--n", "1", "--out", str(out))
        assert_one_line(code, err, f"{out} is in use by pid {holder.pid} (another demos")
        assert not out.exists() and not (tmp_path / "d.hdf5.partial").exists()
    finally:
        holder.kill()
        holder.wait()
