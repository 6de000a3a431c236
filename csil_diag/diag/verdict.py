"""What an entropy run found, in words: does the HetStat's own uncertainty separate online from expert states?

The verdict rests on the variance-only measure, the pre-squash Gaussian entropy Σᵢ log σᵢ(s): the sampled entropy
H(s) also carries log|tanh'| at the composed action, which moves with the VLA's action (residual mode) or with a
saturated mean even where σ is identical on every state. H is reported beside it, never instead of it.

Per seed, at the last evaluated step, the gap mean Σ log σ(online) − mean Σ log σ(held-out) with its 95 %
episode-cluster bootstrap CI decides: CI above 0 → separated, below 0 → reversed (online states *more* certain:
the collapse), containing 0 → not separated. Identical σ on every state gives a gap of exactly 0: not separated.
A gap smaller than :data:`NEGLIGIBLE_GAP` is "not separated" whatever its CI: the AUROC ranks differences of any
size, so an untrained HetStat whose σ differs in the 4th decimal can read AUROC 0.26 with a gap of −0.0003 nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Below these the numbers can still be reported, but not trusted for a conclusion.
MIN_SEEDS = 3
MIN_EPISODES = 10
MIN_VALID_DEMOS = 5
# The resolution of the verdict: a Σ log σ gap under 0.01 nats (the product of the per-dimension σ differing by
# under 1 %) is no separation in any sense CSIL's reward could use, even when a tight CI excludes 0.
NEGLIGIBLE_GAP = 0.01


@dataclass(frozen=True)
class SeedVerdict:
    seed: int
    outcome: str  # separated | not separated | reversed | undetermined
    gap: float  # Gaussian-entropy gap, online − held-out [nats]
    low: float
    high: float
    auroc: float  # AUROC of Σ log σ, online vs held-out
    auroc_h: float  # AUROC of H (the thesis' measure), for comparison
    auroc_low: float = float("nan")  # 95 % episode-cluster bootstrap CI of ``auroc`` (nan in runs older than it)
    auroc_high: float = float("nan")


@dataclass(frozen=True)
class Verdict:
    outcome: str  # separated | not separated | reversed | mixed | undetermined
    sentence: str
    step: int
    seeds: list[SeedVerdict]
    episodes: int  # online rollouts per point
    valid_demos: int
    warnings: list[str] = field(default_factory=list)


def seed_outcome(gap: float, low: float, high: float) -> str:
    """The outcome of one seed's Gaussian-entropy gap and its 95 % CI."""
    if gap == 0.0 and not (low < 0.0 or high > 0.0):  # σ identical everywhere: nothing to separate, CI or not
        return "not separated"
    if math.isnan(low) or math.isnan(high):
        return "undetermined"
    if abs(gap) < NEGLIGIBLE_GAP:
        return "not separated"
    if low > 0.0:
        return "separated"
    if high < 0.0:
        return "reversed"
    return "not separated"


def run_verdict(table: pd.DataFrame, episodes: int, valid_demos: int) -> Verdict:
    """The verdict of one run's entropy table (rows as written by ``csil-diag entropy``) at its last step."""
    step = int(table.step.max())
    online = table[(table.split == "online") & (table.step == step)].sort_values("seed")
    seeds = [
        SeedVerdict(
            int(r.seed),
            seed_outcome(r.gap_gauss_valid, r.gap_gauss_valid_lo, r.gap_gauss_valid_hi),
            float(r.gap_gauss_valid),
            float(r.gap_gauss_valid_lo),
            float(r.gap_gauss_valid_hi),
            float(r.auroc_gauss_valid),
            float(r.auroc_valid),
            float(getattr(r, "auroc_gauss_valid_lo", float("nan"))),
            float(getattr(r, "auroc_gauss_valid_hi", float("nan"))),
        )
        for r in online.itertuples()
    ]
    outcomes = [s.outcome for s in seeds]
    n = len(seeds)
    outcome = outcomes[0] if len(set(outcomes)) == 1 else "mixed"
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    auroc = sum(s.auroc for s in seeds) / n
    auroc_h = sum(s.auroc_h for s in seeds) / n
    meaning = {
        "separated": "the HetStat's variance is higher on online states than on held-out expert states",
        "not separated": "the HetStat's variance does not tell online from held-out expert states",
        "reversed": "the HetStat is MORE certain on online states than on held-out expert states (collapse)",
        "mixed": f"the seeds disagree ({counts})",
        "undetermined": "too few held-out episodes for a confidence interval",
    }[outcome]
    sentence = (
        f"{outcome.upper()} at step {step}: {meaning}; variance-only AUROC {auroc:.2f} "
        f"(H: {auroc_h:.2f}), {n} seed{'s' * (n != 1)} × {episodes} rollouts vs {valid_demos} held-out demos."
    )
    warnings = []
    if n < MIN_SEEDS:
        warnings.append(f"only {n} seed{'s' * (n != 1)}: rerun with --seeds 0,1,2 (or more) before concluding")
    if episodes < MIN_EPISODES:
        warnings.append(f"only {episodes} online rollouts per point: use --episodes {MIN_EPISODES} or more")
    if valid_demos < MIN_VALID_DEMOS:
        warnings.append(f"only {valid_demos} held-out demos: generate more demos")
    tiny = [s for s in seeds if abs(s.gap) < NEGLIGIBLE_GAP and abs(s.auroc - 0.5) >= 0.1]
    if tiny:
        warnings.append(
            f"seed{'s' * (len(tiny) != 1)} {', '.join(str(s.seed) for s in tiny)}: variance-only AUROC "
            f"{', '.join(f'{s.auroc:.2f}' for s in tiny)} from a Σ log σ gap under {NEGLIGIBLE_GAP} nats "
            f"({', '.join(f'{s.gap:+.4f}' for s in tiny)}): AUROC ranks differences too small to matter"
        )
    h_separates = auroc_h >= 0.6 and auroc < 0.6
    if h_separates:
        warnings.append(
            "H separates but Σ log σ does not: H's difference comes from the tanh Jacobian at the composed action "
            "(the VLA's action or a saturated mean), not from the HetStat's uncertainty"
        )
    return Verdict(outcome, sentence, step, seeds, episodes, valid_demos, warnings)


