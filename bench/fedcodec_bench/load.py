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

Modes (``--mode``):

* ``steady`` (default): clients come and go, ``concurrency`` at once, rounds of ``per_round``.
* ``burst``: every client (default 2,000) checks in first, then all upload at the same
  moment.  A refusal that a resend can cure (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED "… retry later", gRPC's concurrent-call limit) is resent with the same
  idempotency key after a backoff, as the edge SDK does.  Lost updates are counted from the
  server's own record: after the run the aggregated round's statistics are read from the
  state database, and every acknowledged update must be in it.
* ``hostile``: the burst twice on fresh servers, quiet and then with one hostile (selected,
  authenticated) client that keeps ``slow_streams`` idle or dripping upload streams and
  ``garbage_uploads`` uploads of random bytes open all along; reported: the honest clients'
  p99 next to the quiet run's (must stay within 2x) and the server's peak RSS next to the
  bound ``server/README.md`` states.

Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcodec import codec
from fedcodec.server.auth import generate_token
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc
from fedcodec.v1 import round_pb2

__all__ = ["LoadBenchConfig", "run_burst_bench", "run_load_bench"]

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
    mode : {"steady", "burst", "hostile"}
        See the module docstring.
    slow_streams, garbage_uploads : int
        Hostile mode: streams the hostile client keeps open of each kind.
    repeat : int
        Burst/hostile: runs of each kind, alternating (the medians are compared).
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
    mode: str = "steady"
    slow_streams: int = 100
    garbage_uploads: int = 100
    repeat: int = 1

    def resolved(self) -> tuple[int, int, int, int]:
        """(clients, concurrency, params, per_round) after the mode's defaults."""
        if self.mode != "steady":
            clients = self.clients or (200 if self.quick else 2000)
            params = self.params or 101_770
            return clients, clients, params, clients
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
    retried: dict[str, int] = field(default_factory=dict)
    health_s: list[float] = field(default_factory=list)
    health_failures: int = 0
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


def _upload_messages(
    client_id: str, config: round_pb2.RoundConfig, payload: bytes, num_examples: int
) -> Callable[[], Any]:
    """The messages of one upload (one idempotency key for all its resends)."""
    header = pb.UploadHeader(
        client_id=client_id,
        round_id=config.round_id,
        base_version=config.base_version,
        base_digest=config.base_digest,
        idempotency_key=uuid.uuid4().hex,
        total_bytes=len(payload),
        crc32=zlib.crc32(payload),
        num_examples=num_examples,
    )

    async def requests() -> Any:
        yield pb.UploadUpdateRequest(header=header)
        for offset in range(0, len(payload), _CHUNK):
            yield pb.UploadUpdateRequest(chunk=payload[offset : offset + _CHUNK])

    return requests


def _channels(port: int, count: int) -> list[grpc.aio.Channel]:
    options = [
        ("grpc.max_send_message_length", 4 << 20),
        ("grpc.max_receive_message_length", 4 << 20),
    ]
    return [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(count)]


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
            requests = _upload_messages(client_id, answer.config, payload, 1 + index % 7)

            t0 = time.perf_counter()
            stats.first = min(stats.first, t0)
            try:
                response = await _upload_retrying(stub, requests, metadata, stats)
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


_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def _retryable(exc: grpc.aio.AioRpcError) -> bool:
    """What the edge SDK resends (``fedcodec.client.transport``)."""
    if exc.code() in _RETRYABLE:
        return True
    detail = exc.details() or ""
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        "retry later" in detail or "Concurrent RPC limit" in detail
    )


async def _upload_retrying(
    stub: Any,
    requests: Callable[[], Any],
    metadata: tuple[tuple[str, str], ...],
    stats: _Stats,
    attempts: int = 60,
) -> Any:
    """UploadUpdate, resent (same messages: same idempotency key) after retryable refusals."""
    wait = 0.05
    for attempt in range(attempts):
        try:
            return await stub.UploadUpdate(requests(), metadata=metadata, timeout=300)
        except grpc.aio.AioRpcError as exc:
            if not _retryable(exc) or attempt == attempts - 1:
                raise
            name = exc.code().name
        except asyncio.CancelledError:
            # grpc.aio surfaces a call the transport cancelled (seen under bursts on a loaded
            # machine) as a bare CancelledError instead of AioRpcError(CANCELLED); only a
            # cancellation of this task itself ends the upload.
            task = asyncio.current_task()
            if (task is not None and task.cancelling()) or attempt == attempts - 1:
                raise
            name = "CANCELLED"
        stats.retried[name] = stats.retried.get(name, 0) + 1
        await asyncio.sleep(wait * random.uniform(0.75, 1.25))
        wait = min(2 * wait, 2.0)
    raise AssertionError("unreachable")


