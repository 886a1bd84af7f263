"""Small numpy models for ``fedcodec bench fl``: the MLP of :mod:`fedcodec.toy` and a character
model.

Plain numpy, hand-written backward passes, minibatch SGD on softmax cross-entropy. Weight
matrices have output units as rows (``w: (out, in)``), so an update's rows are output units.
No torch is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcodec.toy import MLP, Params, SGDModel, softmax_xent_grad

__all__ = ["MLP", "CharMLP", "Model", "Params", "softmax_xent_grad"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


#: What the FL harness needs from a model: fresh parameters, local SGD, accuracy, a line
#: for reports (:class:`fedcodec.toy.SGDModel`).
Model = SGDModel


@dataclass(frozen=True)
class CharMLP(SGDModel):
    """Next-character model: embed each of ``context`` characters, concatenate, one ReLU
    hidden layer, softmax over the vocabulary.

    Parameters: ``emb (vocab, embed)``, ``w1 (hidden, context*embed)``, ``b1``,
    ``w2 (vocab, hidden)``, ``b2``.
    """

    vocab: int
    context: int
    embed: int = 8
    hidden: int = 256

    def describe(self) -> str:
        n = (
            self.vocab * self.embed
            + self.hidden * (self.context * self.embed + 1)
            + self.vocab * (self.hidden + 1)
        )
        return (
            f"char model: {self.context} chars x embedding {self.embed} -> {self.hidden} ReLU -> "
            f"{self.vocab} classes ({n:,} weights)"
        )

    def init(self, rng: np.random.Generator) -> Params:
        fan_in = self.context * self.embed
        return {
            "emb": (rng.standard_normal((self.vocab, self.embed)) * 0.5).astype(np.float32),
            "w1": (rng.standard_normal((self.hidden, fan_in)) * math.sqrt(2.0 / fan_in)).astype(
                np.float32
            ),
            "b1": np.zeros(self.hidden, np.float32),
            "w2": (
                rng.standard_normal((self.vocab, self.hidden)) * math.sqrt(1.0 / self.hidden)
            ).astype(np.float32),
            "b2": np.zeros(self.vocab, np.float32),
        }

    def _forward(self, p: Params, x: I64) -> tuple[F32, F32, F32, F32]:
        e = p["emb"][x].reshape(len(x), -1)
        z = e @ p["w1"].T + p["b1"]
        h = np.maximum(z, 0.0)
        return e, z, h, h @ p["w2"].T + p["b2"]

    def inputs(self, x: npt.NDArray[np.generic]) -> I64:
        return np.asarray(x, dtype=np.int64)

    def gradients(self, p: Params, x: npt.NDArray[np.generic], y: I64) -> Params:
        xb = np.asarray(x, dtype=np.int64)
        e, z, h, out = self._forward(p, xb)
        g = softmax_xent_grad(out, y).astype(np.float32)
        gz = (g @ p["w2"]) * (z > 0)
        ge = (gz @ p["w1"]).reshape(len(xb), self.context, self.embed)
        gemb = np.zeros_like(p["emb"])
        np.add.at(gemb, xb, ge)
        return {
            "w2": g.T @ h,
            "b2": g.sum(axis=0),
            "w1": gz.T @ e,
            "b1": gz.sum(axis=0),
            "emb": gemb,
        }

    def accuracy(self, params: Params, x: npt.NDArray[np.generic], y: I64) -> float:
        xi = np.asarray(x, dtype=np.int64)
        correct = 0
        for s in range(0, len(y), 4096):
            out = self._forward(params, xi[s : s + 4096])[3]
            correct += int(np.sum(np.argmax(out, axis=1) == y[s : s + 4096]))
        return 100.0 * correct / max(len(y), 1)


def numel(params: Params | Sequence[F32]) -> int:
    """Number of weights."""
    values = params.values() if isinstance(params, dict) else params
    return int(sum(v.size for v in values))