def mean_t_interval(values: np.ndarray | pd.Series) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (and subsets): (mean, lo, hi); one value has NaN bounds, never a fake one."""
    from scipy import stats

    x = np.asarray(values, float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


def separation_by_width(summary: pd.DataFrame) -> pd.DataFrame:
    """Thesis Fig. 6.5's numbers: at each cell's last step, AUROC online vs held-out (variance-only Σ log σ and H)
    and the Σ log σ gap (nats) per (width, object, selection): mean, 95 % t-interval over seeds × random subsets,
    and how many values."""
    online = summary[summary.split == "online"]
    last = online[online.step == online.groupby("cell").step.transform("max")]
    rows = []
    for (width, obj, selection), group in last.groupby(["width", "object", "selection"], sort=True):
        row = {"width": int(width), "object": bool(obj), "selection": selection, "n": len(group)}
        for name, column in (
            ("auroc_gauss", "auroc_gauss_valid"),
            ("auroc_h", "auroc_valid"),
            ("gap_gauss", "gap_gauss_valid"),
        ):
            mean, lo, hi = mean_t_interval(group[column])
            row |= {name: mean, f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


# Issue 36's reading of the thesis' collapse: π0's embedding alone does not separate, the oracle object does.
COLLAPSE_WITHOUT_OBJECT = 0.6
COLLAPSE_WITH_OBJECT = 0.75


def collapsed_widths(by_width: pd.DataFrame) -> list[int]:
    """The π0 widths (> 0) at which a :func:`separation_by_width` table reads the collapse: the leading cells'
    seed-mean variance-only AUROC ≤ 0.6 without the object while the same width with the object reads ≥ 0.75."""
    leading = by_width[by_width.selection.isin(["leading", "none"]) & (by_width.width > 0)]
    auroc = leading.set_index(["width", "object"]).auroc_gauss
    return [
        int(w)
        for w in sorted(leading.width.unique())
        if (w, False) in auroc.index
        and (w, True) in auroc.index
        and auroc[(w, False)] <= COLLAPSE_WITHOUT_OBJECT
        and auroc[(w, True)] >= COLLAPSE_WITH_OBJECT
    ]


def held_out_demos(table: pd.DataFrame) -> int:
    """The held-out demos an entropy table's expert states come from (the valid split's episode count)."""
    return int(table[table.split == "valid"].n_episodes.iloc[0])


def final_point(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed (ascending) at an entropy table's last step: the online split's row, with the held-out split's
    entropy beside it as ``valid_entropy``."""
    last = table[table.step == table.step.max()]
    online = last[last.split == "online"].set_index("seed")
    valid = last[last.split == "valid"].set_index("seed")
    return online.assign(valid_entropy=valid.entropy).sort_index().reset_index()


def cell_verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a sweep's summary (in its order): seeds, the mean AUROC of Σ log σ (``auroc_gauss``) and of H
    (``auroc_h``) over seeds at the cell's last step, and its verdict's outcome."""
    rows = []
    for label, cell in summary.groupby("cell", sort=False) if not summary.empty else []:
        last = cell[(cell.split == "online") & (cell.step == cell.step.max())]
        verdict = run_verdict(cell, int(last.n_episodes.iloc[0]), held_out_demos(cell))
        rows.append(
            {
                "cell": label,
                "seeds": last.seed.nunique(),
                "auroc_gauss": last.auroc_gauss_valid.mean(),
                "auroc_h": last.auroc_valid.mean(),
                "outcome": verdict.outcome,
            }
        )
    return pd.DataFrame(rows, columns=["cell", "seeds", "auroc_gauss", "auroc_h", "outcome"])