async def _drive(
    port: int, tokens: list[str], payloads: list[bytes], concurrency: int, channels: int
) -> _Stats:
    chans = _channels(port, channels)
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
    if cfg.mode in ("burst", "hostile"):
        return run_burst_bench(cfg)
    if cfg.mode != "steady":
        raise ValueError(f"unknown load mode {cfg.mode!r}")
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
            "limits": {"max_parallel_decodes": 2},
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


# ---------------------------------------------------------------------------------------------
# Burst and hostile modes
# ---------------------------------------------------------------------------------------------

_HOSTILE = "hostile"
_GARBAGE_BYTES = 256 << 10


@dataclass
class _Server:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    state_path: Path
    log_path: Path


def _start_server(root: Path, config: dict[str, Any], name: str) -> _Server:
    (root / f"{name}.json").write_text(json.dumps(config))
    env = dict(os.environ)
    env.pop("FEDCODEC_CONFIG", None)
    log_path = root / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedcodec.cli", "serve", "--config", str(root / f"{name}.json")],
            stderr=log_file,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=root,  # `-m` puts the working folder first on sys.path
        )
    try:
        started = wait_started(proc, log_path, timeout=120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return _Server(
        proc, int(started["port"]), int(started["metrics_port"]), Path(config["state_path"]),
        log_path,
    )  # fmt: skip


def _stop_server(server: _Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@dataclass
class _BurstRun:
    stats: _Stats
    acked: int
    failed: dict[str, str]
    wall: float
    rss_idle: int
    peak: int
    aggregated: int
    hostile: dict[str, int] = field(default_factory=dict)


class _Attacker:
    """One authenticated, selected client: idle and dripping streams, garbage uploads."""

    def __init__(
        self, stub: Any, token: str, config: round_pb2.RoundConfig, cfg: LoadBenchConfig
    ) -> None:
        self.stub = stub
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.config = config
        self.cfg = cfg
        self.stop = asyncio.Event()
        self.outcomes: dict[str, int] = {}
        rng = np.random.default_rng(7)
        self.garbage = bytes(rng.integers(0, 256, _GARBAGE_BYTES, dtype=np.uint8))

    def _count(self, kind: str, code: str) -> None:
        key = f"{kind}:{code}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def _header(self, total: int, crc: int) -> pb.UploadHeader:
        return pb.UploadHeader(
            client_id=_HOSTILE,
            round_id=self.config.round_id,
            base_version=self.config.base_version,
            base_digest=self.config.base_digest,
            idempotency_key=uuid.uuid4().hex,
            total_bytes=total,
            crc32=crc,
            num_examples=1,
        )

    async def _slow(self, index: int) -> None:
        # Half send a header and the smallest chunk the server takes (4 KiB) per second, far
        # below its minimum rate; half send nothing.
        drip = index % 2 == 1
        while not self.stop.is_set():

            async def requests() -> Any:
                if drip:
                    yield pb.UploadUpdateRequest(header=self._header(1 << 20, 0))
                    while not self.stop.is_set():
                        yield pb.UploadUpdateRequest(chunk=b"x" * 4096)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), 1.0)
                else:
                    await self.stop.wait()

            try:
                await self.stub.UploadUpdate(requests(), metadata=self.metadata, timeout=600)
                self._count("slow", "OK")
            except grpc.aio.AioRpcError as exc:
                self._count("slow", exc.code().name)
            await asyncio.sleep(1.0)  # re-open a second later, as a looping client would

    async def _garbage(self) -> None:
        data = self.garbage
        while not self.stop.is_set():
            header = self._header(len(data), zlib.crc32(data))

            async def requests(h: pb.UploadHeader = header) -> Any:
                yield pb.UploadUpdateRequest(header=h)
                yield pb.UploadUpdateRequest(chunk=data)

            try:
                await self.stub.UploadUpdate(requests(), metadata=self.metadata, timeout=600)
                self._count("garbage", "OK")
            except grpc.aio.AioRpcError as exc:
                self._count("garbage", exc.code().name)
            await asyncio.sleep(1.0)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._slow(i)) for i in range(self.cfg.slow_streams)] + [
            asyncio.create_task(self._garbage()) for _ in range(self.cfg.garbage_uploads)
        ]


