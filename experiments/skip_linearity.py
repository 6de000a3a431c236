"""How linear the random-feature skip is in a run: the share of its projections h̃ = (x ⊙ exp(log ℓ)) W̃ inside
|h̃| < π/4, where both periodic-ReLU phases are affine in h̃ (f(h̃ + π/4) = π²/8, f(h̃ − π/4) = πh̃/2), so the skip's
share of the variance is a quadratic form of the input there. Per seed, on the training demos, the held-out demos and
the online states of the run's last point.

    python experiments/skip_linearity.py RUN_DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def main() -> None:
    from csil_diag.diag.run_states import open_run
    from csil_diag.policy.stationary import random_projection
    from csil_diag.runs import atomic_write_json

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out")
    args = ap.parse_args()
    rs = open_run(args.run)
    if not rs.config.hetstat.rf_skip:
        raise SystemExit(f"{args.run}: not an rf_skip run")
    rows = []
    for seed in rs.seeds:
        step = rs.steps(seed, "first,last")[-1]
        p = rs.params(seed, step)["params"]
        log_scale, w = p["skip_log_lengthscales"], p["skip_random_weights"]
        sets = {
            "train": rs.x_train,
            "valid": rs.normalizer(rs.inputs.valid.x),
            "online": rs.normalizer(rs.online(seed, step)["x"]),
        }
        row = {"seed": seed, "step": step, "log_lengthscale_mean": float(np.mean(log_scale))}
        for name, x in sets.items():
            h = np.abs(np.asarray(random_projection(x, w, log_scale)))
            row[f"{name}_affine_share"] = float((h < math.pi / 4).mean())
            row[f"{name}_max_abs_projection"] = float(h.max())
        rows.append(row)
        print(json.dumps(row))
    if args.out:
        atomic_write_json(Path(args.out), rows)


if __name__ == "__main__":
    main()
