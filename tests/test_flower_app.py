"""End to end: the example Flower App (examples/flower-app) through ``flwr run``.

* Simulation: a self-started ``flower-superlink --simulation`` (Ray), the app run
  once with the plugin and once without; each run must end ``finished:completed``
  as ``flwr ls --format json`` reports it (``flwr run`` exits 0 even for a failed
  run), and the plugin's final accuracy must be within 1 point of the plain run's.
* Deployment on loopback: a SuperLink and two SuperNodes (insecure), the same two
  runs, and the SuperLink's own network-traffic counters must show the reduction.

Every process is started in its own session and its whole process group is
killed afterwards (the simulation's Ray processes live in the SuperLink's group).
Logs go to files under the test's tmp_path and are printed when a test fails.
The module is skipped only without flwr; with flwr but without Ray or mlxtend the
tests fail and say what to install (CI installs them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

pytest.importorskip("flwr", reason="the Flower tests need flwr (pip install 'fedcodec[flower]')")

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower-app"
BIN = Path(sys.executable).parent
#: The coding the tests run (the example's run config names).
CODING = "lambda=0.5 S=0"
#: Simulation rounds: at round 5 accuracy still climbs 1-3 points a round and the coded and
#: float32 runs cross (compact containers' one-byte steps: 88.0 vs 89.2 % at round 5, 90.0 vs
#: 90.2 % at round 10), so the within-a-point check reads round 10.
SIM_ROUNDS = 10
DEPLOY_ROUNDS = 2
RUN_TIMEOUT = 900.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _require(*modules: str) -> None:
    """Fail early, and say what to install, when flwr is there but the rest is not."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"{missing} not installed: pip install 'fedcodec[flower,flower-simulation,data]'"
        )


class _Federation:
    """A SuperLink (and SuperNodes) of one test, with its own FLWR_HOME; killed on exit."""

    def __init__(self, root: Path, *, simulation: bool, supernodes: int = 0) -> None:
        self.root = root
        self.simulation = simulation
        self.supernodes = supernodes
        self.port = _free_port()
        self.app = root / "app"
        shutil.copytree(EXAMPLE, self.app, ignore=shutil.ignore_patterns("__pycache__", "*.fab"))
        home = root / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "test"\n\n'
            f'[superlink.test]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.env = dict(os.environ)
        self.env.update(
            FLWR_HOME=str(home),
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> _Federation:
        try:
            self._start()
        except BaseException:
            self._print_logs()
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._print_logs()
        self.close()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        self.procs.append((name, proc, log))

    def _start(self) -> None:
        args = [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        self._spawn("superlink", [*args, "--simulation"] if self.simulation else args)
        deadline = time.monotonic() + 120
        while not _listening(self.port):
            if self.procs[0][1].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the SuperLink did not listen on port {self.port}")
            time.sleep(0.5)
        for i in range(self.supernodes):
            self._spawn(
                f"supernode{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{self.port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(_free_port()),
                    "--node-config",
                    f"partition-id={i} num-partitions={self.supernodes}",
                ],
            )

    def flwr(self, *args: str, timeout: float = 180.0) -> str:
        """Run the ``flwr`` CLI against this SuperLink; its stdout."""
        done = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"flwr {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def submit(self, run_config: str) -> int:
        """Start the example app; its run id."""
        out = json.loads(
            self.flwr("run", str(self.app), "test", "--format", "json", "--run-config", run_config)
        )
        assert out.get("success") is True, out
        return int(out["run-id"])

    def wait(self, run_id: int, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """Poll ``flwr ls`` until the run finished; its JSON entry."""
        deadline = time.monotonic() + timeout
        while True:
            listing = json.loads(
                self.flwr("ls", "test", "--run-id", str(run_id), "--format", "json")
            )
            (run,) = listing["runs"]
            if str(run["status"]).startswith("finished"):
                return dict(run)
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout:.0f} s")
            for name, proc, _ in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode} during the run")
            time.sleep(3.0)

    def completed(self, run_id: int) -> dict[str, Any]:
        """Wait for the run and require ``finished:completed`` (the run's log otherwise)."""
        run = self.wait(run_id)
        if run["status"] != "finished:completed":
            log = self.flwr("log", str(run_id), "test", "--show", timeout=120)
            raise AssertionError(f"run {run_id} ended {run['status']}:\n{log}")
        return run

    def _print_logs(self) -> None:
        for name, _, log in self.procs:
            text = log.read_text(errors="replace") if log.exists() else ""
            tail = "\n".join(text.splitlines()[-200:])
            print(f"----- {name} ({log}) -----\n{tail}")

    def close(self) -> None:
        """Stop every process group started here: TERM, then KILL after a grace period."""
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc, _ in self.procs:
            # The group may outlive its leader (Ray, superexec children).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _run_pair(fed: _Federation, tmp_path: Path, settings: str) -> dict[bool, dict[str, Any]]:
    """The app with and without fedcodec: run entry and results JSON per setting."""
    out: dict[bool, dict[str, Any]] = {}
    for enabled in (True, False):
        result = tmp_path / f"result-{'on' if enabled else 'off'}.json"
        run_id = fed.submit(
            f"{settings} {CODING} fedcodec={str(enabled).lower()} results-json='{result}'"
        )
        run = fed.completed(run_id)
        out[enabled] = {"run": run, "result": json.loads(result.read_text())}
    return out