async def _check_in(stub: Any, client_id: str, token: str) -> round_pb2.RoundConfig:
    metadata = (("authorization", f"Bearer {token}"),)
    wait = 0.05
    while True:
        try:
            answer = await stub.GetRoundConfig(
                pb.GetRoundConfigRequest(client_id=client_id), metadata=metadata, timeout=120
            )
        except grpc.aio.AioRpcError as exc:
            if not _retryable(exc):
                raise
            await asyncio.sleep(wait)
            wait = min(2 * wait, 2.0)
            continue
        if answer.assignment != pb.ASSIGNMENT_SELECTED:
            raise RuntimeError(f"{client_id} was not selected: {answer}")
        config: round_pb2.RoundConfig = answer.config
        return config


async def _burst_drive(
    port: int,
    tokens: dict[str, str],
    payloads: list[bytes],
    channels: int,
    cfg: LoadBenchConfig,
    hostile: bool,
) -> tuple[_Stats, int, dict[str, str], dict[str, int]]:
    chans = _channels(port, channels)
    stubs = [pb_grpc.AggregationServiceStub(c) for c in chans]
    honest = [c for c in tokens if c != _HOSTILE]
    stats = _Stats()
    failed: dict[str, str] = {}
    acked = 0
    go = asyncio.Event()
    try:
        attacker: _Attacker | None = None
        if hostile:
            config = await _check_in(stubs[0], _HOSTILE, tokens[_HOSTILE])
            attacker = _Attacker(stubs[-1], tokens[_HOSTILE], config, cfg)
        gate = asyncio.Semaphore(256)

        async def checked_in(i: int, client_id: str) -> round_pb2.RoundConfig:
            async with gate:
                t0 = time.perf_counter()
                config = await _check_in(stubs[i % channels], client_id, tokens[client_id])
                stats.checkin_s.append(time.perf_counter() - t0)
                return config

        configs = await asyncio.gather(*(checked_in(i, c) for i, c in enumerate(honest)))

        async def upload(i: int, client_id: str, config: round_pb2.RoundConfig) -> None:
            nonlocal acked
            payload = payloads[i % len(payloads)]
            requests = _upload_messages(client_id, config, payload, 1 + i % 7)
            metadata = (("authorization", f"Bearer {tokens[client_id]}"),)
            await go.wait()
            t0 = time.perf_counter()
            stats.first = min(stats.first, t0)
            try:
                response = await _upload_retrying(stubs[i % channels], requests, metadata, stats)
            except grpc.aio.AioRpcError as exc:
                failed[client_id] = f"{exc.code().name}: {exc.details()}"
                return
            t1 = time.perf_counter()
            stats.last = max(stats.last, t1)
            stats.upload_s.append(t1 - t0)
            stats.bytes_up += len(payload)
            acked += 1
            if response.status == pb.UPLOAD_STATUS_ALREADY_ACCEPTED:
                stats.already += 1
            else:
                stats.accepted += 1

        tasks = [
            asyncio.create_task(upload(i, c, cfg_))
            for i, (c, cfg_) in enumerate(zip(honest, configs, strict=True))
        ]
        attack: list[asyncio.Task[None]] = []
        if attacker is not None:
            attack = attacker.start()
            await asyncio.sleep(1.0)  # the hostile streams are open before the burst
        probing = asyncio.Event()

        async def probe_health() -> None:
            # Its own connection, like a load balancer's probe: never starved by the burst.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                while not probing.is_set():
                    t0 = time.perf_counter()
                    try:
                        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                        ok = reply.status == health_pb2.HealthCheckResponse.SERVING
                    except grpc.aio.AioRpcError:
                        ok = False
                    stats.health_s.append(time.perf_counter() - t0)
                    stats.health_failures += not ok
                    await asyncio.sleep(0.2)

        prober = asyncio.create_task(probe_health())
        go.set()
        await asyncio.gather(*tasks)
        probing.set()
        await prober
        outcomes: dict[str, int] = {}
        if attacker is not None:
            attacker.stop.set()
            await asyncio.gather(*attack)
            outcomes = attacker.outcomes
            # Last, the hostile client sends a real update: the round is full and aggregates.
            data = payloads[0]
            header = attacker._header(len(data), zlib.crc32(data))

            async def final() -> Any:
                yield pb.UploadUpdateRequest(header=header)
                yield pb.UploadUpdateRequest(chunk=data)

            await _upload_retrying(stubs[0], final, attacker.metadata, stats)
            acked += 1
    finally:
        for c in chans:
            await c.close(None)
    return stats, acked, failed, outcomes


