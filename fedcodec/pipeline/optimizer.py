"""Server optimizers on the decoded aggregate: FedAvgM, FedAdam, FedYogi, FedAdagrad.

Where it sits in a round (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
clients code ``local − R_v`` with error feedback; the server decodes and averages the
updates (the pseudo-gradient ``Δ = mean − x_v``, added to the *exact* global model
``x_v``); the optimizer turns ``Δ`` into its own step ``x_{v+1} = x_v + step(Δ)``; the
downlink codes ``x_{v+1} − R_v`` — the change the optimizer applied plus what earlier
rounds did not deliver — with server-side error feedback.  Nothing about the
optimizer travels: every node's model is the stream ``R``, bit for bit.

Why the second moment is per tensor by default.  Error feedback is exact in *sum*:
what a client's coder leaves out this round is sent in a later one, so the decoded
pseudo-gradients add up to the true ones.  An optimizer that is linear in ``Δ``
(FedAvg, FedAvgM) keeps that sum.  Adam's per-weight normalisation ``m/√v`` does not:
a weight that the uplink carries only now and then (zeroed by the quantizer or by
top-k, released later by error feedback) gets ``m/√v ≈ const`` on every release, a
step of about ``eta`` whatever the release's size, and nothing in between; weights
carried every round move every round.  A second moment per *tensor* (one ``v`` per
tensor, as in Adam-mini, Zhang et al. 2024, or layer-wise LAMB) keeps the step linear
in ``Δ`` within a tensor — error feedback's sum is kept — and still adapts the step
size between tensors of very different scales (BatchNorm, biases, conv filters, the
classifier).  ``second_moment="weight"`` gives the textbook per-weight optimizer.

Measured on the CNN benchmark (docs/bench/cnn.md, "Server optimizers").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from fedcodec.pipeline.errors import ModelMismatchError, StateFormatError
from fedcodec.pipeline.model import ModelSpec, Tensors

__all__ = ["OptimizerKind", "SecondMoment", "ServerOptimizer"]

OptimizerKind = Literal["avgm", "adam", "yogi", "adagrad"]
SecondMoment = Literal["tensor", "weight"]

_FORMAT = "fedcodec-server-optimizer/1"


class ServerOptimizer:
    """A server optimizer applied to the aggregated (decoded) update.

    Parameters
    ----------
    kind : {"avgm", "adam", "yogi", "adagrad"}
        FedAvgM (``m = beta1·m + Δ``, step ``eta·m``), FedAdam, FedYogi or FedAdagrad
        (step ``eta·m̂/(√v̂ + tau)``; Adam and Yogi with bias correction).
    eta : float, optional
        Server learning rate (default 1.0 for ``"avgm"``, 0.01 otherwise).
    beta1 : float, optional
        Momentum (default 0.9; FedAvgM's server momentum).
    beta2 : float, optional
        Second-moment decay of Adam and Yogi (default 0.99).
    tau : float, optional
        Added to ``√v̂``: the degree of adaptivity (default 1e-3).
    second_moment : {"tensor", "weight"}, optional
        One second moment per tensor (default: keeps error feedback's sum within a
        tensor, see the module docs) or per weight (the textbook optimizer).

    Notes
    -----
    Arithmetic in float64, the new model in float32.  :meth:`state` /
    :meth:`load_state` checkpoint the moments (npz-able arrays + JSON meta).
    """

    def __init__(
        self,
        kind: OptimizerKind,
        *,
        eta: float | None = None,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        second_moment: SecondMoment = "tensor",
    ) -> None:
        if kind not in ("avgm", "adam", "yogi", "adagrad"):
            raise ValueError(f"kind must be avgm, adam, yogi or adagrad, got {kind!r}")
        if second_moment not in ("tensor", "weight"):
            raise ValueError(f"second_moment must be 'tensor' or 'weight', got {second_moment!r}")
        eta = (1.0 if kind == "avgm" else 1e-2) if eta is None else eta
        for name, value, low, high in (
            ("eta", eta, 0.0, math.inf),
            ("beta1", beta1, 0.0, 1.0),
            ("beta2", beta2, 0.0, 1.0),
            ("tau", tau, 0.0, math.inf),
        ):
            if not (math.isfinite(value) and low <= value < high) or (name == "eta" and value == 0):
                raise ValueError(f"{name} must be finite and in [{low}, {high}), got {value!r}")
        self.kind: OptimizerKind = kind
        self.eta = float(eta)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)
        self.second_moment: SecondMoment = second_moment
        self.steps = 0
        self._m: dict[str, np.ndarray] = {}
        self._v: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        """The settings."""
        return (
            f"ServerOptimizer({self.kind!r}, eta={self.eta:g}, beta1={self.beta1:g}, "
            f"beta2={self.beta2:g}, tau={self.tau:g}, second_moment={self.second_moment!r})"
        )

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (for logs and benchmark output)."""
        return {
            "kind": self.kind,
            "eta": self.eta,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "tau": self.tau,
            "second_moment": self.second_moment,
        }

    def step(
        self, spec: ModelSpec, base: Mapping[str, np.ndarray], aggregate: Mapping[str, np.ndarray]
    ) -> Tensors:
        """The next global model from the current one and the round's aggregate.

        Parameters
        ----------
        spec : ModelSpec
            The model's tensors.
        base : mapping
            The exact global model ``x_v`` the round's updates were added to.
        aggregate : mapping
            ``x_v + mean decoded update`` (what FedAvg would publish).

        Returns
        -------
        dict of str to ndarray
            ``float32(x_v + step(aggregate − x_v))``.
        """
        self.steps += 1
        t = self.steps
        out: Tensors = {}
        for name, shape in zip(spec.names, spec.shapes, strict=True):
            x = np.asarray(base[name], dtype=np.float64)
            a = np.asarray(aggregate[name], dtype=np.float64)
            if x.shape != tuple(shape) or a.shape != tuple(shape):
                raise ModelMismatchError(f"{name!r}: shape {a.shape}, expected {tuple(shape)}")
            delta = a - x
            if self.kind == "avgm":
                m = self._m.get(name)
                m = delta if m is None else self.beta1 * m + delta
                self._m[name] = m
                out[name] = (x + self.eta * m).astype(np.float32)
                continue
            m = self._m.get(name, np.zeros(shape))
            m = self.beta1 * m + (1.0 - self.beta1) * delta
            self._m[name] = m
            sq = delta * delta
            if self.second_moment == "tensor":
                sq = np.asarray(float(np.mean(sq)) if sq.size else 0.0)
            v = self._v.get(name, np.zeros(sq.shape))
            if self.kind == "adam":
                v = self.beta2 * v + (1.0 - self.beta2) * sq
            elif self.kind == "yogi":
                v = v - (1.0 - self.beta2) * sq * np.sign(v - sq)
            else:  # adagrad
                v = v + sq
            self._v[name] = v
            if self.kind == "adagrad":
                m_hat, v_hat = m, v
            else:
                m_hat = m / (1.0 - self.beta1**t)
                v_hat = v / (1.0 - self.beta2**t)
            out[name] = (x + self.eta * m_hat / (np.sqrt(v_hat) + self.tau)).astype(np.float32)
        return out

    # -- state ---------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The moments as arrays (``m/<name>``, ``v/<name>``) and JSON meta."""
        arrays = {f"m/{k}": np.array(v) for k, v in self._m.items()}
        arrays.update({f"v/{k}": np.array(v) for k, v in self._v.items()})
        meta = {"format": _FORMAT, "steps": self.steps, **self.settings()}
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Restore :meth:`state`: the kind and the second moment's shape must match this
        optimizer's (``eta``, the betas and ``tau`` may have changed)."""
        if meta.get("format") != _FORMAT:
            raise StateFormatError(f"not a server optimizer state: {meta.get('format')!r}")
        ours = {k: self.settings()[k] for k in ("kind", "second_moment")}
        theirs = {k: meta.get(k) for k in ours}
        if theirs != ours:
            raise StateFormatError(f"the saved optimizer is {theirs}, this one is {ours}")
        m: dict[str, np.ndarray] = {}
        v: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            kind, _, name = key.partition("/")
            if kind not in ("m", "v") or not name:
                raise StateFormatError(f"unexpected array {key!r} in the optimizer state")
            (m if kind == "m" else v)[name] = np.array(value, dtype=np.float64)
        self.steps = int(meta["steps"])
        self._m, self._v = m, v
