#!/usr/bin/env python3
"""Regenerate (or check) the committed gRPC/protobuf stubs in ``fedcodec/v1/``.

The ``.proto`` files in ``proto/fedcodec/v1/`` are the source of truth; the generated
modules are committed so that installing fedcodec needs no code generator.  They are made
with the pinned generators below (``pip install '.[dev]'`` installs exactly these):

* ``grpcio-tools`` — its bundled protoc writes ``*_pb2.py`` (protobuf gencode 6.31.1, so the
  runtime floor in pyproject.toml is ``protobuf>=6.31.1``) and ``*_pb2_grpc.py`` (which
  refuses a grpcio older than the pin, hence ``grpcio>=`` the same version);
* ``mypy-protobuf`` — the ``*.pyi`` stubs that mypy reads.

Usage::

    python scripts/gen_proto.py            # rewrite fedcodec/v1/
    python scripts/gen_proto.py --check    # regenerate into a temporary folder and diff;
                                           # exit 1 when the committed stubs are stale
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("fedcodec") / "v1"  # import path fedcodec.v1, as the proto package says

PINS = {"grpcio-tools": "1.80.0", "mypy-protobuf": "5.1.0"}

_INIT = '"""Generated gRPC/protobuf modules of the ``fedcodec.v1`` wire contract.\n\n' + (
    "Do not edit: regenerate with ``python scripts/gen_proto.py`` from ``proto/fedcodec/v1/``.\n"
    '"""\n'
)


def check_pins() -> None:
    """Refuse to run with other generator versions (the output would differ)."""
    wrong = []
    for name, wanted in PINS.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = "not installed"
        if have != wanted:
            wrong.append(f"{name} {have} (need {wanted})")
    if wrong:
        sys.exit(
            "gen_proto: wrong generator versions: "
            + ", ".join(wrong)
            + "; pip install "
            + " ".join(f"{n}=={v}" for n, v in PINS.items())
        )


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every .proto into ``out_root/fedcodec/v1``; return the files written."""
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit(f"gen_proto: no .proto files under {PROTO_ROOT}")
    out_dir = out_root / PACKAGE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    # mypy-protobuf's plugins sit beside this interpreter (the venv may not be on PATH).
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    done = subprocess.run(cmd, cwd=PROTO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # the plugins' chatter is shown only when something failed
        sys.exit(f"gen_proto: protoc failed:\n{done.stdout}{done.stderr}")
    (out_dir / "__init__.py").write_text(_INIT)
    return sorted(p for p in out_dir.iterdir() if p.is_file())


def check() -> int:
    """Diff freshly generated stubs with the committed ones."""
    committed_dir = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {
        p.name: p.read_text()
        for p in committed_dir.iterdir()
        if p.is_file() and (p.suffix in {".py", ".pyi"})
    }
    stale = False
    for name in sorted(set(fresh) | set(committed)):
        old, new = committed.get(name), fresh.get(name)
        if old == new:
            continue
        stale = True
        if old is None:
            print(f"missing from {PACKAGE_DIR}: {name}")
        elif new is None:
            print(f"not generated from proto/ any more: {PACKAGE_DIR / name}")
        else:
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"committed/{name}",
                    f"generated/{name}",
                )
            )
    if stale:
        print("stale stubs: run `python scripts/gen_proto.py` and commit fedcodec/v1/")
        return 1
    print(f"{PACKAGE_DIR}: {len(fresh)} generated files match proto/")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="diff instead of writing")
    args = parser.parse_args()
    check_pins()
    if args.check:
        return check()
    target = ROOT / PACKAGE_DIR
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    written = generate(ROOT)
    print("\n".join(str(p.relative_to(ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
