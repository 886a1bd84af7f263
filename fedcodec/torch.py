"""PyTorch helpers for the Flower plugin (the optional extra ``fedcodec[torch]``).

Only this module imports ``torch``, and only when it is imported itself; the
rest of fedcodec stays torch-free.  Three pieces, each a few lines in a
ClientApp's ``train`` function:

* :func:`state_dict_to_arrays` / :func:`load_arrays` (and the Flower forms
  :func:`to_record` / :func:`load_record`): a model's ``state_dict`` as named
  numpy arrays and back.  Floating-point tensors travel as float32 (the codec's
  type) and get their own dtype back when loaded; integer buffers such as
  BatchNorm's ``num_batches_tracked`` stay integers — the plugin never codes
  them lossily — or stay on the client (``integer_buffers="local"``).  A key
  that does not fit the model (unknown dtype, shape mismatch, missing or extra
  key) is an error naming the key.
* :class:`FisherAccumulator`: the diagonal Fisher (squared gradients summed
  over the local epoch) as the per-weight importance η of the update; with
  :class:`fedcodec.pipeline.Sensitivity` on the server it decides the
  per-tensor steps.  :meth:`FisherAccumulator.to_record` is what the app adds
  to its reply under :data:`fedcodec.flower.constants.IMPORTANCE_RECORD`.
* :class:`FilterScaling`: filter-wise scaled differential updates (Becking et
  al., "Adaptive differential filters for fast and communication-efficient
  federated learning", CVPR workshops 2022).  During local training every
  conv / linear weight is ``W = W_base + s ⊙ D``: ``D`` the differential update
  (starts at 0), ``s`` one learnable scale per output filter or row (starts
  at 1), ``W_base`` frozen.  The loss gets the regularizer
  ``penalty = l1 · Σ |s|`` (:meth:`FilterScaling.penalty`), an L1 pull on the
  scales as in network slimming: a filter whose update does not pay for
  itself in training loss is driven to ``s = 0``.  :meth:`FilterScaling.fold`
  writes ``W_base + s ⊙ D`` back into plain weights, with every filter whose
  ``|s|`` ended below ``threshold`` exactly unchanged — so whole rows of the
  update are zero, which the codec sends with one row flag each.  The scales
  are folded into the update, so they cost nothing extra on the wire.

A ClientApp's train function with all three (see ``docs/torch.md``)::

    model.load_state_dict(fedcodec.torch.load_record(model, msg.content["arrays"]))
    scaling = FilterScaling(model, l1=1e-4)          # optional
    fisher = FisherAccumulator(model)
    opt = torch.optim.SGD(scaling.parameters(), lr=0.05)
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + scaling.penalty()
        loss.backward()
        fisher.update()
        opt.step()
    scaling.fold()
    content = RecordDict({"arrays": to_record(model), "metrics": ...,
                          IMPORTANCE_RECORD: fisher.to_record()})
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.utils import parametrize

from fedcodec.pipeline.errors import ModelMismatchError

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

__all__ = [
    "CodedStatistics",
    "FilterScaling",
    "FisherAccumulator",
    "IntegerBuffers",
    "batchnorm_statistics",
    "load_arrays",
    "load_record",
    "state_dict_to_arrays",
    "to_record",
]

#: What happens to integer buffers (``num_batches_tracked``): ``"keep"`` — they travel
#: as integer arrays (never coded lossily; FedAvg averages them like any array);
#: ``"local"`` — they stay on the client (``load_arrays`` keeps the model's own values).
IntegerBuffers = Literal["keep", "local"]
_INTEGER_BUFFERS = ("keep", "local")

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def _kind(key: str, tensor: torch.Tensor) -> Literal["float", "int"]:
    if tensor.dtype in _FLOAT_DTYPES:
        return "float"
    if tensor.dtype in _INT_DTYPES:
        return "int"
    raise ModelMismatchError(
        f"state_dict[{key!r}] has dtype {tensor.dtype}, which fedcodec cannot map"
    )


def _check_mode(integer_buffers: str) -> None:
    if integer_buffers not in _INTEGER_BUFFERS:
        raise ValueError(
            f"integer_buffers must be one of {_INTEGER_BUFFERS}, got {integer_buffers!r}"
        )


def state_dict_to_arrays(
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    integer_buffers: IntegerBuffers = "keep",
) -> OrderedDict[str, np.ndarray]:
    """A model's ``state_dict`` as numpy arrays, in its order.

    Parameters
    ----------
    model : torch.nn.Module or mapping of str to Tensor
        A model (its ``state_dict()``) or a state dict.  A model with
        :class:`FilterScaling` still attached is refused (fold it first).
    integer_buffers : {"keep", "local"}, optional
        See :data:`IntegerBuffers`.

    Returns
    -------
    OrderedDict of str to ndarray
        Floating-point tensors as float32, integer buffers with their dtype.

    Raises
    ------
    ModelMismatchError
        A tensor of a dtype fedcodec cannot map (complex, quantized, …), or
        scaling parametrizations still attached.
    """
    _check_mode(integer_buffers)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, tensor in state.items():
        if ".parametrizations." in key:
            raise ModelMismatchError(
                f"state_dict[{key!r}] belongs to an attached FilterScaling; call fold() first"
            )
        kind = _kind(key, tensor)
        value = tensor.detach().cpu()
        if kind == "float":
            out[key] = value.to(torch.float32).numpy().copy()
        elif integer_buffers == "keep":
            out[key] = value.numpy().copy()
    return out


def load_arrays(
    model: nn.Module,
    arrays: Mapping[str, npt.ArrayLike],
    *,
    integer_buffers: IntegerBuffers = "keep",
) -> OrderedDict[str, torch.Tensor]:
    """The state dict of ``model`` with ``arrays`` put in (dtype and device of the model kept).

    Parameters
    ----------
    model : torch.nn.Module
        Gives every key's dtype, shape and device.
    arrays : mapping of str to array_like
        What :func:`state_dict_to_arrays` made (possibly after a trip through
        the plugin).
    integer_buffers : {"keep", "local"}, optional
        With ``"local"`` integer buffers may be missing from ``arrays``; the
        model's own values are kept.

    Returns
    -------
    OrderedDict of str to Tensor
        Pass it to ``model.load_state_dict``.

    Raises
    ------
    ModelMismatchError
        A missing or extra key, a shape mismatch, an integer buffer holding
        non-integral values, or an unmappable dtype — naming the key.
    """
    _check_mode(integer_buffers)
    reference = model.state_dict()
    extra = [k for k in arrays if k not in reference]
    if extra:
        raise ModelMismatchError(f"arrays have keys the model lacks: {extra}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in reference.items():
        kind = _kind(key, ref)
        if key not in arrays:
            if kind == "int" and integer_buffers == "local":
                out[key] = ref.clone()
                continue
            raise ModelMismatchError(f"arrays lack the model's key {key!r}")
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(ref.shape):
            raise ModelMismatchError(
                f"arrays[{key!r}] has shape {tuple(value.shape)}, the model has {tuple(ref.shape)}"
            )
        if value.dtype.kind not in "fiub":
            raise ModelMismatchError(f"arrays[{key!r}] has dtype {value.dtype}, not a real number")
        if kind == "int" and value.dtype.kind == "f":
            if not np.all(np.isfinite(value)):
                raise ModelMismatchError(
                    f"arrays[{key!r}] is an integer buffer with non-finite values"
                )
            value = np.rint(value)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor.to(dtype=ref.dtype, device=ref.device)
    return out


def to_record(
    model: nn.Module | Mapping[str, torch.Tensor], *, integer_buffers: IntegerBuffers = "keep"
) -> ArrayRecord:
    """The model as a Flower ``ArrayRecord`` (see :func:`state_dict_to_arrays`)."""
    from flwr.app import Array, ArrayRecord

    arrays = state_dict_to_arrays(model, integer_buffers=integer_buffers)
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def load_record(
    model: nn.Module, record: ArrayRecord, *, integer_buffers: IntegerBuffers = "keep"
) -> OrderedDict[str, torch.Tensor]:
    """:func:`load_arrays` for a Flower ``ArrayRecord`` (plain numpy arrays)."""
    return load_arrays(
        model, {k: a.numpy() for k, a in record.items()}, integer_buffers=integer_buffers
    )


# -- normalization statistics of the received model ---------------------------


def batchnorm_statistics(
    model: nn.Module,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]],
    *,
    max_batches: int | None = None,
) -> OrderedDict[str, torch.Tensor]:
    """The BatchNorm statistics of ``model`` as it is now, measured on ``batches``.

    Call it on the model the server sent, before local training, and load
    the result back after training (``model.load_state_dict(stats,
    strict=False)``) so that the statistics the client returns describe the
    weights the server holds, not the client's locally trained ones.  With
    sparse updates the server's weights move a little each round while every
    client's local weights move far; statistics measured on the local
    weights then do not fit the global model, and with many normalization
    layers in series the mismatch compounds (docs/bench/cnn.md, "Unseen
    architecture: mobile").

    Every ``_BatchNorm`` module that tracks running statistics is reset and
    re-estimated as the cumulative average over the batches (``momentum=None``),
    in training mode and without gradients; afterwards the model's own
    buffers, momenta and training flag are restored, so the call changes
    nothing in ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The model (weights as received).
    batches : iterable of Tensor or tuple of Tensor
        Input batches; of a tuple or list (e.g. ``(x, y)`` from a
        ``DataLoader``) the first element is the input.
    max_batches : int, optional
        Stop after this many batches.

    Returns
    -------
    OrderedDict of str to Tensor
        ``running_mean`` and ``running_var`` of every such module by
        ``state_dict`` key; empty when the model has none.

    Raises
    ------
    ValueError
        ``max_batches`` below 1, or no batch was given while the model has
        normalization layers.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches!r}")
    norms = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.track_running_stats
        and isinstance(module.running_mean, torch.Tensor)
        and isinstance(module.running_var, torch.Tensor)
    ]
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    if not norms:
        return out
    saved = [
        (module, module.momentum, {k: v.clone() for k, v in module.state_dict().items()})
        for _, module in norms
    ]
    was_training = model.training
    try:
        for _, module in norms:
            module.reset_running_stats()
            module.momentum = None
        model.train()
        seen = 0
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and seen >= max_batches:
                    break
                model(batch[0] if isinstance(batch, tuple | list) else batch)
                seen += 1
        if seen == 0:
            raise ValueError("batchnorm_statistics needs at least one batch")
        for name, module in norms:
            prefix = f"{name}." if name else ""
            out[prefix + "running_mean"] = module.running_mean.detach().clone()  # type: ignore[union-attr]
            out[prefix + "running_var"] = module.running_var.detach().clone()  # type: ignore[union-attr]
    finally:
        for module, momentum, state in saved:
            module.momentum = momentum
            module.load_state_dict(state)
        model.train(was_training)
    return out


