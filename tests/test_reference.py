"""The reference kernel: its step functions against autograd, and what it may import."""

import ast
from pathlib import Path

import pytest
import torch

from echo_rnn.compare import KERNELS_REL_F64
from echo_rnn.kernels import reference

PACKAGE = Path(__file__).resolve().parents[1] / "echo_rnn"


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def _package_imports(module: str) -> set[str]:
    """The modules of echo_rnn that ``module`` imports, by their full names."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("echo_rnn"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("echo_rnn"):
            names.add(node.module)
    return names


def test_reference_imports_only_torch_and_the_truncation_rule():
    assert _imports("kernels/reference") <= {"__future__", "dataclasses", "torch", "echo_rnn"}
    assert _package_imports("kernels/reference") == {"echo_rnn.truncation"}


def test_the_fast_kernel_imports_nothing_from_the_package_but_the_truncation_rule():
    # so that model.py, which builds on it, and bptt.py form no import cycle
    assert _package_imports("kernels/bptt") == {"echo_rnn.truncation"}
    assert _package_imports("truncation") == set()


@pytest.mark.parametrize("bias", [False, True])
def test_one_step_backward_is_the_derivative_of_one_step_forward(bias):
    g = torch.Generator().manual_seed(0)
    B, I, H = 3, 2, 4
    kw = {"dtype": torch.float64, "generator": g}
    x, h_prev = torch.randn(B, I, **kw), torch.randn(B, H, **kw)
    U, V = torch.randn(H, H, **kw), torch.randn(H, I, **kw)
    b = torch.randn(H, **kw) if bias else None
    dh = torch.randn(B, H, **kw)  # a random upstream gradient, as llm.c checks its layers
    leaves = [t.clone().requires_grad_() for t in (x, h_prev, U, V)]
    b_leaf = b.clone().requires_grad_() if bias else None
    h, cache = reference.step_forward(*leaves, b_leaf)
    (h * dh).sum().backward()
    ours = reference.step_backward(dh, cache)
    for name, leaf in zip(("x", "h_prev", "U", "V"), leaves):
        torch.testing.assert_close(
            getattr(ours, name), leaf.grad, rtol=KERNELS_REL_F64, atol=KERNELS_REL_F64
        )
    if bias:
        torch.testing.assert_close(ours.b, b_leaf.grad, rtol=KERNELS_REL_F64, atol=KERNELS_REL_F64)


def test_truncation_carries_nothing_into_a_new_window():
    g = torch.Generator().manual_seed(1)
    kw = {"dtype": torch.float64, "generator": g}
    x, U, V, w = (
        torch.randn(2, 6, 1, **kw),
        torch.randn(3, 3, **kw),
        torch.randn(3, 1, **kw),
        torch.randn(3, **kw),
    )
    _, _, caches = reference.forward(x, U, V, w)
    dy = torch.zeros(2, 6, dtype=torch.float64)
    dy[:, 2] = 1.0  # only step 3's loss: with k = 2 it reaches steps 3 and nothing before
    grads = reference.backward(dy, caches, w, truncate=2)
    assert grads.x[:, 2].abs().sum() > 0
    assert grads.x[:, :2].abs().sum() == 0 and grads.h0.abs().sum() == 0
    full = reference.backward(dy, caches, w)
    assert full.x[:, :2].abs().sum() > 0 and full.h0.abs().sum() > 0


def test_the_package_has_no_import_cycle():
    """Module-level imports between echo_rnn's modules form no cycle (imports inside
    functions are the deliberate lazy ones)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("echo_rnn"):
                mod = node.module.split(".")[1] if "." in node.module else None
                deps.update([mod] if mod else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                deps.update(
                    a.name.split(".")[1] for a in node.names if a.name.startswith("echo_rnn.")
                )
        graph[path.stem] = deps & {p.stem for p in PACKAGE.glob("*.py")}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for dep in graph.get(node, ()):
            visit(dep, [*stack, node])

    for module in graph:
        visit(module, [])
