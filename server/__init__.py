"""fedcodec.server: the aggregation side of fedcodec.

The standalone gRPC aggregation server (``fedcodec serve``) as a library::

    from fedcodec.server import create_server, load_config

    server = create_server(load_config("server.toml"))
    await server.start()

Layers (the round logic has no gRPC imports; the servicer only translates):

* :mod:`~fedcodec.server.config` — :class:`ServerConfig` from file, environment, flags;
* :mod:`~fedcodec.server.rounds` — :class:`RoundCoordinator`: selection, deadlines, durable
  intake, aggregation in canonical order;
* :mod:`~fedcodec.server.store` — the SQLite state; :mod:`~fedcodec.server.downlink` — the
  downlink stream that survives restarts;
* :mod:`~fedcodec.server.servicer` — ``fedcodec.v1.AggregationService`` (proto ↔ domain);
* :mod:`~fedcodec.server.app` — :func:`create_server`, health, metrics, TLS, shutdown;
* :mod:`~fedcodec.server.auth`, :mod:`~fedcodec.server.metrics`, :mod:`~fedcodec.server.errors`.

Installed as ``fedcodec.server`` from the repository's ``server/`` folder; it uses the codec
only through :mod:`fedcodec.pipeline`.
"""

from fedcodec.server.app import (
    BackgroundServer,
    FedcodecServer,
    create_server,
    load_initial_model,
    serve,
)
from fedcodec.server.auth import TokenRegistry, generate_token, token_digest
from fedcodec.server.config import ConfigError, ServerConfig, load_config
from fedcodec.server.errors import ServerError
from fedcodec.server.rounds import RoundCoordinator, RoundSummary

__all__ = [
    "BackgroundServer",
    "ConfigError",
    "FedcodecServer",
    "RoundCoordinator",
    "RoundSummary",
    "ServerConfig",
    "ServerError",
    "TokenRegistry",
    "create_server",
    "generate_token",
    "load_config",
    "load_initial_model",
    "serve",
    "token_digest",
]
