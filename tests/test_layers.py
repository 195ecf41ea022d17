"""The package's shape: stages import only stages below them, recipes import no recipe, no import cycles.

Every ``import fairrl...`` / ``from fairrl... import`` in ``src/fairrl`` counts, including the ones inside
functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fairrl

ROOT = Path(fairrl.__file__).parent

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS = [
    {"errors", "fsutil", "plugins", "assets", "console", "distributed", "__init__"},
    {"config"},
    {"data"},
    {"models"},
    {"rollout"},
    {"rewards"},
    {"advantages"},
    {"losses"},
    {"trainer"},
    {"eval"},
    {"report"},
    {"recipes"},
    {"bench"},
    {"multiseed"},
    {"compare"},
    {"explore"},
    {"cli", "cli_common", "cli_preference", "cli_redteam", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("fairrl",) + parts)


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} belongs to no layer; add its folder to LAYERS")


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fairrl"):
                base = node.module
                for alias in node.names:  # `from fairrl.rewards import bbq` imports a module
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("fairrl")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_every_import_points_down_or_sideways():
    upward = [
        f"{src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
        for src, dsts in _imports().items()
        for dst in dsts
        if _layer(dst) > _layer(src) and dst != "fairrl"
    ]
    assert upward == []


def test_no_recipe_imports_another_recipe():
    graph = _imports()
    crossing = [
        (src, dst) for src, dsts in graph.items() if src.startswith("fairrl.recipes.")
        for dst in dsts if dst.startswith("fairrl.recipes.")
    ]  # fmt: skip
    assert crossing == []
    assert {m for m in graph if m.startswith("fairrl.recipes.")} >= {"fairrl.recipes.grpo", "fairrl.recipes.dpo"}


def test_there_is_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "fairrl" or nxt.endswith(".__init__"):
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_graph_sees_module_level_lazy_and_submodule_imports():
    """The checks above see what they claim to (so an upward import would be reported)."""
    graph = _imports()
    assert "fairrl.config.data" in graph["fairrl.data.run_data"]  # module level
    assert "fairrl.data.bbq" in graph["fairrl.data.run_data"]  # inside a function
    assert "fairrl.rewards.bias_rm" in graph["fairrl.rewards"]  # `from fairrl.rewards import bias_rm`
    assert _layer("fairrl.recipes.grpo") > _layer("fairrl.trainer.grpo_step") > _layer("fairrl.models.policy")
