"""The product holds no benchmark code and imports none.

The benchmarks are the separate ``fedcodec-bench`` distribution (``bench/`` in the repository,
import name ``fedcodec_bench``).  They may import fedcodec; fedcodec must not import them,
with one documented exception: ``fedcodec bench ARGS`` in :mod:`fedcodec.cli` hands its
arguments to ``fedcodec_bench.cli`` when that is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import fedcodec

PACKAGE_DIR = Path(fedcodec.__file__).resolve().parent

#: Import names of benchmark code (the old in-product places included).
BENCH_MODULES = ("fedcodec_bench", "fedcodec.bench", "fedcodec.server.loadbench", "bench")
#: (product module, benchmark module) pairs that are allowed: the CLI's optional dispatch.
ALLOWED = {("fedcodec.cli", "fedcodec_bench.cli")}


def _is_bench(module: str) -> bool:
    return any(module == b or module.startswith(b + ".") for b in BENCH_MODULES)


def bench_imports(source: str) -> list[str]:
    """Benchmark modules a Python source imports: ``import``/``from`` statements (also inside
    functions) and ``importlib.import_module("...")``/``__import__("...")`` with a literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        found += [n for n in names if _is_bench(n)]
    return sorted(set(found))


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_the_import_check_finds_every_form():
    src = (
        "import fedcodec_bench.fl\n"
        "from fedcodec.bench import codec\n"
        "def f():\n"
        "    from fedcodec.server.loadbench import run_load_bench\n"
        "    importlib.import_module('fedcodec_bench.suite')\n"
        "import fedcodec.benchmarks_are_not_this\n"
        "from fedcodec import codec\n"
    )
    assert bench_imports(src) == [
        "fedcodec.bench",
        "fedcodec.bench.codec",
        "fedcodec.server.loadbench",
        "fedcodec.server.loadbench.run_load_bench",
        "fedcodec_bench.fl",
        "fedcodec_bench.suite",
    ]


def test_the_installed_package_holds_no_benchmark_files():
    files = importlib.metadata.files("fedcodec") or []
    paths = [str(f) for f in files]
    assert any(p.endswith("fedcodec/toy.py") for p in paths), "distribution record not read"
    offending = [
        p
        for p in paths
        if "bench" in Path(p).parts
        or "fedcodec_bench" in Path(p).parts
        or "loadbench" in Path(p).name
    ]
    assert offending == []
    assert not (PACKAGE_DIR / "bench").exists()
    assert not (PACKAGE_DIR / "server" / "loadbench.py").exists()


def test_no_product_module_imports_a_benchmark():
    sources = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(sources) > 30, f"too few modules found under {PACKAGE_DIR}"
    bad = []
    for path in sources:
        module = _module_name(path)
        for imported in bench_imports(path.read_text(encoding="utf-8")):
            if (module, imported) not in ALLOWED:
                bad.append(f"{module} imports {imported}")
    assert bad == []


def test_importing_the_product_loads_no_benchmark():
    code = (
        "import sys, fedcodec, fedcodec.cli, fedcodec.demo, fedcodec.toy, fedcodec.pipeline,"
        " fedcodec.server, fedcodec.client, fedcodec.client.cli\n"
        "fedcodec.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if 'bench' in m))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=PACKAGE_DIR.parent,  # not the checkout: `-c` puts the working folder on sys.path
    )
    assert out.stdout.strip() == "[]"


def test_fedcodec_bench_without_the_bench_package_says_how_to_install(tmp_path: Path):
    # Hide fedcodec_bench behind a module that fails to import, as if it were not installed.
    blocker = tmp_path / "fedcodec_bench"
    blocker.mkdir()
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError('hidden', name='fedcodec_bench')\n"
    )
    code = "import sys; from fedcodec.cli import main; sys.exit(main(['bench', 'fl', '--quick']))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "pip install ./bench" in out.stderr


def test_fedcodec_bench_dispatches_to_the_bench_package(tmp_path: Path):
    pytest.importorskip("fedcodec_bench")
    out = subprocess.run(
        [sys.executable, "-m", "fedcodec.cli", "bench", "fl", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=True,
    )
    assert out.stdout.startswith("usage: fedcodec bench fl")
