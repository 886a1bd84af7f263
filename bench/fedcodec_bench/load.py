"""``fedcodec bench load``: many concurrent clients against a real server on loopback.

The server runs as a subprocess (``fedcodec serve``, its own process, so its peak memory is
its own).  Simulated clients — asyncio tasks sharing a few gRPC channels — each check in
once, and when selected upload a sparse coded update of a ~1 M-weight model in chunks,
exactly as the edge SDK does (token, header, chunks, idempotency key).  The server validates
every update with a full decode, stores it durably, and aggregates each round from the
database.  Reported: accepted updates per second, p50/p99 upload latency, check-in latency,
and the server's peak resident memory (``VmHWM``) next to the model's float32 size: the
server keeps O(model) state, so the peak must not grow with the number of clients.

Downloads are not part of the load (each simulated client uploads against the base version
its check-in names); the coded updates are made once, in a few variants, before the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedcodec import codec
from fedcodec.server.auth import generate_token
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc

__all__ = ["LoadBenchConfig", "run_load_bench"]

_CHUNK = 1 << 20
# numpy's stubs read **kwargs as its keyword options; the arrays are plain names here.
_savez: Callable[..., None] = np.savez


@dataclass
class LoadBenchConfig:
    """Settings of a load run (None: the mode's default).

    Attributes
    ----------
    quick : bool
        CI smoke run: 200 clients, 50 at once, 262,400 weights.
    clients : int or None
        Simulated clients over the run (default 1,000).
    concurrency : int or None
        Clients active at once (default 100).
    params : int or None
        Model weights (default 1,049,600: a 1024x1024 layer plus bias, rounded).
    density : float
        Nonzero fraction of every update.
    per_round : int or None
        Updates aggregated per round (default 250).
    variants : int
        Distinct pre-coded updates the clients cycle through.
    channels : int
        gRPC channels (HTTP/2 connections) the clients share.
    json_path : str or None
        Where to write the numbers.
    """

    quick: bool = False
    clients: int | None = None
    concurrency: int | None = None
    params: int | None = None
    density: float = 0.01
    per_round: int | None = None
    variants: int = 8
    channels: int = 8
    json_path: str | None = None

    def resolved(self) -> tuple[int, int, int, int]:
        """(clients, concurrency, params, per_round) after the mode's defaults."""
        clients = self.clients or (200 if self.quick else 1000)
        concurrency = self.concurrency or (50 if self.quick else 100)
        params = self.params or (262_400 if self.quick else 1_049_600)
        per_round = self.per_round or (100 if self.quick else 250)
        return clients, concurrency, params, min(per_round, clients)


@dataclass
class _Stats:
    upload_s: list[float] = field(default_factory=list)
    checkin_s: list[float] = field(default_factory=list)
    accepted: int = 0
    already: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    not_selected: int = 0
    bytes_up: int = 0
    first: float = math.inf
    last: float = 0.0


def _model(params: int) -> dict[str, np.ndarray]:
    """A ``rows x cols`` layer plus bias with about ``params`` weights."""
    cols = 1024 if params >= 2048 else max(1, params // 2)
    rows = max(1, params // (cols + 1))
    rng = np.random.default_rng(0)
    return {
        "layer.weight": (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32),
        "layer.bias": np.zeros(rows, np.float32),
    }


def _updates(model: dict[str, np.ndarray], density: float, variants: int) -> list[bytes]:
    """Sparse random deltas coded the way clients code them (λ = high-rate optimum, S = 64)."""
    out = []
    for v in range(variants):
        rng = np.random.default_rng(100 + v)
        tensors = []
        for array in model.values():
            delta = np.zeros(array.size, np.float32)
            k = max(1, int(density * array.size))
            idx = rng.choice(array.size, size=k, replace=False)
            delta[idx] = rng.laplace(0.0, 1e-3, size=k).astype(np.float32)
            tensors.append(delta.reshape(array.shape))
        out.append(codec.encode(tensors, lam=0.1155, S=64).data)
    return out


def _peak_rss(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in bytes (0 where /proc is unavailable)."""
    values = {"VmHWM": 0, "VmRSS": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values["VmHWM"], values["VmRSS"]


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fedcodec_") and " " in line:
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def wait_started(proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> dict[str, Any]:
    """Poll a server's JSON log file until its ``server_started`` event (ports in it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "server_started":
                return event
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}: " + " | ".join(lines[-5:])
            )
        time.sleep(0.05)
    raise RuntimeError("the server did not start in time")


async def _client(
    index: int,
    stub: Any,
    token: str,
    payload: bytes,
    stats: _Stats,
    gate: asyncio.Semaphore,
) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    client_id = f"sim-{index:05d}"
    async with gate:
        while True:
            t0 = time.perf_counter()
            answer = await stub.GetRoundConfig(
                pb.GetRoundConfigRequest(client_id=client_id), metadata=metadata, timeout=120
            )
            stats.checkin_s.append(time.perf_counter() - t0)
            if answer.assignment == pb.ASSIGNMENT_FINISHED:
                return
            if answer.assignment != pb.ASSIGNMENT_SELECTED:
                stats.not_selected += 1
                await asyncio.sleep(answer.retry_after.ToNanoseconds() / 1e9)
                continue
            config = answer.config
            header = pb.UploadHeader(
                client_id=client_id,
                round_id=config.round_id,
                base_version=config.base_version,
                base_digest=config.base_digest,
                idempotency_key=uuid.uuid4().hex,
                total_bytes=len(payload),
                crc32=zlib.crc32(payload),
                num_examples=1 + index % 7,
            )

            async def requests(h: pb.UploadHeader = header) -> Any:
                yield pb.UploadUpdateRequest(header=h)
                for offset in range(0, len(payload), _CHUNK):
                    yield pb.UploadUpdateRequest(chunk=payload[offset : offset + _CHUNK])

            t0 = time.perf_counter()
            stats.first = min(stats.first, t0)
            try:
                response = await stub.UploadUpdate(requests(), metadata=metadata, timeout=300)
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
                stats.refused[name] = stats.refused.get(name, 0) + 1
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    continue  # the round closed under us: check in again
                return
            t1 = time.perf_counter()
            stats.last = max(stats.last, t1)
            stats.upload_s.append(t1 - t0)
            stats.bytes_up += len(payload)
            if response.status == pb.UPLOAD_STATUS_ALREADY_ACCEPTED:
                stats.already += 1
            else:
                stats.accepted += 1
            return


async def _drive(
    port: int, tokens: list[str], payloads: list[bytes], concurrency: int, channels: int
) -> _Stats:
    options = [
        ("grpc.max_send_message_length", 4 << 20),
        ("grpc.max_receive_message_length", 4 << 20),
    ]
    chans = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(channels)
    ]
    stubs = [pb_grpc.AggregationServiceStub(c) for c in chans]
    stats = _Stats()
    gate = asyncio.Semaphore(concurrency)
    try:
        await asyncio.gather(
            *(
                _client(i, stubs[i % channels], tokens[i], payloads[i % len(payloads)], stats, gate)
                for i in range(len(tokens))
            )
        )
    finally:
        for c in chans:
            await c.close(None)
    return stats


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_load_bench(cfg: LoadBenchConfig) -> int:
    """Run the load benchmark, print the report; return 0, or 1 when updates were lost."""
    clients, concurrency, params, per_round = cfg.resolved()
    rounds = math.ceil(clients / per_round)
    with tempfile.TemporaryDirectory(prefix="fedcodec-load-") as tmp:
        root = Path(tmp)
        model = _model(params)
        numel = sum(a.size for a in model.values())
        _savez(root / "model.npz", **model)
        tokens = [generate_token() for _ in range(clients)]
        (root / "tokens.json").write_text(
            json.dumps({f"sim-{i:05d}": t for i, t in enumerate(tokens)})
        )
        config = {
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "state_path": str(root / "state.sqlite"),
            "initial_model": str(root / "model.npz"),
            "log_level": "info",
            "security": {"insecure": True, "tokens_file": str(root / "tokens.json")},
            "rounds": {
                "max_rounds": rounds,
                # The last round gets the remainder of the clients.
                "min_clients": min(per_round, clients - (rounds - 1) * per_round),
                "target_clients": per_round,
                "deadline_s": 600,
                "retry_after_s": 0.2,
            },
            "limits": {"max_concurrent_rpcs": 4 * concurrency, "max_parallel_decodes": 2},
        }
        (root / "server.json").write_text(json.dumps(config))
        print(
            f"fedcodec bench load: {clients:,} simulated clients ({concurrency} at once, "
            f"{cfg.channels} channels), model {numel:,} weights "
            f"({4 * numel / 1e6:.1f} MB float32), "
            f"updates {cfg.density:.1%} dense, {per_round} per round, {rounds} rounds",
            flush=True,
        )
        t0 = time.perf_counter()
        payloads = _updates(model, cfg.density, cfg.variants)
        print(
            f"coded {len(payloads)} update variants in {time.perf_counter() - t0:.1f} s: "
            f"{statistics.mean(len(p) for p in payloads):,.0f} B each "
            f"({4 * numel / statistics.mean(len(p) for p in payloads):,.0f}x below float32)",
            flush=True,
        )
        env = dict(os.environ)
        env.pop("FEDCODEC_CONFIG", None)
        log_path = root / "server.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fedcodec.cli",
                    "serve",
                    "--config",
                    str(root / "server.json"),
                ],
                stderr=log_file,
                stdout=subprocess.DEVNULL,
                env=env,
                cwd=root,  # `-m` puts the working folder first on sys.path
            )
        try:
            started = wait_started(proc, log_path, timeout=120)
            port, metrics_port = int(started["port"]), int(started["metrics_port"])
            _, rss_idle = _peak_rss(proc.pid)
            wall0 = time.perf_counter()
            stats = asyncio.run(_drive(port, tokens, payloads, concurrency, cfg.channels))
            wall = time.perf_counter() - wall0
            # The last round aggregates after its last upload was acknowledged: wait for it.
            give_up = time.monotonic() + 300
            metrics = _scrape(metrics_port)
            while metrics.get("fedcodec_rounds_total", 0.0) < rounds and time.monotonic() < give_up:
                time.sleep(0.2)
                metrics = _scrape(metrics_port)
            peak, _ = _peak_rss(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    span = max(stats.last - stats.first, 1e-9)
    model_bytes = 4 * numel
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "clients": clients,
        "concurrency": concurrency,
        "weights": numel,
        "rounds": rounds,
        "update_bytes_mean": statistics.mean(len(p) for p in payloads),
        "accepted": stats.accepted,
        "already_accepted": stats.already,
        "refused": stats.refused,
        "not_selected_checkins": stats.not_selected,
        "wall_seconds": wall,
        "updates_per_second": stats.accepted / span,
        "upload_latency_p50_ms": 1000 * _pct(stats.upload_s, 0.5),
        "upload_latency_p99_ms": 1000 * _pct(stats.upload_s, 0.99),
        "checkin_latency_p50_ms": 1000 * _pct(stats.checkin_s, 0.5),
        "checkin_latency_p99_ms": 1000 * _pct(stats.checkin_s, 0.99),
        "server_rss_idle_bytes": rss_idle,
        "server_peak_rss_bytes": peak,
        "model_float32_bytes": model_bytes,
        "server_rounds_aggregated": metrics.get("fedcodec_rounds_total", math.nan),
        "server_updates_accepted": metrics.get(
            'fedcodec_updates_accepted_total{result="accepted"}', math.nan
        ),
        "server_decode_seconds_mean": metrics.get("fedcodec_decode_seconds_sum", math.nan)
        / max(metrics.get("fedcodec_decode_seconds_count", 0.0), 1.0),
        "server_finalize_seconds_mean": metrics.get("fedcodec_finalize_seconds_sum", math.nan)
        / max(metrics.get("fedcodec_finalize_seconds_count", 0.0), 1.0),
    }
    growth = peak - rss_idle
    print(
        f"\naccepted {stats.accepted:,} of {clients:,} updates ({sum(stats.refused.values())} "
        f"refused: {stats.refused or 'none'}) in {wall:.1f} s; "
        f"{result['server_rounds_aggregated']:.0f} rounds aggregated\n"
        f"throughput      {result['updates_per_second']:,.1f} updates/s "
        f"({stats.bytes_up / span / 1e6:,.2f} MB/s of coded updates)\n"
        f"upload latency  p50 {result['upload_latency_p50_ms']:,.1f} ms, "
        f"p99 {result['upload_latency_p99_ms']:,.1f} ms (check-in p50 "
        f"{result['checkin_latency_p50_ms']:,.1f} ms, "
        f"p99 {result['checkin_latency_p99_ms']:,.1f} ms)\n"
        f"server decode   {1000 * result['server_decode_seconds_mean']:,.1f} ms per update; "
        f"aggregation {result['server_finalize_seconds_mean']:,.2f} s per round\n"
        f"server memory   peak RSS {peak / 1e6:,.0f} MB (idle {rss_idle / 1e6:,.0f} MB, "
        f"growth {growth / 1e6:,.0f} MB = {growth / model_bytes:,.1f}x the float32 model); "
        f"O(clients x model) would be {clients * model_bytes / 1e9:,.1f} GB",
        flush=True,
    )
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON report: {cfg.json_path}")
    lost = stats.accepted + stats.already < clients
    if lost:
        print("fedcodec bench load: not every client's update was accepted", file=sys.stderr)
    return 1 if lost else 0
