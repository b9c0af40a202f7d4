"""The library's layout check: ``python -m stylemerge.cli.layout``.

Prints one line per package (modules, lines, the packages it imports) and fails (exit 1) on
what makes a layout hard to follow:

- an **upward import**: a package imports one listed after it in :data:`LAYERS` (a stage's
  code never reaches into the report, the core never into a stage);
- an **import cycle** between modules (function-level and ``TYPE_CHECKING`` imports count:
  a cycle hidden in a function is still one);
- a module over :data:`MAX_MODULE_LINES` lines or a function over :data:`MAX_FUNCTION_LINES`.

A module outside every package of :data:`LAYERS` (a new package not placed yet) is an error too.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = "stylemerge"
# Lowest first: a package may import its own modules and those of the packages before it.
LAYERS = (
    "core",  # files, job settings, precision, progress, tracking, provenance, Trainer loop
    "stats",  # intervals and per-document paired changes
    "data",  # sources, shards, tokenizer, arithmetic traces
    "models",  # model reference, names, GGUF import, availability, tiny-model pretraining
    "generation",  # prompt windows, sampling, vLLM
    "proxy",  # proxy stage
    "grpo",  # GRPO stage: trainer, rewards, MARA, trl compatibility
    "merge",  # merge stage
    "think",  # think-token stage
    "evaluate",  # lm-eval, task data, diversity
    "workflow",  # config schema, revision lock, Snakemake job translation
    "resources",  # rule registry: GPUs, memory, runtime, cost model
    "report",  # tables, claims, model cards, figures, ablation, replicates
    "cli",  # developer commands
)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


@dataclass
class Module:
    name: str  # dotted, without the root: "grpo.train"
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # modules of the library it imports
    long_functions: list[tuple[str, int]] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def _library_module(name: str, known: set[str]) -> str | None:
    """The library module a dotted name is, or lies in (None outside the library)."""
    if not name.startswith(ROOT + "."):
        return None
    name = name[len(ROOT) + 1 :]
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The library modules an import statement names: ``from x import y, z`` names x.y and
    x.z where they are modules, and x for any name that is not."""
    if isinstance(node, ast.Import):
        found = [_library_module(alias.name, known) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([ROOT, *parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        prefix = ROOT + "."
        found = [
            name[len(prefix) :]
            if (name := f"{base}.{alias.name}").startswith(prefix) and name[len(prefix) :] in known
            else _library_module(base, known)
            for alias in node.names
        ]
    else:
        return
    yield from {name for name in found if name}


def read_modules(src: Path) -> dict[str, Module]:
    """Every module under ``src/stylemerge`` with its imports and long functions."""
    root = src / ROOT
    paths = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            paths[".".join(parts)] = path
    known = set(paths)
    modules = {}
    for name, path in paths.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        module = Module(name, path, len(text.splitlines()))
        for node in ast.walk(tree):
            found = _imported(node, name, path.name == "__init__.py", known)
            module.imports.update(dep for dep in found if dep != name)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    module.long_functions.append((node.name, length))
        modules[name] = module
    return modules


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import cycles between modules (one per strongly connected component, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for dep in sorted(modules[name].imports):
            if dep not in index:
                visit(dep)
                low[name] = min(low[name], low[dep])
            elif dep in on_stack:
                low[name] = min(low[name], index[dep])
        if low[name] == index[name]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == name:
                    break
            # a package's __init__ importing its own modules is not a cycle of code
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def problems(modules: dict[str, Module]) -> list[str]:
    """Every rule the layout breaks, one line each."""
    out = []
    rank = {package: i for i, package in enumerate(LAYERS)}
    for name, module in sorted(modules.items()):
        if module.package not in rank:
            out.append(f"{name}: package {module.package!r} is not in LAYERS")
            continue
        for dep in sorted(module.imports):
            target = modules[dep].package
            if rank.get(target, -1) > rank[module.package]:
                out.append(f"{name}: imports {dep} upward ({module.package} < {target})")
        if module.lines > MAX_MODULE_LINES:
            out.append(f"{name}: {module.lines} lines (over {MAX_MODULE_LINES})")
        for function, length in module.long_functions:
            out.append(f"{name}.{function}: {length} lines (over {MAX_FUNCTION_LINES})")
    out += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(modules)]
    return out


def summary(modules: dict[str, Module]) -> list[str]:
    """One line per package: modules, lines and the packages it imports."""
    lines = []
    for package in LAYERS:
        members = [m for m in modules.values() if m.package == package]
        if not members:
            continue
        deps = sorted(
            {modules[d].package for m in members for d in m.imports} - {package},
            key=lambda p: LAYERS.index(p) if p in LAYERS else len(LAYERS),
        )
        size = sum(m.lines for m in members)
        modules_here = len([m for m in members if m.name != package])
        imports = ", ".join(deps) or "-"
        lines.append(f"{package:<11} {modules_here:>2} modules {size:>5} lines  imports: {imports}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    modules = read_modules(args.src)
    print("\n".join(summary(modules)))
    found = problems(modules)
    for line in found:
        print(f"layout: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
