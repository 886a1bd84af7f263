"""The wire contract: committed stubs match proto/, and the proto follows its conventions."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FileDescriptor

from fedcodec.v1 import aggregation_service_pb2, round_pb2

REPO = Path(__file__).resolve().parent.parent
FILES: list[FileDescriptor] = [aggregation_service_pb2.DESCRIPTOR, round_pb2.DESCRIPTOR]


def test_committed_stubs_match_a_fresh_generation() -> None:
    """scripts/gen_proto.py --check regenerates into a temporary folder and diffs."""
    script = REPO / "scripts" / "gen_proto.py"
    if not script.exists():
        pytest.skip("needs the repository (scripts/gen_proto.py)")
    try:
        importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("grpcio-tools is not installed (pip install '.[dev]')")
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_when_a_proto_changed_without_regenerating(tmp_path: Path) -> None:
    script = REPO / "scripts" / "gen_proto.py"
    if not script.exists():
        pytest.skip("needs the repository (scripts/gen_proto.py)")
    pytest.importorskip("grpc_tools")
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "proto", copy / "proto")
    shutil.copytree(REPO / "fedcodec" / "v1", copy / "fedcodec" / "v1")
    (copy / "scripts").mkdir()
    shutil.copy(script, copy / "scripts" / "gen_proto.py")
    proto = copy / "proto" / "fedcodec" / "v1" / "round.proto"
    proto.write_text(
        proto.read_text().replace("uint64 round_id = 1;", "uint64 round_id = 1;\n  bool x = 99;")
    )
    result = subprocess.run(
        [sys.executable, str(copy / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "stale stubs" in result.stdout


def test_the_package_is_versioned_and_matches_its_directory() -> None:
    for f in FILES:
        assert f.package == "fedcodec.v1"
        assert f.name.startswith("fedcodec/v1/")
        assert (REPO / "proto" / f.name).exists() or not (REPO / "proto").exists()


def test_enum_zero_values_are_unspecified_and_prefixed() -> None:
    enums = [e for f in FILES for e in f.enum_types_by_name.values()]
    assert enums
    for enum in enums:
        prefix = "".join("_" + c if c.isupper() else c for c in enum.name).lstrip("_").upper()
        assert enum.values_by_number[0].name == f"{prefix}_UNSPECIFIED"
        assert all(v.name.startswith(prefix + "_") for v in enum.values)


def test_every_rpc_has_its_own_request_and_response() -> None:
    service = aggregation_service_pb2.DESCRIPTOR.services_by_name["AggregationService"]
    seen = set()
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
        seen |= {method.input_type.name, method.output_type.name}
    assert len(seen) == 2 * len(service.methods)
