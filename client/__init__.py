"""fedcodec.client: the participant side of fedcodec.

The edge client SDK for the aggregation server (fetch round config and model,
train through a callback, encode the update with error feedback, upload with
retries) and the Flower ClientApp mod.  Installed as ``fedcodec.client`` from
the repository's ``client/`` folder; it uses the codec only through
:mod:`fedcodec.codec`.
"""
