"""fedcodec.server: the aggregation side of fedcodec.

The standalone gRPC aggregation server (``fedcodec serve``), its round logic
(deadlines, FedAvg weighting, streaming decode-and-accumulate, durable state)
and the Flower strategy wrapper.  Installed as ``fedcodec.server`` from the
repository's ``server/`` folder; it uses the codec only through
:mod:`fedcodec.codec`.
"""
