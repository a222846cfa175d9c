"""The layering of docs/architecture.md, checked on the source: imports point down, networks
live in rlx.models, and no private optimizer loop exists outside core and the learners."""

import ast
from pathlib import Path

import pytest

RLX = Path(__file__).resolve().parents[1] / "rlx"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _modules(folder: str = "") -> list[Path]:
    return sorted((RLX / folder).rglob("*.py"))


def test_only_the_cli_imports_rlx_train():
    bad = [str(p.relative_to(RLX)) for p in _modules() if p.name != "train.py" or p.parent != RLX
           if any(n == "rlx.train" or n.startswith("rlx.train.") for n in _imports(p))]
    assert bad == []


@pytest.mark.parametrize("layer, forbidden", [("core", ("rlx.algos", "rlx.envs", "rlx.runs", "rlx.sweep")),
                                              ("envs", ("rlx.algos", "rlx.runs", "rlx.sweep")),
                                              ("models", ("rlx.algos", "rlx.envs", "rlx.runs", "rlx.sweep")),
                                              ("algos", ("rlx.runs", "rlx.sweep"))])
def test_imports_point_down(layer, forbidden):
    bad = {str(p.relative_to(RLX)): sorted(n for n in _imports(p) if n.startswith(forbidden))
           for p in _modules(layer)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_envs_define_no_trained_networks():
    bad = []
    for p in _modules("envs"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("nn.Module", "torch.nn.Module")
                                                      for b in node.bases):
                bad.append(f"{p.name}:{node.name}")
    assert bad == []


def test_no_private_optimizers_outside_core_and_learners():
    # an optimizer is built by rlx.core.learner.make_optimizer (fit, learners); cppo's per-batch
    # weight solver is part of its learner
    allowed = {"algos/cppo.py"}
    bad = [str(p.relative_to(RLX)) for p in _modules() if str(p.relative_to(RLX)) not in allowed
           and not str(p.relative_to(RLX)).startswith("core/")
           and any(f"torch.optim.{name}(" in p.read_text() for name in ("Adam", "AdamW", "SGD", "RMSprop"))]
    assert bad == []
