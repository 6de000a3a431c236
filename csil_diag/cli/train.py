"""`csil-diag train` (CSIL or SACfD with the entropy diagnostic as it learns) and `csil-diag evaluate`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from csil_diag.cli.common import default_workers, exit_on_interrupt, given, parse_seeds, split_csv
from csil_diag.cli.entropy import OptSite
from csil_diag.envs.tasks import TASK_CHOICES
from csil_diag.ui import console
from csil_diag.ui import count_bar as _count_bar
from csil_diag.ui import make_progress as _progress


def train(
    task: str = typer.Option(..., help=TASK_CHOICES),
    demos: Path = typer.Option(..., help="robomimic HDF5 with mask/train and mask/valid"),
    out: Path = typer.Option(..., help="run directory (re-running resumes it from its last evaluation)"),
    algo: str = typer.Option("csil", help="csil (coherent reward, thesis Alg. 1) | sacfd (sparse reward + demos)"),
    input: str = typer.Option("joints+object", "--input", help="feature spec, e.g. joints+object, pi0+joints"),
    mode: str = typer.Option(None, help="head | residual | ensemble on π0's action (default: residual with pi0)"),
    model: Path = typer.Option(None, help="π0 checkpoint (default: the embedded tiny model) for pi0 inputs / modes"),
    preset: str = typer.Option(None, help="quick (256-wide nets, 20k steps) | thesis (App. B, 250k steps, 4 seeds)"),
    steps: int = typer.Option(
        None,
        help="environment steps of RL per seed [250000; quick 20000]; raised on an existing run, it continues the run "
        "(as if asked from the start) when the old budget is a multiple of --eval-every",
    ),
    eval_every: int = typer.Option(None, help="environment steps between evaluations [25000; quick 5000]"),
    eval_episodes: int = typer.Option(None, help="deterministic evaluation episodes [25; quick 10]"),
    entropy_episodes: int = typer.Option(None, help="stochastic episodes for online entropy [10; quick 4; 0: off]"),
    seeds: str = typer.Option(None, help="comma-separated seeds [0; thesis 0,1,2,3]"),
    bc_steps: int = typer.Option(None, help="csil: BC pre-training steps [5000; quick 2000]"),
    bc_lr: float = typer.Option(None, help="csil: BC learning rate [1e-4]"),
    critic_pretrain_steps: int = typer.Option(None, help="csil: critic pre-training steps [20000, App. B; quick too]"),
    utd: int = typer.Option(None, help="updates per environment step [1]"),
    reward_sign: str = typer.Option(None, help="csil: negative (App. B) | positive coherent reward"),
    reward_scale: float = typer.Option(None, help="csil: reward scale [0.16 (App. B)]"),
    demo_ratio: float = typer.Option(None, help="sacfd: demonstrations' share of each batch [0.2]"),
    entropy_coefficient: float = typer.Option(
        None, help="csil: fixed weight β of the actor's KL(π ‖ π_BC) and of the critic target's [0.01]"
    ),
    envs: int = typer.Option(None, help="environments stepped in parallel [4]"),
    workers: int = typer.Option(0, help="env worker processes (0: one per core, at most --envs)"),
    site: OptSite = "state",
    replan: int = typer.Option(1, help="query π0 every this many steps (executing its chunk in between)"),
) -> None:
    """CSIL (BC → coherent reward → critic pre-training → SAC with reward refinement) or SACfD, with success and the
    online-vs-expert entropy evaluated as it learns (thesis Figs. 6.1–6.3)."""
    from dataclasses import replace

    from csil_diag.config import CSILConfig, apply_preset
    from csil_diag.csil.train_run import TrainConfig, TrainRun
    from csil_diag.diag.entropy_run import default_mode

    config = apply_preset(TrainConfig(task=task, input=input, demos=str(demos), rl=CSILConfig(algo=algo)), preset)
    top = given(
        steps=steps,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        entropy_episodes=entropy_episodes,
        seeds=parse_seeds(seeds) if seeds is not None else None,
        bc_steps=bc_steps,
        n_envs=envs,
        model=str(model) if model is not None else None,
    )
    bc = replace(config.bc, **given(learning_rate=bc_lr, mode=mode or default_mode(input)))
    rl = given(
        algo=algo,
        utd=utd,
        reward_sign=reward_sign,
        reward_scale=reward_scale,
        demo_ratio=demo_ratio,
        entropy_coefficient=entropy_coefficient,
        critic_pretrain_steps=critic_pretrain_steps,
    )
    config = replace(config, **top, site=site, replan=replan, bc=bc, rl=replace(config.rl, **rl))
    with TrainRun(config, out, default_workers(workers, config.n_envs)) as run:
        run.load(_count_bar("π0 embeddings of the demos"))
        table = _run_train(run, out)
    _print_train_summary(table, run.config, out)


def _run_train(run: Any, out: Path) -> Any:
    config = run.config
    pre = config.bc_steps + config.rl.critic_pretrain_steps if config.rl.algo == "csil" else 0
    with _progress() as progress:
        bars: dict[str, int] = {}
        done_seeds: dict[int, dict[str, int]] = {}

        def show(status: str | None) -> None:
            """The bars, added at the first event that is not a resumed seed's: what resuming restores starts them,
            so that the ETA's rate counts only the work done now."""
            counts = {
                "pre": sum(min(s["pre"], pre) for s in done_seeds.values()),
                "rl": sum(min(s["rl"], config.steps) for s in done_seeds.values()),
            }
            if not bars:
                totals = {"pre": pre * len(config.seeds), "rl": config.steps * len(config.seeds)}
                names = {"pre": "pre-training", "rl": f"{config.rl.algo} env steps"}
                for key in ("pre", "rl") if pre else ("rl",):  # SACfD has no pre-training: no empty bar
                    bars[key] = progress.add_task(names[key], total=totals[key], completed=counts[key], status="")
            for key in bars:
                progress.update(bars[key], completed=counts[key])
            if status is not None:
                progress.update(bars["rl"], status=status)

        def on_event(event: str, info: dict) -> None:
            seed, status = info.get("seed"), None
            slot = done_seeds.setdefault(seed, {"pre": 0, "rl": 0})
            if event in ("bc", "resume_bc"):
                slot["pre"] = info["step"]
            elif event in ("critic", "resume_critic"):
                slot["pre"] = config.bc_steps + info["step"]
            elif event == "step":
                slot["rl"] = info["env_steps"]
            elif event in ("resume", "done"):
                slot["pre"], slot["rl"] = pre, info["env_steps"]
            elif event == "evaluated":
                slot["pre"] = pre
                status = f"seed {seed}: success {info['success_rate']:.2f} at {info['env_steps']} steps"
            elif event == "evaluate":
                status = f"seed {seed}: evaluating"
            if bars or event not in ("resume", "done", "resume_bc", "resume_critic"):
                show(status)

        kept = (
            f"finished evaluations and their checkpoints (and pre-training's state of the last minute) are kept in "
            f"{out}; rerun the same command to resume from there"
        )
        with exit_on_interrupt(kept, progress):
            table = run.run(on_event)
    return table


