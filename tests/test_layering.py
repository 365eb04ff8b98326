"""The library's layering: the shared core knows no domain, domains do not know each other,
and nothing in cpc/ reaches into the recipes' scripts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPC = ROOT / "cpc"
DOMAINS = sorted(p.name for p in CPC.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
CORE = sorted(p for p in CPC.glob("*.py"))


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module an import statement of ``path`` names (relative imports resolved
    against ``package``, by default the file's place under the repository root)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_there_is_a_core_and_a_domain() -> None:
    assert "audio" in DOMAINS and len(CORE) >= 10


def test_core_imports_no_domain_package() -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imported_modules(p) if m.split(".")[:2] in (["cpc", d] for d in DOMAINS)
        )
        for p in CORE
    }
    assert not {k: v for k, v in bad.items() if v}


def test_domains_do_not_import_each_other() -> None:
    found = {}
    for d in DOMAINS:
        for p in (CPC / d).rglob("*.py"):
            others = sorted(
                m
                for m in imported_modules(p)
                if len(m.split(".")) > 1
                and m.split(".")[0] == "cpc"
                and m.split(".")[1] in set(DOMAINS) - {d}
            )
            if others:
                found[str(p.relative_to(ROOT))] = others
    assert not found


def test_library_imports_nothing_from_scripts() -> None:
    found = {
        str(p.relative_to(ROOT)): sorted(
            m for m in imported_modules(p) if _top(m) in ("local", "egs", "tests")
        )
        for p in CPC.rglob("*.py")
    }
    assert not {k: v for k, v in found.items() if v}


def test_importing_the_core_loads_no_domain() -> None:
    """At run time too: importing every core module leaves every domain package unloaded."""
    mods = [f"cpc.{p.stem}" for p in CORE if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[:2] in "
        f"[['cpc', d] for d in {DOMAINS!r}])\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The scan is not vacuous: a core-style file importing a domain is reported."""
    p = tmp_path / "probe.py"
    p.write_text("from cpc.audio.constants import HOP\nfrom .audio import model\n")
    found = imported_modules(p, package="cpc")
    assert {"cpc.audio.constants", "cpc.audio", "cpc.audio.model"} <= found