Batches = Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]]


class CodedStatistics:
    """BatchNorm statistics of the model the server will build, for ``make_fedcodec_mod``.

    ``make_fedcodec_mod(statistics=CodedStatistics(Net, batches))``: after local
    training the mod codes the update, then calls this object with the *coded*
    model (the received model plus the update as the server decodes it); it
    loads those arrays into a fresh ``model()``, measures the BatchNorm
    statistics on the node's data (:func:`batchnorm_statistics`) and the mod
    codes the update again with them.  So the statistics the server averages
    describe the weights it averages.  Without it a sparse or coarse update
    moves the server's weights a little while the statistics come from the
    client's locally trained weights: on a MobileNet-style CNN with thirteen
    BatchNorm layers that mismatch cost 8 of the 20 points lost at RD top-0.5 %
    (docs/bench/cnn.md, "Statistics of the coded model").  The cost is one
    forward pass over the batches per round (no gradients) and a second encode.

    Parameters
    ----------
    model : callable
        Builds the app's model (e.g. the class ``Net``); its ``state_dict``
        must hold every coded array (integer buffers may stay local).
    batches : callable
        ``batches(context)`` gives the node's input batches (the Flower
        ``Context``: e.g. its ``node_config["partition-id"]``; ``None`` when
        called without one, as the edge SDK does).  Of a tuple or list the
        first element is the input.
    max_batches : int, optional
        Measure on at most this many batches.

    Examples
    --------
    >>> mod = make_fedcodec_mod(  # doctest: +SKIP
    ...     statistics=CodedStatistics(Net, lambda ctx: train_loader(ctx), max_batches=20)
    ... )
    """

    def __init__(
        self,
        model: Callable[[], nn.Module],
        batches: Callable[[Any], Batches],
        *,
        max_batches: int | None = None,
    ) -> None:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches!r}")
        self.model = model
        self.batches = batches
        self.max_batches = max_batches

    def __call__(
        self, arrays: Mapping[str, npt.ArrayLike], context: Any = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The statistics of ``arrays`` as a model, by key (float32)."""
        net = self.model()
        net.load_state_dict(load_arrays(net, arrays, integer_buffers="local"))
        stats = batchnorm_statistics(net, self.batches(context), max_batches=self.max_batches)
        return {
            key: value.detach().cpu().to(torch.float32).numpy()
            for key, value in stats.items()
            if key in arrays
        }


# -- filter-wise scaled differential updates -----------------------------------


def _original(module: nn.Module) -> torch.Tensor:
    """The frozen base weight behind a parametrized ``weight``."""
    original = module.parametrizations.weight.original  # type: ignore[union-attr]
    assert isinstance(original, torch.Tensor)
    return original


class _ScaledDelta(nn.Module):
    """Parametrization ``W = W_base + s ⊙ D`` with ``s`` per output filter / row."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros_like(weight))
        self.scale = nn.Parameter(
            torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
        )
        self._view = (weight.shape[0],) + (1,) * (weight.dim() - 1)

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        return base + self.scale.view(self._view) * self.delta


class FilterScaling:
    """Filter-wise scaled differential updates for local training (see the module docs).

    Parameters
    ----------
    model : torch.nn.Module
        Holds the global model's weights when this is created; the weights of
        its ``Conv*d`` and ``Linear`` layers become frozen bases with a
        trainable update ``D`` and per-filter scales ``s``.
    l1 : float, optional
        Weight of the regularizer ``l1 · Σ|s|`` (default 1e-4).
    threshold : float, optional
        At :meth:`fold`, filters with ``|s| < threshold`` keep their base
        weights exactly (default 0.05).
    layers : tuple of type, optional
        Module types to scale (default: ``nn.Conv1d/2d/3d`` and ``nn.Linear``).

    Notes
    -----
    Build the optimizer from :meth:`parameters` *after* creating this (the
    frozen bases are left out; biases and normalization layers train as
    usual).  Until :meth:`fold` the model's ``state_dict`` has the
    parametrization's keys, which :func:`state_dict_to_arrays` refuses.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        l1: float = 1e-4,
        threshold: float = 0.05,
        layers: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear),
    ) -> None:
        if not (math.isfinite(l1) and l1 >= 0):
            raise ValueError(f"l1 must be finite and >= 0, got {l1!r}")
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be finite and >= 0, got {threshold!r}")
        self.model = model
        self.l1 = l1
        self.threshold = threshold
        self._scaled: dict[str, tuple[nn.Module, _ScaledDelta]] = {}
        self._orders: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, layers) or not isinstance(weight, nn.Parameter):
                continue
            if weight.dim() < 2:
                continue
            param = _ScaledDelta(weight.detach())
            self._orders[name] = list(module._parameters)
            parametrize.register_parametrization(module, "weight", param)
            _original(module).requires_grad_(False)
            self._scaled[f"{name}.weight" if name else "weight"] = (module, param)
            self._names[f"{name}.weight" if name else "weight"] = name
        self.folded = False

    @property
    def keys(self) -> list[str]:
        """The state-dict keys of the scaled weights."""
        return list(self._scaled)

    def parameters(self) -> Iterator[nn.Parameter]:
        """What the optimizer trains: updates, scales and every unscaled parameter."""
        for param in self.model.parameters():
            if param.requires_grad:
                yield param

    def penalty(self) -> torch.Tensor:
        """The regularizer ``l1 · Σ_layers Σ_filters |s|``, to add to the loss."""
        total = torch.zeros(())
        for _, param in self._scaled.values():
            total = total + param.scale.abs().sum()
        return self.l1 * total

    def scales(self) -> dict[str, npt.NDArray[np.float32]]:
        """The current scales per weight key (a copy)."""
        return {
            k: p.scale.detach().cpu().to(torch.float32).numpy().copy()
            for k, (_, p) in self._scaled.items()
        }

    def update_grads(self) -> dict[str, torch.Tensor]:
        """Gradients of the scaled updates ``D`` per weight key (after ``backward``)."""
        return {k: p.delta.grad for k, (_, p) in self._scaled.items() if p.delta.grad is not None}

    def fold(self) -> dict[str, float]:
        """Write ``W_base + s ⊙ D`` into plain weights; detach the scaling.

        Filters with ``|s| < threshold`` keep their base weights exactly.

        Returns
        -------
        dict of str to float
            Per weight key, the fraction of filters whose update vanished.
        """
        if self.folded:
            raise RuntimeError("FilterScaling.fold() was already called")
        vanished: dict[str, float] = {}
        with torch.no_grad():
            for key, (module, param) in self._scaled.items():
                base = _original(module).detach().clone()
                keep = (param.scale.abs() >= self.threshold).to(base.dtype)
                scale = (param.scale * keep).view(param._view)
                folded = base + scale * param.delta
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                weight = module.weight
                assert isinstance(weight, torch.Tensor)
                weight.copy_(folded)
                weight.requires_grad_(True)
                # Re-registering moved ``weight`` last; restore the state_dict order.
                params = module._parameters
                order = self._orders[self._names[key]]
                module._parameters = {k: params[k] for k in order if k in params}
                vanished[key] = float(1.0 - keep.mean().item())
        self.folded = True
        return vanished


# -- importance ----------------------------------------------------------------


class FisherAccumulator:
    """Diagonal Fisher of the local epoch: squared gradients, summed per step.

    Call :meth:`update` after every ``loss.backward()``.  Weights scaled by a
    :class:`FilterScaling` (pass it as ``scaling``) use the gradient of their
    scaled update ``D`` — the sensitivity of the loss to what is sent.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained.
    scaling : FilterScaling, optional
        Its filter scaling, if any.
    """

    def __init__(self, model: nn.Module, scaling: FilterScaling | None = None) -> None:
        self.model = model
        self.scaling = scaling
        self._sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def _grads(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in self.model.named_parameters():
            if ".parametrizations." in name:
                continue
            if param.grad is not None:
                yield name, param.grad
        if self.scaling is not None and not self.scaling.folded:
            yield from self.scaling.update_grads().items()

    def update(self) -> None:
        """Add the current gradients' squares."""
        with torch.no_grad():
            for name, grad in self._grads():
                sq = grad.detach().to(torch.float32).square()
                if name in self._sums:
                    self._sums[name] += sq
                else:
                    self._sums[name] = sq.clone()
        self.steps += 1

    def importance(self, floor: float = 0.01) -> dict[str, npt.NDArray[np.float32]]:
        """η per parameter key: the mean squared gradient plus ``floor`` × its model mean.

        The floor keeps weights that saw no gradient codable (the codec needs
        a positive importance sum per tensor).
        """
        if not self._sums:
            raise RuntimeError("FisherAccumulator.update() was never called")
        means = {k: (v / max(self.steps, 1)).cpu().numpy() for k, v in self._sums.items()}
        total = sum(float(m.sum(dtype=np.float64)) for m in means.values())
        count = sum(m.size for m in means.values())
        base = floor * (total / count if count and total > 0 else 1.0)
        return {k: (m + base).astype(np.float32) for k, m in means.items()}

    def to_record(self, floor: float = 0.01) -> ArrayRecord:
        """:meth:`importance` as a Flower ``ArrayRecord`` (for ``IMPORTANCE_RECORD``)."""
        from flwr.app import Array, ArrayRecord

        return ArrayRecord({k: Array(v) for k, v in self.importance(floor).items()})
