"""The package's layers import downward only — every import counted, module-level or inside a function, under
TYPE_CHECKING or not — no module is over 500 lines, and results/ holds records only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "csil_diag"

# Bottom first. A module may import its own layer's modules and those of any layer below it.
LAYERS: list[tuple[str, ...]] = [
    ("csil_diag.errors",),
    ("csil_diag.xla_cache",),
    ("csil_diag",),  # the package's __init__: the version and the XLA cache guard
    ("csil_diag.cache", "csil_diag.procs", "csil_diag.phases", "csil_diag.ui"),
    ("csil_diag.config",),
    ("csil_diag.runs",),  # the store: atomic writes, locks, identity checks
    ("csil_diag.envs",),  # robosuite tasks, env workers, rollouts
    ("csil_diag.data",),  # demos (robomimic HDF5), scripted experts, replay buffer
    ("csil_diag.features",),  # the --input grammar, low-dim sources, demo features, normaliser
    ("csil_diag.policy",),  # HetStat, tanh-Gaussian, BC, the acting HetStat
    ("csil_diag.vla",),  # π0
    ("csil_diag.inputs",),  # what a run reads: features and π0 together
    ("csil_diag.resumable",),  # the one resumable run
    ("csil_diag.diag",),  # entropy runs, sweeps, probes, projections
    ("csil_diag.csil",),  # CSIL / SACfD training
    ("csil_diag.report",),
    ("csil_diag.benchmarks",),
    ("csil_diag.cli",),
]


def layer_of(module: str) -> int:
    """The layer of a dotted module name (its longest listed prefix; the bare package only matches itself)."""
    best, best_len = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or (name != "csil_diag" and module.startswith(name + "."))
            if matches and len(name) > best_len:
                best, best_len = i, len(name)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every csil_diag module ``path`` imports, with its line (``from csil_diag.x import y`` names x.y when y is a
    module, so a package's __init__ is not blamed for its submodules)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "csil_diag"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "csil_diag":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split("."))
                ).is_dir()
                found.append((sub if is_module else node.module, node.lineno))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down() -> None:
    upward = []
    for path in sources():
        here = module_name(path)
        for target, line in imports(path):
            if layer_of(target) > layer_of(here):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target} (a higher layer)")
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    """Within a layer too: no two modules import each other, directly or round a longer loop."""
    graph = {module_name(p): {t for t, _ in imports(p)} for p in sources()}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an envs module importing the policy is reported, a policy module importing envs is not."""
    assert layer_of("csil_diag.policy.hetstat") > layer_of("csil_diag.envs.tasks")
    assert layer_of("csil_diag.cli.train") == len(LAYERS) - 1
    assert layer_of("csil_diag") < layer_of("csil_diag.config")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("csil_diag.nowhere")


@pytest.mark.parametrize("limit", [500])
def test_no_module_over_500_lines(limit: int) -> None:
    long = [f"{p.relative_to(ROOT)}: {n}" for p in sources() if (n := len(p.read_text().splitlines())) > limit]
    assert not long, f"modules over {limit} lines: {', '.join(long)}"


def test_results_hold_records_only() -> None:
    code = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "results").rglob("*.py"))
    assert not code, f"code under results/ (move it to csil_diag/benchmarks or experiments/): {code}"
