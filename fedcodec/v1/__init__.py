"""Generated gRPC/protobuf modules of the ``fedcodec.v1`` wire contract.

Do not edit: regenerate with ``python scripts/gen_proto.py`` from ``proto/fedcodec/v1/``.
"""
