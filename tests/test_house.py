"""The shape of the code: ssvae_core's imports form no cycle, pages use only public Streamlit, and the schedules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_graph() -> dict[str, set[str]]:
    """module -> the ssvae_core modules it imports (anywhere in the file), read from the source with ast."""
    graph = {}
    for path in sorted((ROOT / "ssvae_core").glob("*.py")):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssvae_core"):
                parts = node.module.split(".")
                if len(parts) > 1:
                    deps.add(parts[1])
                else:  # from ssvae_core import x, y
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ssvae_core."))
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `graph` as a list of names, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        state[n] = 2
        stack.pop()
        return None

    for n in graph:
        if n not in state and (c := visit(n)):
            return c
    return None


def test_readme_is_a_guide_of_at_most_200_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_ssvae_core_imports_point_one_way():
    graph = import_graph()
    assert {"cli", "train", "runner", "recipes"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    assert "streamlit" not in "".join(p.read_text() for p in (ROOT / "ssvae_core").glob("*.py"))


def test_learning_rate_follows_a_cosine_from_lr_to_lr_final():
    from ssvae_core.train import TrainConfig, lr_at

    cfg = TrainConfig(lr=1e-2, lr_final=1e-4)
    assert lr_at(cfg, 0, 100) == pytest.approx(1e-2)
    assert lr_at(cfg, 50, 100) == pytest.approx((1e-2 + 1e-4) / 2)
    assert lr_at(cfg, 100, 100) == pytest.approx(1e-4)
    assert all(lr_at(cfg, s, 100) > lr_at(cfg, s + 1, 100) for s in range(100))
    assert lr_at(TrainConfig(lr=3e-3, lr_final=0.0), 77, 100) == 3e-3  # no decay


def test_kl_weight_rises_linearly_over_the_warm_up_epochs():
    from ssvae_core.train import TrainConfig, kl_weight_at

    cfg = TrainConfig(kl_warmup=2.0)
    steps = 10  # per epoch: the weight reaches 1 after 20 steps
    assert [kl_weight_at(cfg, s, steps) for s in (0, 9, 19, 40)] == pytest.approx([0.05, 0.5, 1.0, 1.0])
    assert kl_weight_at(TrainConfig(kl_warmup=0.0), 0, steps) == 1.0


@pytest.mark.parametrize("model, labels", [("m2", 100), ("m1m2", 100), ("m1m2", 3000), ("supervised", 600)])
def test_train_recipe_and_reproduce_give_the_same_settings(model, labels, train_configs):
    """`train --recipe`, `reproduce` and the Train page (recipe_settings, tested in test_app) read one recipe."""
    import argparse

    from ssvae_core import cli, reproduce
    from ssvae_core.flags import config_from_args
    from ssvae_core.recipes import recipe_settings
    from ssvae_core.train import TrainConfig

    parser = argparse.ArgumentParser()
    reproduce.add_parser(parser.add_subparsers())
    a = parser.parse_args(["reproduce"])
    from_reproduce = config_from_args(reproduce._with_recipe(a, model, labels), model, labels, 0, "mnist")

    seen = train_configs
    assert cli.main(["train", "--model", model, "--labels", str(labels), "--recipe", "--out", "/nonexistent"]) == 0
    r = recipe_settings(model, labels)
    for cfg in (seen["cfg"], from_reproduce):
        assert (cfg.epochs, cfg.lr, cfg.lr_final, cfg.kl_warmup, cfg.model.hidden, cfg.ema, cfg.alpha, cfg.shift) == (
            r["epochs"], r["lr"], r["lr_final"], r["kl_warmup"], r["hidden"], r["ema"], r["alpha"], r["shift"])
    assert (seen["cfg"].epochs, seen["cfg"].lr) != (TrainConfig().epochs, TrainConfig().lr)  # not the defaults


def test_the_app_s_core_imports_leave_torchvision_unloaded():
    """torchvision (with torch._dynamo behind it) takes seconds to import; only MNIST, SVHN and NORB loading need
    it, so the modules every page imports must not pull it in at import time."""
    import subprocess
    import sys

    code = ("import sys, ssvae_core.jobs, ssvae_core.checkpoints, ssvae_core.generate, ssvae_core.images; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
