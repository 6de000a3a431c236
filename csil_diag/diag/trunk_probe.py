"""The trunk probe: where is the online/expert distinction lost — in the input, the HetStat's trunk, or its head?

For every online state and every held-out expert state, its Euclidean distance to the nearest training-demo state in
three spaces of the HetStat at a BC step: the input (normalised features), the trunk's bottleneck h, and the stationary
random features φ(h). The AUROC of online against held-out distances says how well each space tells them apart.
Separation present at the input and gone at the bottleneck: the trunk maps off-distribution inputs onto in-distribution
features before the stationary layer sees them. Absent already at the input: the embedding is what makes them alike.
The last link is the head: the variance-only measure Σ log σ(s) on the same states (the entropy run's own AUROC); where
the features still separate and σ does not, the covariance the NLL fitted is what ignores the distance. Beside it, the
σ of the posterior head on the same features (``policy/posterior_head.py``: the Bayesian posterior of the linear head
given the training demos, as in SNGP's last layer): the uncertainty the features allow.
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from csil_diag.diag.separation import auroc, bootstrap_auroc
from csil_diag.diag.verdict import NEGLIGIBLE_GAP
from csil_diag.policy.tanh_gaussian import gaussian_entropy

SPACES = ("input", "bottleneck", "features")
HEAD = "head σ"  # the row of the variance-only measure Σ log σ, after the three distance spaces
POSTERIOR = "posterior σ"  # the Bayesian linear head's σ on the same features (not part of the chain)
TERM = "input: "  # prefix of the rows of one --input term's columns ("input: joints")
LARGE_DROP = 0.05  # an AUROC drop from one link to the next worth naming when everything still separates


@functools.partial(jax.jit, static_argnums=0)
def _through_the_hetstat(model: nn.Module, params: Any, x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    _, std, h, phi = model.apply(params, x, with_features=True)
    return h, phi, gaussian_entropy(std)


def representations(model: nn.Module, params: Any, x: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Normalised inputs x (N, D) through the HetStat: the three spaces input (N, D), bottleneck (N, 48) and
    features (N, F), and the head's Gaussian entropy Σ log σ + const (N,)."""
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(x), chunk):
        parts.append(tuple(map(np.asarray, _through_the_hetstat(model, params, jnp.asarray(x[start : start + chunk])))))
    h, phi, gauss = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {"input": np.asarray(x, np.float32), "bottleneck": h, "features": phi, HEAD: gauss}