def _interval(lo: float, hi: float, label: str = "") -> str:
    """' [label lo, hi]', or nothing where one seed leaves no interval."""
    return "" if math.isnan(lo) else f" [{label}{lo:.2f}, {hi:.2f}]"


def _print_train_summary(table: Any, config: Any, out: Path) -> None:
    from csil_diag.diag.aggregate import train_success

    summary = train_success(table)
    if summary is None:
        console.print(f"no evaluation finished in {out}")
        return
    t = Table("seed", "BC start", "final", "best", "env steps", "online vs expert Σlogσ AUROC (final)")
    for r in summary.seeds.itertuples():
        auroc = f"{r.auroc_gauss_valid:.2f}" if math.isfinite(r.auroc_gauss_valid) else "–"
        t.add_row(str(r.seed), f"{r.start:.2f}", f"{r.final:.2f}", f"{r.best:.2f}", str(int(r.env_steps)), auroc)
    console.print(t)
    iqm0, lo0, hi0 = summary.start
    iqm, lo, hi = summary.final
    console.print(
        f"{config.rl.algo} ({config.mode}, {config.input}) on {config.task}: success IQM {iqm0:.2f}"
        f"{_interval(lo0, hi0)} at the start → {iqm:.2f}{_interval(lo, hi, '95 % CI ')} after {summary.env_steps} env "
        f"steps over {len(summary.seeds)} seed(s)"
    )
    console.print(
        f"wrote {out}/metrics.parquet, seed*/ckpt, {out}/tensorboard (tensorboard --logdir {out}/tensorboard)"
    )