def test_simulation_accuracy_with_fedcodec_stays_within_a_point(tmp_path: Path) -> None:
    """Simulation: both runs complete; accuracy within 1 point; the plugin's byte reduction;
    the example's temporal options (uplink and downlink references) save bytes."""
    _require("ray", "mlxtend")
    # Execute
    with _Federation(tmp_path, simulation=True) as fed:
        runs = _run_pair(fed, tmp_path, f"num-server-rounds={SIM_ROUNDS}")
        temporal = tmp_path / "result-temporal.json"
        fed.completed(
            fed.submit(
                f"num-server-rounds={SIM_ROUNDS} {CODING} temporal-reference=true "
                f"downlink-reference=true results-json='{temporal}'"
            )
        )
        with_refs = json.loads(temporal.read_text())
    # Assert
    on, off = runs[True]["result"], runs[False]["result"]
    print(json.dumps({"on": on, "off": off}, indent=2))
    assert on["fedcodec"] is True
    assert off["fedcodec"] is False
    assert off["accuracy"] > 80.0
    assert abs(on["accuracy"] - off["accuracy"]) <= 1.0
    traffic = on["traffic"]
    assert traffic["rejected"] == 0
    assert traffic["ratio_up"] > 20
    assert traffic["ratio_down"] > 5
    assert abs(with_refs["accuracy"] - off["accuracy"]) <= 1.0
    assert with_refs["traffic"]["rejected"] == 0
    assert with_refs["traffic"]["bytes_up"] < traffic["bytes_up"]


def test_deployment_superlink_counts_fewer_bytes_with_fedcodec(tmp_path: Path) -> None:
    """Loopback deployment (SuperLink + 2 SuperNodes): the SuperLink's own counters drop."""
    _require("mlxtend")
    # Execute
    with _Federation(tmp_path, simulation=False, supernodes=2) as fed:
        runs = _run_pair(fed, tmp_path, f"num-server-rounds={DEPLOY_ROUNDS} fraction-evaluate=0.0")
    # Assert
    on, off = runs[True], runs[False]
    net_on, net_off = on["run"]["network-traffic"], off["run"]["network-traffic"]
    print(json.dumps({"on": net_on, "off": net_off, "traffic": on["result"]["traffic"]}, indent=2))
    traffic = on["result"]["traffic"]
    # The SuperLink counts whole messages: our coded arrays plus metadata and configs.
    assert net_on["inbound-bytes"] >= traffic["bytes_up"]
    assert net_off["inbound-bytes"] >= traffic["raw_bytes_up"]
    assert net_on["inbound-bytes"] * 10 < net_off["inbound-bytes"]
    assert net_on["outbound-bytes"] * 2 < net_off["outbound-bytes"]
    # Two rounds are too few to compare accuracies to a point (the simulation test does, over
    # five); both models must have learned, though.
    assert min(on["result"]["accuracy"], off["result"]["accuracy"]) > 70.0
