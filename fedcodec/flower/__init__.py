"""Flower plugin: fedcodec-coded model traffic on Flower's Message API.

Two halves, paired like Flower's ``DifferentialPrivacyClientSideFixedClipping``
and ``fixedclipping_mod``:

* :class:`CompressionStrategy` (ServerApp) wraps any strategy: it sends each
  node the coded change of the global model since the version the node holds
  (a keyframe otherwise) together with the round's λ/S or byte budget, and
  decodes the coded updates into plain arrays before the inner strategy
  aggregates them;
* :func:`fedcodec_mod` / :func:`make_fedcodec_mod` (ClientApp) rebuilds the
  model for the app and codes the app's reply as the engine's container as it
  is (inline ``bytes`` in a ``ConfigRecord`` when small, else ONE
  ``Array(stype="fedcodec/v3", data=container)``), with error feedback, keeping
  its state in ``context.state``.

The wire contract (``fedcodec/v4``, :mod:`fedcodec.flower.constants`) adds a few
short config keys to each message (about 50 bytes: the format and downlink
kind in one value, the version, a 16-byte digest; the round only when the inner
strategy's config lacks Flower's ``server-round``), the record layout and the coding parameters
only at first contact or when they change, and nothing to a reply besides the
coded update; an inline update carries the app's metrics in its own record
(one Flower record less per reply), restored exactly before the inner strategy
sees them.

Temporal reference (opt-in, ``CompressionStrategy(..., temporal_reference=True)``): each
node codes its update against its previous one (the same levels, fewer bytes), which the
server keeps per node (at most ``reference_nodes``, 4 bytes per weight each).  When a node
may hold another one (first contact, a reply the server did not decode, an evicted
reference) its train message names the server's
(:data:`~fedcodec.flower.constants.KEY_REFERENCE`, 8 bytes) and the node codes without
unless it holds that one, so no update is refused for it.  The mod needs no setting
(``make_fedcodec_mod(temporal_reference=False)`` declines).

Both halves drive the round engine (:mod:`fedcodec.pipeline.engine`): the same
download rule, update checks and error feedback as the gRPC server and the edge
SDK.  By default the first global model is a shared initial model: give the mod
the same arrays (``make_fedcodec_mod(initial_model=...)``) and it never travels.
The plain :data:`fedcodec_mod` works too: its node answers its first message with
an error naming :data:`~fedcodec.flower.constants.ERROR_NO_INITIAL` (that round is
lost for it), and the strategy sends it the initial model once in its next message
(4 bytes per weight per node, one warning per node;
``CompressionStrategy(send_initial=False)`` refuses instead).

Reproducible comparisons: Flower's strategies sample nodes with Python's
``random`` module (unseeded); call ``random.seed(...)`` in the ServerApp before
``strategy.start`` (in simulation also fix the node ids / partitions), and the
plugin's own choices (dither seeds, downlink packages) follow from the round,
the node id and the parameters alone.

Only this package imports ``flwr`` (install ``fedcodec[flower]``).

Examples
--------
ServerApp::

    from flwr.serverapp.strategy import FedAvg
    from fedcodec.flower import CompressionStrategy
    from fedcodec.pipeline import RoundParams

    strategy = CompressionStrategy(FedAvg(), schedule=RoundParams(lam=0.5, S=0))
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=5)

    # or a named coding of both links, as measured (docs/torch.md, "Which preset"); "robust"
    # needs no Fisher importance from the ClientApp
    strategy = CompressionStrategy(FedAvg(), preset="robust")

ClientApp::

    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod, message_size_mod
    from fedcodec.flower import fedcodec_mod

    app = ClientApp(mods=[message_size_mod, fedcodec_mod])          # sizes as sent
    # with client-side DP clipping: clip the plain update, then code it
    app = ClientApp(mods=[fedcodec_mod, fixedclipping_mod])
"""

from fedcodec.flower.constants import (
    KEY_BASE_DIGEST,
    KEY_BASE_VERSION,
    KEY_DOWNLINK,
    KEY_FORMAT,
    KEY_PARAMS,
    STYPE,
)
from fedcodec.flower.mod import fedcodec_mod, make_fedcodec_mod
from fedcodec.flower.strategy import CompressionStrategy, Traffic

__all__ = [
    "KEY_BASE_DIGEST",
    "KEY_BASE_VERSION",
    "KEY_DOWNLINK",
    "KEY_FORMAT",
    "KEY_PARAMS",
    "STYPE",
    "CompressionStrategy",
    "Traffic",
    "fedcodec_mod",
    "make_fedcodec_mod",
]