def evaluate(
    run: Path = typer.Argument(..., help="a `csil-diag train` run directory"),
    episodes: int = typer.Option(50, help="episodes per seed and policy (fresh seeds, the same for start and final)"),
    at: str = typer.Option("start,final", help="start (the actor RL began from) and/or final (the last checkpoint)"),
    policy: str = typer.Option("deterministic", help="deterministic (tanh of the mean) and/or stochastic"),
    workers: int = typer.Option(0, help="env worker processes (0: one per core, at most the run's envs)"),
) -> None:
    """Re-evaluate a train run's start and final policies on more episodes than its in-run evaluations (paired, with a
    sign test): did RL raise the BC start?  Writes <run>/evaluation.parquet; a rerun skips what is there."""
    from csil_diag.csil.evaluate import evaluate_run

    with _progress() as progress:
        bar: dict[str, int] = {}
        base = {"done": 0}

        def on_event(event: str, info: dict) -> None:
            if event == "start":
                bar["id"] = progress.add_task("episodes", total=info["total"], completed=info["done"], status="")
                base["done"] = info["done"]
            elif event == "episodes" and bar:
                progress.update(bar["id"], completed=base["done"] + info["done"])
            elif event == "group" and bar:
                base["done"] += episodes
                status = f"seed {info['seed']} {info['at']} ({info['policy']}): {info['success']:.2f}"
                progress.update(bar["id"], completed=base["done"], status=status)

        with exit_on_interrupt(f"finished groups are kept in {run}/evaluation.parquet; rerun to go on", progress):
            table, fits = evaluate_run(run, episodes, split_csv(at), split_csv(policy), workers, on_event)
    _print_evaluation(table, fits, run)


def _print_evaluation(table: Any, fits: Any, run: Path) -> None:
    from csil_diag.csil.evaluate import evaluation_summary

    summary = evaluation_summary(table, fits)
    for p in summary.policies:
        t = Table("seed", *p.columns, "env steps (final)", title=f"{p.policy} success over {p.episodes} episodes")
        for _, row in p.seeds.iterrows():
            steps = "–" if row.get("env_steps") != row.get("env_steps") else str(int(row["env_steps"]))
            t.add_row(str(int(row["seed"])), *(f"{row[c]:.2f}" for c in p.columns), steps)
        console.print(t)
        parts = []
        for c in p.columns:
            iqm, lo, hi = p.iqm[c]
            parts.append(f"{c} IQM {iqm:.2f}" + _interval(lo, hi, "95 % CI "))
        console.print(f"{p.policy}: " + " → ".join(parts))
        paired = p.paired
        if "p_value" in paired:
            console.print(
                f"{p.policy}, paired over {paired['episodes']} episodes: final succeeds where start fails "
                f"{paired['final_wins']}×, the reverse {paired['final_losses']}× "
                f"(sign test p = {paired['p_value']:.3g})"
            )
    for at_name, dims in summary.demo_mse.items():
        console.print(
            f"held-out demo MSE of the deterministic action, {at_name} (mean over seeds; per dim): "
            + " ".join(f"{v:.3f}" for v in dims)
        )
    if summary.kl_per_seed is not None:
        console.print(
            "KL(final ‖ start) on the held-out demo states, nats: per seed "
            + ", ".join(f"{int(seed)}: {v:.2f}" for seed, v in summary.kl_per_seed.items())
            + f"; per dim (mean over seeds) {' '.join(f'{v:.2f}' for v in summary.kl_per_dim)}"
        )
    console.print(f"wrote {run}/evaluation.parquet ({len(table)} episodes), {run}/evaluation_fit.parquet")