def _burst_once(
    root: Path, cfg: LoadBenchConfig, name: str, hostile: bool, payloads: list[bytes]
) -> _BurstRun:
    from fedcodec.server.store import Store

    clients = cfg.resolved()[0]
    ids = [f"sim-{i:05d}" for i in range(clients)] + ([_HOSTILE] if hostile else [])
    tokens = {c: generate_token() for c in ids}
    (root / f"{name}-tokens.json").write_text(json.dumps(tokens))
    config = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "state_path": str(root / f"{name}.sqlite"),
        "initial_model": str(root / "model.npz"),
        "log_level": "info",
        "security": {"insecure": True, "tokens_file": str(root / f"{name}-tokens.json")},
        "rounds": {
            "max_rounds": 1,
            "min_clients": len(ids),
            "target_clients": len(ids),
            "deadline_s": 3600,
        },
        "limits": {"max_parallel_decodes": 2, "codec_threads": 1, "stream_idle_timeout_s": 5.0},
    }
    server = _start_server(root, config, name)
    try:
        _, rss_idle = _peak_rss(server.proc.pid)
        wall0 = time.perf_counter()
        stats, acked, failed, outcomes = asyncio.run(
            _burst_drive(server.port, tokens, payloads, cfg.channels, cfg, hostile)
        )
        wall = time.perf_counter() - wall0
        give_up = time.monotonic() + 600
        while _scrape(server.metrics_port).get("fedcodec_rounds_total", 0.0) < 1:
            if time.monotonic() > give_up or server.proc.poll() is not None:
                break
            time.sleep(0.2)
        peak, _ = _peak_rss(server.proc.pid)
    finally:
        _stop_server(server)
    store = Store(server.state_path)
    try:
        history = store.round_history()
    finally:
        store.close()
    aggregated = sum(len((r["stats"] or {}).get("updates", [])) for r in history)
    return _BurstRun(stats, acked, failed, wall, rss_idle, peak, aggregated, outcomes)


def _burst_summary(run: _BurstRun, expected: int) -> dict[str, Any]:
    s = run.stats
    return {
        "acknowledged": run.acked,
        "aggregated": run.aggregated,
        "lost": expected - run.aggregated,
        "failed": run.failed,
        "retried": s.retried,
        "retries": sum(s.retried.values()),
        "wall_seconds": run.wall,
        "upload_latency_p50_ms": 1000 * _pct(s.upload_s, 0.5),
        "upload_latency_p99_ms": 1000 * _pct(s.upload_s, 0.99),
        "checkin_latency_p99_ms": 1000 * _pct(s.checkin_s, 0.99),
        "server_rss_idle_bytes": run.rss_idle,
        "server_peak_rss_bytes": run.peak,
        "hostile_outcomes": run.hostile,
        "health_checks": len(s.health_s),
        "health_failures": s.health_failures,
        "health_latency_p99_ms": 1000 * _pct(s.health_s, 0.99),
        "health_latency_max_ms": 1000 * max(s.health_s, default=math.nan),
    }


