"""Every fedcodec command line in deployments/ is accepted by the real CLI, and every server
configuration there loads.

Command lines are taken from the files themselves: the Dockerfile's exec-form ENTRYPOINT,
CMD and HEALTHCHECK, compose's ``command:`` lists and Kubernetes' ``args:`` lists (both run
on the image, whose entrypoint is ``fedcodec``), systemd's ``ExecStart=``, and the lines of
the README's code blocks that start with ``fedcodec``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fedcodec.cli import build_parser
from fedcodec.server import load_config

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments"

pytestmark = pytest.mark.skipif(not DEPLOYMENTS.is_dir(), reason="needs the repository")


def _flow_lists(text: str, key: str) -> list[list[str]]:
    """YAML flow sequences of double-quoted strings after ``key:`` (they are JSON)."""
    return [json.loads(m) for m in re.findall(rf"^\s*{key}:\s*(\[.*\])\s*$", text, re.M)]


def _dockerfile() -> tuple[list[str], list[list[str]]]:
    text = (DEPLOYMENTS / "container" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    health = json.loads(re.search(r"^HEALTHCHECK\s.*?CMD\s+(\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    return entrypoint, [entrypoint + cmd, health]


def command_lines() -> dict[str, list[list[str]]]:
    """Every fedcodec command line in deployments/, by file."""
    entrypoint, docker = _dockerfile()
    assert entrypoint == ["fedcodec"]
    found: dict[str, list[list[str]]] = {"container/Dockerfile": docker}
    compose = (DEPLOYMENTS / "compose" / "compose.yaml").read_text()
    found["compose/compose.yaml"] = [entrypoint + c for c in _flow_lists(compose, "command")]
    k8s = (DEPLOYMENTS / "k8s" / "statefulset.yaml").read_text()
    found["k8s/statefulset.yaml"] = [entrypoint + a for a in _flow_lists(k8s, "args")]
    unit = (DEPLOYMENTS / "systemd" / "fedcodec-server.service").read_text()
    found["systemd/fedcodec-server.service"] = [
        shlex.split(m) for m in re.findall(r"^ExecStart=(.*)$", unit, re.M)
    ]
    readme = (DEPLOYMENTS / "README.md").read_text()
    found["README.md"] = [
        shlex.split(line.split("#")[0])
        for line in re.findall(r"`(fedcodec [^`]*)`", readme)
        if "<" not in line and "..." not in line
    ]
    return found


def _argv(line: list[str]) -> list[str]:
    assert Path(line[0]).name == "fedcodec", line
    return line[1:]


@pytest.mark.parametrize("where", sorted(command_lines()) if DEPLOYMENTS.is_dir() else [])
def test_every_command_line_is_accepted_by_the_cli(where: str) -> None:
    lines = command_lines()[where]
    assert lines, f"no fedcodec command line found in {where}"
    parser = build_parser()
    for line in lines:
        try:
            args = parser.parse_args(_argv(line))
        except SystemExit as exc:  # argparse reports errors by exiting
            pytest.fail(f"{where}: {shlex.join(line)!r} is rejected by the CLI ({exc})")
        assert callable(args.func)


def test_the_expected_commands_are_there() -> None:
    lines = [shlex.join(line) for found in command_lines().values() for line in found]
    assert sum("fedcodec serve --config" in line for line in lines) >= 4
    assert sum(" client " in f" {line} " and "--health" not in line for line in lines) == 3
    assert any("--health" in line for line in lines)


def _toml_block(path: Path, key: str) -> str:
    """The literal block ``key: |`` of a YAML file, unindented."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}: |")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    block = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    return "\n".join(block) + "\n"


def test_every_server_configuration_loads(tmp_path: Path) -> None:
    files = [DEPLOYMENTS / "compose" / "server.toml", DEPLOYMENTS / "systemd" / "server.toml"]
    k8s = tmp_path / "k8s-server.toml"
    k8s.write_text(_toml_block(DEPLOYMENTS / "k8s" / "configmap.yaml", "server.toml"))
    for path in [*files, k8s]:
        config = load_config(path, env={})
        assert not config.security.insecure, path
        assert config.security.tokens_file, path
        assert config.state_path.startswith("/var/lib/fedcodec/"), path


def test_the_probes_and_the_healthcheck_ask_the_configured_health_port() -> None:
    statefulset = (DEPLOYMENTS / "k8s" / "statefulset.yaml").read_text()
    configmap = (DEPLOYMENTS / "k8s" / "configmap.yaml").read_text()
    assert 'health_listen = "0.0.0.0:8081"' in configmap
    assert statefulset.count("grpc:\n              port: 8081") == 3
    compose_config = (DEPLOYMENTS / "compose" / "server.toml").read_text()
    assert 'health_listen = "127.0.0.1:8081"' in compose_config
    _, docker = _dockerfile()
    assert "127.0.0.1:8081" in docker[1]


def test_no_secrets_are_committed() -> None:
    for path in DEPLOYMENTS.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "BEGIN PRIVATE KEY" not in text, path
            assert "BEGIN CERTIFICATE" not in text, path


def _quickstart() -> str:
    """The bash block of the README's "On one machine first" section."""
    readme = (DEPLOYMENTS / "README.md").read_text()
    section = readme.split("## On one machine first", 1)[1]
    return section.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n"


@pytest.mark.slow
def test_the_loopback_quickstart_runs_as_written(tmp_path: Path) -> None:
    """A newcomer's first server: the README's commands, only the port made free."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = _quickstart()
    assert script.count("127.0.0.1:50051") == 3
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # Its own process group: whatever the block leaves running (a server whose clients
    # failed is never killed by it) is stopped here, not left holding the port.
    proc = subprocess.Popen(
        ["bash", "-c", script.replace("127.0.0.1:50051", f"127.0.0.1:{port}")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the quickstart did not end in 300 s; its output:\n{out[-2000:]}{err[-6000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert result.returncode == 0, (result.returncode, result.stdout[-2000:], result.stderr[-6000:])
    assert result.stderr.count("round aggregated") == 3, result.stderr[-4000:]
    assert result.stderr.count("client finished") == 2
    assert "server stopped" in result.stderr
    assert (tmp_path / "phone-0" / "model.npz").exists()