@jax.jit
def _nearest(q: jnp.ndarray, ref: jnp.ndarray, ref_sq: jnp.ndarray) -> jnp.ndarray:
    # ‖q‖² + ‖r‖² − 2q·r finds the neighbour with one matmul; its distance is then recomputed directly, since the
    # expansion cancels catastrophically in float32 for near neighbours.
    d = jnp.sum(q * q, axis=1, keepdims=True) + ref_sq[None, :] - 2.0 * q @ ref.T
    nearest = ref[jnp.argmin(d, axis=1)]
    return jnp.sqrt(jnp.sum(jnp.square(q - nearest), axis=1))


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance of each query (Q, D) to its nearest reference row (R, D): (Q,). Brute force in chunks."""
    ref = jnp.asarray(reference, jnp.float32)
    ref_sq = jnp.sum(ref * ref, axis=1)
    out = []
    for start in range(0, len(queries), chunk):
        q = np.asarray(queries[start : start + chunk], np.float32)
        pad = chunk - len(q) if len(queries) > chunk else 0  # one compiled shape for every full-size chunk
        if pad:
            q = np.concatenate([q, np.repeat(q[-1:], pad, 0)])
        out.append(np.asarray(_nearest(jnp.asarray(q), ref, ref_sq))[: len(q) - pad])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def probe_spaces(
    model: nn.Module,
    params: Any,
    x_train: np.ndarray,
    x_valid: np.ndarray,
    valid_episode: np.ndarray,
    x_online: np.ndarray,
    online_episode: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    posterior: tuple[nn.Module, Any] | None = None,
    terms: dict[str, slice] | None = None,
) -> list[dict[str, float]]:
    """One row per space: AUROC (online vs held-out distances to the training demos) with its episode-cluster
    bootstrap CI, and the mean distances; then the head's row, the same for Σ log σ (``online_distance`` /
    ``valid_distance`` hold its means, ``gap`` their difference in nats); with ``posterior`` (the model and
    parameters of :func:`~csil_diag.policy.posterior_head.fit_posterior_head`), the posterior head's row too; with
    ``terms`` (``--input`` term → its columns), one ``input: <term>`` row per term after the input's: which part of
    the input carries its separation (the joints alone may). All x normalised as the run normalised them."""
    train, valid, online = (representations(model, params, x) for x in (x_train, x_valid, x_online))
    action_dim = model.action_dim
    if posterior is not None:
        for reps, x in ((valid, x_valid), (online, x_online)):
            reps[POSTERIOR] = representations(*posterior, x)[HEAD]
    for term, cols in (terms or {}).items():
        for reps in (train, valid, online):
            reps[TERM + term] = reps["input"][:, cols]
    names = ("input", *(TERM + t for t in terms or {}), *SPACES[1:], HEAD)
    rows = []
    for name in (*names, *([POSTERIOR] if posterior is not None else [])):
        if name in (HEAD, POSTERIOR):
            v_valid, v_online, width = valid[name], online[name], action_dim
        else:
            v_valid = nearest_distances(valid[name], train[name])
            v_online = nearest_distances(online[name], train[name])
            width = int(train[name].shape[1])
        low, high = bootstrap_auroc(v_online, online_episode, v_valid, valid_episode, n_boot, seed)
        mean_online, mean_valid = float(np.mean(v_online, dtype=np.float64)), float(np.mean(v_valid, dtype=np.float64))
        rows.append(
            {
                "space": name,
                "auroc": auroc(v_online, v_valid),
                "auroc_lo": low,
                "auroc_hi": high,
                "online_distance": mean_online,
                "valid_distance": mean_valid,
                "gap": mean_online - mean_valid if name in (HEAD, POSTERIOR) else np.nan,
                "width": width,
            }
        )
    return rows


def reading(frame: pd.DataFrame) -> str:
    """One sentence on where separation is lost, from one run's rows at its last probed step (means over seeds).

    A space separates when its AUROC's CI lies above 0.5; the head also needs a Σ log σ gap of at least
    NEGLIGIBLE_GAP (σ identical up to rounding ranks at any AUROC). Where every link separates but one loses much of
    it, the largest drop is named.
    """
    columns = ["auroc", "auroc_lo", "auroc_hi", *(["gap"] if "gap" in frame else [])]
    last = frame[frame.step == frame.step.max()].groupby("space")[columns].mean()
    if not set(SPACES) <= set(last.index):
        return "incomplete probe"
    chain = [s for s in (*SPACES, HEAD) if s in last.index]  # probes written before the head row have no HEAD
    in_order = [s for s in dict.fromkeys(frame.space) if s.startswith(TERM)]  # the --input's order
    terms = ", ".join(f"{s.removeprefix(TERM)} {last.loc[s].auroc:.2f}" for s in in_order)
    values = "AUROC " + ", ".join(
        f"{s} {last.loc[s].auroc:.2f}" + (f" ({terms})" if s == "input" and terms else "") for s in chain
    )
    inp, bott, feat = (last.loc[s] for s in SPACES)
    if not inp.auroc_lo > 0.5:
        return (
            f"{values}: online states are no farther from the demos than held-out ones already in the input — "
            "the inputs (the embedding) make them alike"
        )
    if not bott.auroc_lo > 0.5:
        return f"{values}: separated in the input, not at the bottleneck — the trunk collapses it"
    if not feat.auroc_lo > 0.5:
        return f"{values}: separated up to the bottleneck, lost in the random features"
    bayes = ""
    if POSTERIOR in last.index and HEAD in last.index:
        post = last.loc[POSTERIOR]
        if _separates(post) and post.auroc - last.loc[HEAD].auroc >= LARGE_DROP:
            bayes = f"; a Bayesian head on the same features reads {post.auroc:.2f}: the features carry what σ misses"
    if HEAD in last.index:
        head = last.loc[HEAD]
        if abs(head.gap) < NEGLIGIBLE_GAP:
            return (
                f"{values}: the features separate, σ does not (Σ log σ gap {head.gap:+.3f} nats) — lost in the head"
                f"{bayes}"
            )
        if not head.auroc_lo > 0.5:
            return (
                f"{values}: the features separate, σ does not — lost in the head (the covariance the NLL fitted){bayes}"
            )
    drops = [(last.loc[a].auroc - last.loc[b].auroc, a, b) for a, b in itertools.pairwise(chain)]
    drop, a, b = max(drops)
    where = f"; the largest loss is {a} → {b} ({-drop:+.2f})" if drop >= LARGE_DROP else ""
    return f"{values}: separated in every space{' and in σ' if HEAD in chain else ''}{where}{bayes}"


def _separates(row: pd.Series) -> bool:
    return bool(row.auroc_lo > 0.5 and abs(row.gap) >= NEGLIGIBLE_GAP)


def write_probe(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> pd.DataFrame:
    from csil_diag.runs import atomic_write_parquet

    frame = pd.DataFrame(rows)
    atomic_write_parquet(Path(run_dir) / "probes" / "trunk.parquet", frame)
    return frame


def probe_run(
    run_dir: str | os.PathLike, steps: str = "first,last", on_step: Any = None
) -> tuple[pd.DataFrame, list[str]]:
    """The trunk probe of an entropy run at its first and last (or every: ``steps="all"``) probed BC step, per seed.

    Parameters at step 0 are a pure function of the seed; later steps need ``params_<step>.msgpack``
    (``--checkpoints every`` keeps one per point, ``last`` the last only). Returns (rows, notes on what was skipped).
    """
    from csil_diag.diag.run_states import check_steps, open_run
    from csil_diag.policy.posterior_head import posterior_model

    check_steps(steps)
    run = open_run(run_dir)
    x_train, x_valid = run.x_train, run.normalizer(run.inputs.valid.x)
    refit = run.config.hetstat.head != "posterior"  # a posterior-head run's parameters already are the posterior
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    terms = run.input_terms()
    for seed in run.seeds:
        wanted = run.steps(seed, steps)
        if not wanted:
            notes.append(run.missing_states_note(seed))
            continue
        for step in wanted:
            online = run.online(seed, step)
            params = run.params(seed, step)
            for row in probe_spaces(
                run.model,
                params,
                x_train,
                x_valid,
                run.inputs.valid.episode,
                run.normalizer(online["x"]),
                online["episode"],
                run.config.bootstrap,
                seed,
                (posterior_model(run.model), run.posterior(params)[0] if refit else params),
                terms,
            ):
                rows.append({"seed": seed, "step": step, "input": run.config.input, **row})
            if on_step is not None:
                on_step(seed, step)
    if not rows:
        raise run.no_states_error()
    return write_probe(run_dir, rows), notes
