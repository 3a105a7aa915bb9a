"""The artifact package's boundaries: figures, tables and the claims table share only the data
layer, the data layer draws nothing, and every catalogued renderer resolves inside the package."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from offprincipal.artifacts.catalogue import ARTIFACTS
from offprincipal.artifacts.render import renderer

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "offprincipal" / "artifacts"
ROOT = "offprincipal.artifacts"

#: what each family must not import (module prefixes); the data layer must not draw either
FORBIDDEN = {
    "figures": (f"{ROOT}.tables", f"{ROOT}.claims"),
    "tables": (f"{ROOT}.figures", f"{ROOT}.claims"),
    "claims": (f"{ROOT}.figures", f"{ROOT}.tables"),
    "data": (f"{ROOT}.figures", f"{ROOT}.tables", f"{ROOT}.claims", f"{ROOT}.render", "matplotlib", "seaborn"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def family(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE).parts
    if rel[0] in ("figures", "tables", "data"):
        return rel[0]
    return "claims" if rel == ("claims.py",) else None


def imported(source: str, module: str, is_package: bool) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in ``source`` names (relative
    imports resolved against ``module``; ``from a import b`` yields both ``a`` and ``a.b``)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def violations(path: Path, source: str | None = None) -> list[str]:
    fam = family(path)
    if fam is None:
        return []
    source = path.read_text() if source is None else source
    names = imported(source, module_name(path), path.name == "__init__.py")
    return sorted(f"{path.relative_to(REPO)} ({fam}) imports {n}" for n in names
                  for bad in FORBIDDEN[fam] if n == bad or n.startswith(bad + "."))


RENDERER_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if family(p) is not None)


def test_every_family_is_checked():
    assert {family(p) for p in RENDERER_MODULES} == set(FORBIDDEN)
    assert len([p for p in RENDERER_MODULES if family(p) == "figures"]) >= 8


@pytest.mark.parametrize("path", RENDERER_MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_renderer_imports_another_familys_module(path):
    assert violations(path) == []


@pytest.mark.parametrize(
    "rel, source",
    [
        ("figures/x.py", "from offprincipal.artifacts.tables.paper import table1\n"),
        ("figures/x.py", "def f():\n    from offprincipal.artifacts import claims\n"),
        ("figures/x.py", "from ..tables import restoration\n"),
        ("tables/x.py", "import offprincipal.artifacts.figures.style\n"),
        ("claims.py", "from .tables.paper import table2\n"),
        ("data/x.py", "import matplotlib.pyplot as plt\n"),
        ("data/x.py", "from offprincipal.artifacts.figures.style import finish\n"),
    ],
)
def test_the_check_catches_a_cross_family_import(rel, source):
    assert violations(PACKAGE / rel, source)


def test_the_check_allows_the_data_layer():
    src = ("from offprincipal.artifacts.data.context import Context\nfrom ..data import accuracy as acc\n"
           "from offprincipal.metrics.masks import MaskFile\n")
    assert violations(PACKAGE / "figures" / "x.py", src) == []
    assert violations(PACKAGE / "tables" / "x.py", src) == []
    assert violations(PACKAGE / "claims.py", src) == []


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_every_renderer_resolves_to_a_callable_of_its_family(name):
    art = ARTIFACTS[name]
    assert callable(renderer(name))
    module = art.renderer.partition(":")[0]
    path = Path(sys.modules[f"{ROOT}.{module}"].__file__)
    assert family(path) in (("figures",) if art.kind == "figure" else ("tables", "claims"))


def test_the_catalogue_and_the_data_layer_load_without_matplotlib():
    code = ("import importlib, pkgutil, sys\n"
            "import offprincipal.artifacts.catalogue, offprincipal.artifacts.inputs\n"
            "import offprincipal.artifacts.data as d\n"
            "for m in pkgutil.iter_modules(d.__path__):\n"
            "    importlib.import_module('offprincipal.artifacts.data.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'seaborn')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
