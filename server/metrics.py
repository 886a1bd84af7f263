"""Prometheus metrics of the aggregation server (no gRPC here).

Every server owns a :class:`Metrics` with its own registry (two servers in one process,
as in the tests, do not share counters), served over HTTP at ``/metrics`` when
``metrics_listen`` is set.

=====================================  =====================================================
metric                                 meaning
=====================================  =====================================================
``fedcodec_bytes_up_total``            payload bytes received in uploads (accepted or not)
``fedcodec_bytes_down_total``          payload bytes sent in model downloads
``fedcodec_updates_accepted_total``    updates stored (``result``: accepted, already_accepted)
``fedcodec_updates_rejected_total``    refused uploads by ``reason`` (the gRPC status name)
``fedcodec_clients``                   clients by ``state``: registered (ever selected),
                                       selected and reported (in the open round)
``fedcodec_round``                     the open round's id (0: none)
``fedcodec_model_version``             the newest global version
``fedcodec_rounds_total``              rounds aggregated
``fedcodec_round_seconds``             round duration, opening to aggregate
``fedcodec_decode_seconds``            validation (decode) time of one upload
``fedcodec_finalize_seconds``          time to aggregate a round and code the new version
``fedcodec_keyframes_total``           downloads served as keyframes
``fedcodec_held_delta_references_total`` downloads whose first delta was coded against the
                                       delta the client holds (``downlink.temporal_reference``)
``fedcodec_initial_models_sent_total`` downloads that carried the raw initial model (4 bytes
                                       per weight: a client without it asked;
                                       ``downlink.send_initial``)
``fedcodec_calls_cancelled_total``     calls that ended by cancellation (client gone, transport
                                       dropped) by ``kind``: upload, other
``fedcodec_streams``                   open streams by ``kind``: uploading, waiting (for an
                                       upload slot), downloading
``fedcodec_robust_actions_total``      robust-aggregation actions by ``action``: refused
                                       at intake (``refused_examples``, ``refused_values``,
                                       ``refused_norm``), and at aggregation ``clipped``,
                                       ``rejected_norm``, ``share_capped``
=====================================  =====================================================
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]

_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROUND_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bytes_up = Counter(
            "fedcodec_bytes_up", "Payload bytes received in uploads", registry=r
        )
        self.bytes_down = Counter(
            "fedcodec_bytes_down", "Payload bytes sent in model downloads", registry=r
        )
        self.updates_accepted = Counter(
            "fedcodec_updates_accepted",
            "Updates stored (already_accepted: an idempotent resend)",
            ["result"],
            registry=r,
        )
        self.updates_rejected = Counter(
            "fedcodec_updates_rejected", "Refused uploads by gRPC status", ["reason"], registry=r
        )
        self.clients = Gauge("fedcodec_clients", "Clients by state", ["state"], registry=r)
        self.round = Gauge("fedcodec_round", "The open round's id (0: none)", registry=r)
        self.model_version = Gauge(
            "fedcodec_model_version", "The newest global model version", registry=r
        )
        self.rounds = Counter("fedcodec_rounds", "Rounds aggregated", registry=r)
        self.round_seconds = Histogram(
            "fedcodec_round_seconds",
            "Round duration from opening to aggregate",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "fedcodec_decode_seconds",
            "Validation (decode) time of one upload",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.finalize_seconds = Histogram(
            "fedcodec_finalize_seconds",
            "Time to aggregate a round and code the new version",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.keyframes = Counter("fedcodec_keyframes", "Downloads served as keyframes", registry=r)
        self.held_delta_references = Counter(
            "fedcodec_held_delta_references",
            "Downloads whose first delta was coded against the delta the client holds",
            registry=r,
        )
        self.initial_models_sent = Counter(
            "fedcodec_initial_models_sent",
            "Downloads that carried the raw initial model (a client without it asked)",
            registry=r,
        )
        self.calls_cancelled = Counter(
            "fedcodec_calls_cancelled", "Calls ended by cancellation", ["kind"], registry=r
        )
        self.streams = Gauge("fedcodec_streams", "Open streams by kind", ["kind"], registry=r)
        self.robust_actions = Counter(
            "fedcodec_robust_actions",
            "Robust-aggregation refusals, clips and share caps",
            ["action"],
            registry=r,
        )
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def serve(self, address: str) -> int:
        """Serve ``/metrics`` over HTTP at ``host:port`` (port 0: any); return the port."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