def run_burst_bench(cfg: LoadBenchConfig) -> int:
    """Burst (and hostile) mode; return 0, or 1 when an update was lost or a bound missed."""
    clients, _, params, _ = cfg.resolved()
    channels = max(cfg.channels, 16)
    cfg = LoadBenchConfig(**{**asdict(cfg), "channels": channels})
    with tempfile.TemporaryDirectory(prefix="fedcodec-burst-") as tmp:
        root = Path(tmp)
        model = _model(params)
        numel = sum(a.size for a in model.values())
        _savez(root / "model.npz", **model)
        payloads = _updates(model, max(cfg.density, 0.05), cfg.variants)
        update_bytes = statistics.mean(len(p) for p in payloads)
        print(
            f"fedcodec bench load --mode {cfg.mode}: {clients:,} clients check in, then all "
            f"upload at once ({channels} channels); model {numel:,} weights "
            f"({4 * numel / 1e6:.1f} MB float32), updates {update_bytes:,.0f} B",
            flush=True,
        )
        series: dict[str, list[_BurstRun]] = {"quiet": []}
        if cfg.mode == "hostile":
            series["hostile"] = []
        for r in range(cfg.repeat):
            for name in series:
                series[name].append(
                    _burst_once(root, cfg, f"{name}{r}", name == "hostile", payloads)
                )
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "mode": cfg.mode,
        "clients": clients,
        "weights": numel,
        "update_bytes_mean": update_bytes,
        "model_float32_bytes": 4 * numel,
    }
    ok = True
    for name, runs in series.items():
        expected = clients + (1 if name == "hostile" else 0)
        result[name] = []
        for run in runs:
            summary = _burst_summary(run, expected)
            result[name].append(summary)
            ok = ok and summary["lost"] == 0 and not run.failed and run.acked == expected
            ok = ok and summary["health_failures"] == 0
            print(
                f"\n[{name}] acknowledged {run.acked:,}, aggregated {run.aggregated:,} of "
                f"{expected:,} (lost {summary['lost']}); {summary['retries']:,} retried "
                f"refusals {run.stats.retried or ''}; wall {run.wall:.1f} s\n"
                f"  upload latency p50 {summary['upload_latency_p50_ms']:,.0f} ms, "
                f"p99 {summary['upload_latency_p99_ms']:,.0f} ms (check-in p99 "
                f"{summary['checkin_latency_p99_ms']:,.0f} ms)\n"
                f"  health checks during the burst: {summary['health_checks']}, "
                f"{summary['health_failures']} failed, p99 "
                f"{summary['health_latency_p99_ms']:,.0f} ms, max "
                f"{summary['health_latency_max_ms']:,.0f} ms\n"
                f"  server peak RSS {run.peak / 1e6:,.0f} MB (idle {run.rss_idle / 1e6:,.0f} MB)"
                + (f"\n  hostile client: {run.hostile}" if run.hostile else ""),
                flush=True,
            )
    if "hostile" in series:
        p99 = {
            name: statistics.median(s["upload_latency_p99_ms"] for s in result[name])
            for name in series
        }
        peaks = {name: statistics.median(r.peak for r in runs) for name, runs in series.items()}
        ratio = p99["hostile"] / max(p99["quiet"], 1e-9)
        # The stated bound (server/README.md): model x (decodes + large payloads) + about one
        # chunk per open stream.  The hostile client adds its open streams, each with at most
        # what it sends buffered, plus the per-stream cost the quiet runs measured.
        quiet = series["quiet"]
        per_stream = statistics.median(max(q.peak - q.rss_idle, 0) for q in quiet) / clients
        streams = cfg.slow_streams + cfg.garbage_uploads + 1
        allowance = 6 * 4 * numel + streams * (_GARBAGE_BYTES + per_stream)
        bound = peaks["quiet"] + allowance
        result["median_p99_ms"] = p99
        result["median_peak_rss_bytes"] = peaks
        result["hostile_p99_ratio"] = ratio
        result["hostile_rss_bound_bytes"] = bound
        within = ratio <= 2.0 and peaks["hostile"] <= bound
        ok = ok and within
        print(
            f"\nmedians of {cfg.repeat} run(s): honest p99 under attack {p99['hostile']:,.0f} ms "
            f"/ quiet {p99['quiet']:,.0f} ms = {ratio:.2f}x (must be <= 2); peak RSS "
            f"{peaks['hostile'] / 1e6:,.0f} MB vs bound {bound / 1e6:,.0f} MB (quiet peak "
            f"{peaks['quiet'] / 1e6:,.0f} MB + {streams} hostile streams x "
            f"({_GARBAGE_BYTES / 1024:.0f} KiB + {per_stream / 1024:.0f} KiB per stream) + "
            f"6 x model): {'OK' if within else 'EXCEEDED'}",
            flush=True,
        )
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON report: {cfg.json_path}")
    if not ok:
        print("fedcodec bench load: an update was lost or a bound was missed", file=sys.stderr)
    return 0 if ok else 1
