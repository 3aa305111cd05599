"""The inference package and the training package import without Flask; no module imports itself back;
the web app depends on neither the training code nor the deployment glue around it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLASK_MODULES = ("flask", "flask_login", "flask_sqlalchemy", "flask_wtf", "flask_migrate")


@pytest.mark.parametrize(
    "modules",
    [
        "webapp.inference.decode, webapp.inference.preprocess, webapp.inference.analyzer, "
        "webapp.inference.model_card, webapp.inference.overlay, webapp.inference.runtime",
        "training.data, training.evaluate",
    ],
)
def test_imports_with_every_flask_module_blocked(modules):
    # A None entry in sys.modules makes any import of that name fail, as if it were not installed.
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in FLASK_MODULES)
    script = f"import sys; {blocked}; import {modules}; print('ok')"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def _module_imports(path: Path, package: str) -> set[str]:
    """First-party modules that `path` imports anywhere, lazily inside functions too (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"webapp", "training", "deploy"}}


def _graph() -> dict[str, set[str]]:
    modules = {}
    for top in ("webapp", "training", "deploy"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            package = name if is_package else ".".join(parts[:-1])
            modules[name] = _module_imports(path, package)
    return {name: {dep for dep in deps if dep in modules and dep != name} for name, deps in modules.items()}


def test_no_import_cycles_between_modules():
    graph = _graph()
    # A blueprint package's __init__ importing its routes (which import the package's bp) is
    # Flask's documented pattern, not a cycle between modules with their own jobs.
    for name, deps in graph.items():
        deps -= {d for d in deps if name.startswith(d + ".") or d.startswith(name + ".")}
    seen, on_stack, cycles = set(), [], []

    def visit(node):
        if node in on_stack:
            cycles.append(on_stack[on_stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_stack.append(node)
        for dep in sorted(graph[node]):
            visit(dep)
        on_stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles


def test_the_web_app_never_imports_training():
    for name, deps in _graph().items():
        if name.startswith("webapp"):
            assert not any(dep.startswith("training") for dep in deps), name


def test_the_web_app_never_imports_the_deployment_glue():
    """deploy/ runs around the app (gunicorn's hooks and worker class) and may import it, not the
    reverse: errors/handlers.py imported the refusal table from deploy/gunicorn_worker.py, so the
    app could not be served or tested without the gunicorn glue beside it."""
    for name, deps in _graph().items():
        if name.startswith("webapp"):
            assert not any(dep.startswith("deploy") for dep in deps), name
