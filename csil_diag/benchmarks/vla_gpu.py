"""Full-size π0 on an accelerator: random-init params, one-call actions + embeddings throughput.

    python benchmarks/vla_gpu.py [preset] [dtype]      # default: pi0_base bfloat16

Prints one JSON line per batch size. Used on a lent GPU to show that the same flax code that matches
openpi's tiny fixture runs at openpi's real sizes; not part of the test suite.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp

from csil_diag.vla import pi0
from csil_diag.vla.bench import measure_throughput, random_observation
from csil_diag.vla.config import preset


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "pi0_base"
    dtype = sys.argv[2] if len(sys.argv) > 2 else "bfloat16"
    config = preset(name, dtype=dtype)
    print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__, "preset": name, "dtype": dtype}))
    start = time.perf_counter()
    params = jax.jit(
        lambda k: jax.tree_util.tree_map(lambda x: x.astype(jnp.dtype(dtype)), pi0.init_params(config, k))
    )(jax.random.key(0))
    jax.block_until_ready(params)
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(json.dumps({"params": int(n), "init_s": round(time.perf_counter() - start, 1)}))
    # The state-token embedding must not depend on the noise (it attends to prefix + itself only).
    obs = random_observation(config, 2)
    outs = [
        pi0.infer(
            config, params, obs, jax.random.normal(jax.random.key(s), (2, config.action_horizon, config.action_dim)), 10
        )
        for s in (1, 2)
    ]
    print(
        json.dumps(
            {
                "state_site_shape": list(outs[0].embeddings["state"].shape),
                "state_site_noise_diff": float(
                    jnp.abs(outs[0].embeddings["state"] - outs[1].embeddings["state"]).max()
                ),
                "actions_site_noise_diff": float(
                    jnp.abs(outs[0].embeddings["actions"] - outs[1].embeddings["actions"]).max()
                ),
                "actions_finite": bool(jnp.isfinite(outs[0].actions).all()),
            }
        )
    )
    for batch in (1, 8, 32):
        result = measure_throughput(config, params, batch=batch, num_steps=10, repeats=5)
        print(json.dumps({"batch": batch, **{k: round(v, 2) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
