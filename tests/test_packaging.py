"""The package installs and imports cleanly, and the layering figures → analysis → library holds."""

import ast
import subprocess
import sys

from conftest import REPO

FORBIDDEN_IN_LIBRARY = ("analysis", "figures", "matplotlib")


def test_no_bottleneck_at_repository_root():
    # PyPI's Bottleneck owns that import name; any such folder here breaks `import pandas`
    assert not (REPO / "bottleneck").exists()
    assert not (REPO / "bottleneck.py").exists()


def test_pandas_imports_beside_our_packages_from_repository_root():
    result = subprocess.run([sys.executable, "-c", "import pandas, softmax_bottleneck, analysis, figures"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_library_source_never_imports_analysis_figures_or_plotting():
    offenders = []
    for path in (REPO / "softmax_bottleneck").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_LIBRARY]
    assert offenders == []


def test_importing_every_library_module_loads_no_plotting_module():
    code = (
        "import importlib, pkgutil, sys, softmax_bottleneck\n"
        "for m in pkgutil.walk_packages(softmax_bottleneck.__path__, 'softmax_bottleneck.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN_IN_LIBRARY!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_importing_the_plots_changes_no_matplotlib_backend():
    code = "import matplotlib; matplotlib.use('svg'); import analysis.plots; print(matplotlib.get_backend())"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"


def test_every_declared_dependency_is_imported_somewhere():
    import re
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d)[0].lower(): d for d in declared}
    imported = set()
    for folder in ("softmax_bottleneck", "analysis", "figures"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    assert sorted(n for n in names if n not in imported) == []
