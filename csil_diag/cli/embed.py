"""`csil-diag embed`: π0's embedding and action for every demo state, cached beside the dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from csil_diag.ui import console
from csil_diag.ui import count_bar as _count_bar


def embed(
    demos: Path = typer.Option(..., help="robomimic HDF5 with camera images (agentview, wrist)"),
    model: Path = typer.Option(None, help="π0 checkpoint directory (default: the embedded tiny model)"),
    site: str = typer.Option("state", help="embedding site: state | actions | prefix"),
    batch: int = typer.Option(32, help="observations per model call"),
    seed: int = typer.Option(0, help="seed of the flow-matching noise (the VLA's actions)"),
) -> None:
    """π0's embedding and action for every demo state, cached beside the dataset (<demos>.embeddings/)."""
    from csil_diag.vla.embed import ensure_embeddings
    from csil_diag.vla.policy import VLAPolicy, resolve_model_dir

    policy = VLAPolicy.load(resolve_model_dir(model), site=site, batch_size=batch, seed=seed)
    result = ensure_embeddings(policy, demos, _count_bar("π0 embeddings"))
    what = f"{result.n_states} states of {len(result.table.demos)} demos (site {site}, width {result.width})"
    if result.computed:
        console.print(
            f"embedded {what} in {result.seconds:.1f} s: {result.obs_per_s:.1f} obs/s at batch {batch} "
            "after compilation"
        )
    else:
        console.print(f"reused the cached embeddings of {what}")
    console.print(f"{result.path}")
