"""fedcodec: compression of federated-learning model updates.

A rate-distortion optimizing quantizer (DeepCABAC) and a context-adaptive
binary range coder, written in C and called through cffi.  The codec API is
re-exported here from :mod:`fedcodec.codec`; errors live in
:mod:`fedcodec.errors`.
"""

from fedcodec._version import __version__
from fedcodec.codec import (
    EncodeResult,
    TensorInfo,
    TensorStats,
    decode,
    decode_accumulate,
    decode_levels,
    dither_seed,
    dither_values,
    encode,
    encode_levels,
    inspect,
    join,
    library_version,
    reference_digest,
    split,
)
from fedcodec.errors import (
    CorruptStreamError,
    FedCodecError,
    InvalidParameterError,
    OutOfMemoryError,
    WorkerThreadError,
)

__all__ = [
    "CorruptStreamError",
    "EncodeResult",
    "FedCodecError",
    "InvalidParameterError",
    "OutOfMemoryError",
    "TensorInfo",
    "TensorStats",
    "WorkerThreadError",
    "__version__",
    "decode",
    "decode_accumulate",
    "decode_levels",
    "dither_seed",
    "dither_values",
    "encode",
    "encode_levels",
    "inspect",
    "join",
    "library_version",
    "reference_digest",
    "split",
]
