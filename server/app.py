"""The aggregation server as a library: :func:`create_server` and :func:`serve`.

::

    server = create_server(load_config("server.toml"))   # ports are bound here
    await server.start()                                 # database opened, round restored
    ...
    await server.stop(grace=10)                          # health NOT_SERVING, calls drain

The gRPC health service (``grpc.health.v1.Health``) is always served on the main port;
``health_listen`` adds a plaintext port with only the health service, for probes that
cannot speak TLS.  ``metrics_listen`` serves Prometheus metrics over HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedcodec.logs import setup_logging
from fedcodec.models import ModelSourceError, load_model
from fedcodec.server.auth import TokenRegistry
from fedcodec.server.config import ConfigError, ServerConfig
from fedcodec.server.metrics import Metrics
from fedcodec.server.rounds import RoundCoordinator, RoundSummary
from fedcodec.server.servicer import AggregationServicer, add_to_server
from fedcodec.server.store import StoreError

__all__ = [
    "SERVICE_NAME",
    "BackgroundServer",
    "FedcodecServer",
    "create_server",
    "is_loopback",
    "load_initial_model",
    "serve",
]

log = logging.getLogger("fedcodec.server")

#: The full name of the aggregation service (also its name in the health service).
SERVICE_NAME = "fedcodec.v1.AggregationService"

_T = TypeVar("_T")


def load_initial_model(source: str) -> dict[str, npt.NDArray[np.float32]] | None:
    """Version 0 from the ``initial_model`` setting.

    Parameters
    ----------
    source : str
        "" (none), ``builtin:mnist-mlp`` (the 784-128-10 MLP of :mod:`fedcodec.toy`, seeded),
        or a path to an ``.npz`` of named float32 arrays (read without pickle; file order is
        model order).

    Returns
    -------
    dict of str to ndarray or None
    """
    try:
        return load_model(source)
    except ModelSourceError as exc:
        raise ConfigError(str(exc)) from exc


class _AsyncHealth(Protocol):
    async def set(self, service: str, status: Any) -> None: ...
    async def enter_graceful_shutdown(self) -> None: ...


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc}") from exc


def _server_options(config: ServerConfig) -> list[tuple[str, int]]:
    limits = config.limits
    return [
        # Uploads and downloads move in chunks of <= max_chunk_bytes (1 MiB), so a message
        # is one chunk plus framing.  The limit is set explicitly (not gRPC's 4 MiB
        # default, nor raised towards 2 GiB for whole models): a peer cannot make the
        # server buffer more than this per message, however large the model.
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        # Edge clients sit behind NATs and mobile networks: ping idle connections every
        # 60 s so dead ones are noticed, and let clients ping no more often than every 20 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # At most this many streams per HTTP/2 connection: a client multiplexing more
        # waits for a free stream instead of overrunning the server (under a burst of
        # thousands of calls gRPC otherwise cancels some before the servicer sees them).
        ("grpc.max_concurrent_streams", 128),
        # What gRPC buffers for a stream before the servicer reads it is its flow-control
        # window.  Bandwidth-delay probing grows that window to several MiB per stream, so
        # 128 streams of a client whose uploads are refused as busy (never read) held over
        # 300 MiB under load; a fixed 256 KiB window bounds them to 32 MiB per connection
        # and still streams ~5 MB/s per upload at 50 ms of round trip.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 256 * 1024),
    ]


def _bind_failure(address: str, key: str, reason: str | None) -> str:
    reason = reason or "the address is in use or not available"
    return f"cannot listen on {address!r} ({key}): {reason}; set {key} to a free HOST:PORT"


def _bind(
    server: grpc.aio.Server,
    address: str,
    key: str,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind ``address`` (the setting ``key``) and return the port, or raise ConfigError."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # gRPC's "Failed to bind to address ..."
        raise ConfigError(_bind_failure(address, key, None)) from exc
    if port == 0:
        raise ConfigError(_bind_failure(address, key, None))
    return port


def is_loopback(address: str) -> bool:
    """Whether a ``host:port`` address listens on loopback only."""
    host = address.rpartition(":")[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    sec = config.security
    if sec.insecure:
        return None
    key = _read(sec.tls_key, "the TLS key")
    cert = _read(sec.tls_cert, "the TLS certificate")
    client_ca = _read(sec.tls_client_ca, "the client CA") if sec.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class FedcodecServer:
    """An aggregation server: gRPC service, health, metrics, round logic, database.

    Made by :func:`create_server`; use ``await start()`` and ``await stop()`` (or
    ``async with``).

    Attributes
    ----------
    port : int
        The bound gRPC port.
    health_port : int or None
        The plaintext health-only port.
    metrics_port : int or None
        The Prometheus port (after :meth:`start`).
    coordinator : RoundCoordinator
        The round logic (e.g. for listeners in an embedding program).
    """

    def __init__(
        self,
        config: ServerConfig,
        tokens: TokenRegistry,
        initial_model: Mapping[str, npt.ArrayLike] | None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.coordinator = RoundCoordinator(
            config, initial_model=initial_model, metrics=self.metrics
        )
        # grpc-stubs does not describe grpc_health's asyncio servicer.
        self.health: _AsyncHealth = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._server = grpc.aio.server(
            options=_server_options(config),
            # 0: no gRPC-level cap (it would refuse health checks too); streams are bounded
            # by the admission limits (server/admission.py).
            maximum_concurrent_rpcs=config.limits.max_concurrent_rpcs or None,
        )
        add_to_server(AggregationServicer(self.coordinator, tokens, self.metrics), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(cast(Any, self.health), self._server)
        self.port = _bind(self._server, config.listen, "listen", _credentials(config))
        if config.security.insecure and not is_loopback(config.listen):
            log.warning(
                "plaintext gRPC (security.insecure) on a non-loopback address: client tokens "
                "and updates travel unencrypted; use TLS outside loopback tests",
                extra={"event": "insecure_non_loopback", "listen": config.listen},
            )
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if config.health_listen:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(
                cast(Any, self.health), self._health_server
            )
            self.health_port = _bind(self._health_server, config.health_listen, "health_listen")
        self.metrics_port: int | None = None
        self._started = False

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def start(self) -> None:
        """Open the state, start serving, report SERVING."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            # The metrics port first: a port in use stops the start before the state is
            # opened (a second server on one machine collides on the default 9464).
            if self.config.metrics_listen:
                try:
                    self.metrics_port = self.metrics.serve(self.config.metrics_listen)
                except OSError as exc:
                    raise ConfigError(
                        _bind_failure(self.config.metrics_listen, "metrics_listen", exc.strerror)
                    ) from exc
            if self._health_server is not None:
                await self._health_server.start()
            await self.coordinator.start()
            self._started = True
            await self._server.start()
        except BaseException:
            # Whatever started is stopped again (state closed, ports released), so a
            # failed start leaves no running gRPC server behind.
            await self._shutdown(0)
            raise
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server started",
            extra={
                "event": "server_started",
                "port": self.port,
                "tls": not self.config.security.insecure,
                "mutual_tls": bool(self.config.security.tls_client_ca),
                "health_port": self.health_port,
                "metrics_port": self.metrics_port,
                "round_id": self.coordinator.open_round_id,
            },
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let running calls finish (``grace`` seconds), close the state."""
        grace = self.config.limits.shutdown_grace_s if grace is None else grace
        await self._shutdown(grace)
        log.info("server stopped", extra={"event": "server_stopped"})

    async def _shutdown(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._started:
            await self.coordinator.stop()
        if self._health_server is not None:
            await self._health_server.stop(0)
        self.metrics.close()
        self._started = False

    async def wait_for_termination(self) -> None:
        """Return when the gRPC server has stopped."""
        await self._server.wait_for_termination()

    async def __aenter__(self) -> FedcodecServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def create_server(
    config: ServerConfig,
    *,
    tokens: TokenRegistry | Mapping[str, str] | None = None,
    initial_model: Mapping[str, npt.ArrayLike] | None = None,
) -> FedcodecServer:
    """Build an aggregation server and bind its ports (call from a coroutine).

    Parameters
    ----------
    config : ServerConfig
        The configuration (:func:`~fedcodec.server.config.load_config`).
    tokens : TokenRegistry or mapping, optional
        Client tokens; default: ``security.tokens_file``.
    initial_model : mapping of str to array_like, optional
        Version 0 for a new database; default: ``initial_model`` of the configuration.

    Returns
    -------
    FedcodecServer
        Not started yet; ``server.port`` is the bound port.

    Raises
    ------
    ConfigError
        Missing tokens, unreadable TLS files or model, a port that cannot be bound.
    """
    if tokens is None:
        if not config.security.tokens_file:
            raise ConfigError("no client tokens: set security.tokens_file")
        try:
            registry = TokenRegistry.from_file(config.security.tokens_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    elif isinstance(tokens, TokenRegistry):
        registry = tokens
    else:
        registry = TokenRegistry(tokens)
    if initial_model is None:
        initial_model = load_initial_model(config.initial_model)
    return FedcodecServer(config, registry, initial_model)


class BackgroundServer:
    """An aggregation server on its own event loop in a background thread.

    For synchronous programs that embed a server: the demo, tests, notebooks::

        with BackgroundServer(config, tokens=tokens, initial_model=model) as server:
            client = EdgeClient(f"127.0.0.1:{server.port}", ...)

    Parameters are those of :func:`create_server`, and ``start_timeout``: how long ``with``
    (:meth:`start` without an argument) waits for the server to serve.  A new federation
    codes its initial model first (a 32 MB model: ~25 s on a loaded 2-core machine).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        tokens: TokenRegistry | Mapping[str, str] | None = None,
        initial_model: Mapping[str, npt.ArrayLike] | None = None,
        listeners: Sequence[Callable[[RoundSummary], None]] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self._tokens = tokens
        self._initial_model = initial_model
        self._listeners = list(listeners)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace = 1.0
        self._server: FedcodecServer | None = None
        self._abandoned = False  # start() gave up waiting
        self._thread = threading.Thread(target=self._run, name="fedcodec-server", daemon=True)

    @property
    def server(self) -> FedcodecServer:
        """The running server."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        return self.server.port

    @property
    def coordinator(self) -> RoundCoordinator:
        """The round logic (call its coroutines through :meth:`call`)."""
        return self.server.coordinator

    def start(self, timeout: float | None = None) -> BackgroundServer:
        """Start and wait until the server is serving (startup errors are raised here).

        ``timeout`` defaults to ``start_timeout``.
        """
        timeout = self.start_timeout if timeout is None else timeout
        self._thread.start()
        if not self._ready.wait(timeout):
            # The start goes on in its thread: stop the server as soon as it is up, so it
            # does not serve (and hold its port and database) for the rest of the process.
            self._abandoned = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            raise TimeoutError(f"the server did not start within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        server = create_server(self.config, tokens=self._tokens, initial_model=self._initial_model)
        for listener in self._listeners:
            server.coordinator.add_listener(listener)
        await server.start()
        self._server = server
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self._abandoned:
            self._stop.set()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop(self._grace)

    def call(self, fn: Callable[[], Coroutine[Any, Any, _T]], timeout: float = 60.0) -> _T:
        """Run ``fn()`` (a coroutine function) on the server's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the server is not running")
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        """Stop the server (running calls get ``grace`` seconds) and join its thread."""
        self._grace = grace
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=grace + 60)
        self._server = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve(config: ServerConfig) -> None:
    # Handlers first: a SIGTERM right after "server started" stops cleanly, too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = create_server(config)
    await server.start()
    await stop.wait()
    log.info("shutting down", extra={"event": "shutdown_requested"})
    await server.stop()


def serve(config: ServerConfig) -> int:
    """Run a server until SIGTERM or SIGINT (``fedcodec serve``); return the exit status."""
    setup_logging(config.log_level, config.log_format)
    try:
        asyncio.run(_serve(config))
    except ConfigError as exc:
        log.error(str(exc), extra={"event": "config_error"})
        return 2
    except StoreError as exc:
        log.error(str(exc), extra={"event": "state_error"})
        return 2
    except OSError as exc:
        log.error(f"cannot start: {exc}", extra={"event": "startup_failed"})
        return 2
    return 0
