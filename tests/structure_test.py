"""The layout rules of docs/architecture.md hold for every production module.

The design is only as real as the imports: these tests parse the import statements of every
module under `libs/` and `services/` (tests excluded) and check that there are no import-time
cycles, that every module stays small, that `ses_core` stays a library (no environment, no
service imports), that a subpackage's front door never drags in a heavy client library, and that
modules whose name starts with `_` are used only inside their own subpackage.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "libs" / "ses_core").is_dir():  # under Pants: the sandbox root holds the files
    ROOT = Path.cwd()
SOURCE_ROOTS = ("libs", "services")
FIRST_PARTY = ("ses_core", "relay", "blacklist_lambda", "blacklist_cli")
MAX_LINES = 400
HEAVY = frozenset({"boto3", "botocore", "redis", "aiosmtplib", "cryptography", "aiosmtpd"})
FRONT_DOORS = (
    "ses_core",
    "ses_core.feedback",
    "ses_core.blacklist",
    "ses_core.ratelimit",
    "ses_core.smtp",
    "ses_core.sesapi",
    "ses_core.queue",
)


@attrs.frozen
class Module:
    """One production module: its dotted name, file and the modules it imports at import time."""

    name: str
    path: Path
    is_package: bool
    imports: frozenset[str]
    typing_imports: frozenset[str]
    lines: int
    reads_environment: bool


def _is_production(path: Path) -> bool:
    return not path.name.endswith("_test.py") and path.name != "conftest.py"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking_block(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _import_time_statements(
    body: list[ast.stmt], *, typing_only: bool = False
) -> Iterator[ast.stmt]:
    """Module-level statements, descending into try/if blocks but not into functions or classes.
    `if TYPE_CHECKING:` blocks (imports that never run) are skipped, or are all that is
    yielded with `typing_only`."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking_block(node):
            if typing_only:
                yield from _import_time_statements(node.body)
            continue
        if not typing_only:
            yield node
        if isinstance(node, ast.If | ast.Try):
            nested = [*node.body, *node.orelse]
            if isinstance(node, ast.Try):
                nested += [*node.finalbody, *(s for h in node.handlers for s in h.body)]
            yield from _import_time_statements(nested, typing_only=typing_only)


def _imported(node: ast.stmt, package: str, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        for alias in node.names:  # `from pkg import module` imports the module itself
            candidate = f"{target}.{alias.name}"
            yield candidate if candidate in known else target


def _reads_environment(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in {"environ", "getenv"} for alias in node.names):
                return True
    return False


def _discover() -> dict[str, Module]:
    files = {
        _module_name(ROOT / root, path): path
        for root in SOURCE_ROOTS
        for path in sorted((ROOT / root).rglob("*.py"))
        if _is_production(path)
    }
    known = set(files)
    modules = {}
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        imports = {
            imported
            for node in _import_time_statements(tree.body)
            for imported in _imported(node, package, known)
        }
        typing_imports = {
            imported
            for node in _import_time_statements(tree.body, typing_only=True)
            for imported in _imported(node, package, known)
        }
        modules[name] = Module(
            name=name,
            path=path,
            is_package=is_package,
            imports=frozenset(imports),
            typing_imports=frozenset(typing_imports),
            lines=len(source.splitlines()),
            reads_environment=_reads_environment(tree),
        )
    return modules


MODULES = _discover()


def _first_party(name: str) -> bool:
    return name.split(".")[0] in FIRST_PARTY


def test_the_tree_was_found() -> None:
    """Guards the other tests against passing on an empty sandbox."""
    assert {"ses_core", "ses_core.smtp.client", "relay.main", "blacklist_lambda.handler"} <= set(
        MODULES
    )
    assert len(MODULES) > 50


def test_no_import_cycles() -> None:
    """No module imports itself back through others (Tarjan's SCCs). Imports made only for
    type checking count too: a cycle there still means two modules that cannot be read apart."""
    graph = {
        name: sorted(t for t in module.imports | module.typing_imports if t in MODULES)
        for name, module in MODULES.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    module = MODULES[name]
    assert module.lines < MAX_LINES, f"{module.path}: {module.lines} lines; split it by job"


def test_ses_core_is_a_library() -> None:
    """ses_core reads no environment and knows nothing of the services built on it."""
    offenders = {
        name: sorted(t for t in module.imports if _first_party(t) and not t.startswith("ses_core"))
        for name, module in MODULES.items()
        if name.startswith("ses_core")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    readers = [n for n, m in MODULES.items() if n.startswith("ses_core") and m.reads_environment]
    assert readers == []


def _closure(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = MODULES.get(name)
        if module is not None:
            todo.extend(module.imports)
            parent = name.rpartition(".")[0]  # importing a submodule runs its package first
            if parent:
                todo.append(parent)
    return seen


@pytest.mark.parametrize("front_door", FRONT_DOORS)
def test_front_doors_import_no_heavy_client(front_door: str) -> None:
    """A subpackage's __init__ stays light, so the Lambda pays only for what it uses."""
    heavy = sorted(name for name in _closure(front_door) if name.split(".")[0] in HEAVY)
    assert heavy == []


def test_private_modules_stay_inside_their_subpackage() -> None:
    offenders = []
    for name, module in MODULES.items():
        for target in module.imports:
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_")]
            if not _first_party(target) or not private:
                continue
            owner = ".".join(parts[: private[0]])
            if not (name == owner or name.startswith(owner + ".")):
                offenders.append(f"{name} -> {target}")
    assert offenders == []
