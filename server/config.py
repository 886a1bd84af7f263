"""Server configuration: one path from defaults, a file, the environment and flags.

:func:`load_config` is the only way a :class:`ServerConfig` is built from outside values.
Sources, later ones winning:

1. the defaults below;
2. a TOML (``.toml``) or JSON (``.json``) file;
3. environment variables ``FEDCODEC_<KEY>``, with the dotted key upper-cased and dots as
   underscores: ``FEDCODEC_ROUNDS_MIN_CLIENTS=3``, ``FEDCODEC_SECURITY_INSECURE=true``,
   ``FEDCODEC_PARAMS_BUDGET_BYTES=20000``;
4. overrides from the command line (``fedcodec serve --set rounds.target_clients=20``, and
   the flags that name keys directly).

Every key is known in advance (:data:`KEYS`): an unknown key in any source is an error, so a
typo does not silently leave a default in place.  An example file::

    listen = "[::]:50051"
    state_path = "/var/lib/fedcodec/state.sqlite"
    initial_model = "/etc/fedcodec/initial-model.npz"   # or "builtin:mnist-mlp"
    metrics_listen = "0.0.0.0:9464"
    # preset = "balanced"     # a measured coding of both links (fedcodec.pipeline.get_preset);
    #                         # then leave [params], [schedule], [downlink.params] unset

    [security]
    tls_cert = "/etc/fedcodec/tls/tls.crt"
    tls_key = "/etc/fedcodec/tls/tls.key"
    tokens_file = "/etc/fedcodec/tokens/tokens.json"

    [rounds]
    max_rounds = 100
    min_clients = 5
    target_clients = 20
    deadline_s = 300
    # client_references = 100   # temporal references of up to 100 clients (4 B/weight each)

    [downlink]
    # temporal_reference = true  # version deltas coded against the previous one (4 B/weight)
    # send_initial = false       # refuse clients without the initial model (default: send it)

    [params]                  # how clients code their updates (fedcodec.pipeline.RoundParams)
    budget_bytes = 20000
    quantizer = "uniform"     # or "trellis", "trellis8", "dither" (seed per round and client)
    # sensitivity = true      # BatchNorm statistics/biases handled as what they are
    # [params.sparsification]
    # topk = 0.02
    # allocation = "rd"       # per-tensor RD allocation of the kept values ("rd-rows": by row)

    [robust]                  # fedcodec.pipeline.RobustPolicy (defaults shown)
    max_num_examples = 1000000000   # larger counts are refused (INVALID_ARGUMENT)
    max_share = 0.25                # no client holds more of a round (1: plain FedAvg)
    norm_bound = 0.0                # absolute L2 bound of a decoded update (0: none)
    norm_bound_rel = 10.0           # x the round's median norm (0: none)
    norm_action = "clip"            # or "reject"
    max_abs_value = 1e6             # larger decoded values are refused
    aggregator = "mean"             # or "trimmed_mean", "median" (memory k x model)
    trim_fraction = 0.1

    [schedule]                # optional: vary one parameter over rounds
    kind = "cosine"
    name = "budget_bytes"
    start = 40000
    end = 10000
    rounds = 50
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcodec.pipeline import (
    PRESET_NAMES,
    ConstantSchedule,
    CosineSchedule,
    RobustPolicy,
    RoundParams,
    Schedule,
    Sensitivity,
    ServerOptimizer,
    Sparsification,
    StepSchedule,
    as_schedule,
    get_preset,
)
from fedcodec.pipeline.downlink import DEFAULT_KEYFRAME_BITS
from fedcodec.pipeline.ratecontrol import StepSnapPolicy, step_snap_policy

__all__ = [
    "ENV_PREFIX",
    "KEYS",
    "ConfigError",
    "DownlinkConfig",
    "LimitsConfig",
    "RoundsConfig",
    "ScheduleConfig",
    "SecurityConfig",
    "ServerConfig",
    "load_config",
]

ENV_PREFIX = "FEDCODEC_"
MIB = 1 << 20
#: Largest update the SQLite state can hold in one row (SQLite's default blob limit is
#: 10**9 bytes; a little is kept for the row's other fields).
MAX_STORED_BYTES = 999_000_000


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class SecurityConfig:
    """Transport security and client authentication.

    Attributes
    ----------
    insecure : bool
        Serve plaintext gRPC.  Only when asked for explicitly (loopback demos, tests);
        otherwise ``tls_cert`` and ``tls_key`` are required.
    tls_cert, tls_key : str
        PEM files of the server certificate (chain) and its private key.
    tls_client_ca : str
        PEM file of a CA: when set, clients must present a certificate it signed (mutual
        TLS) in addition to their token.
    tokens_file : str
        JSON file mapping client ids to their bearer tokens (or ``"sha256:<hex>"`` of a
        token).  Every client call carries its token.
    """

    insecure: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tokens_file: str = ""


@dataclass(frozen=True)
class RoundsConfig:
    """How rounds run.

    Attributes
    ----------
    max_rounds : int
        Rounds to run (0: no limit); afterwards clients are told the federation finished.
    min_clients : int
        Updates a round needs at its deadline to be aggregated; with fewer, the deadline is
        extended and selection reopens (accepted updates are kept).
    target_clients : int
        Clients selected per round; the round closes as soon as this many have reported.
    deadline_s : float
        Seconds from a round's opening (or extension) to its deadline.
    selection_probability : float
        Chance that a checking-in client is selected while the round has room (client
        sampling: the first clients to ask are not always the ones chosen).
    retry_after_s : float
        What clients that were not selected are told to wait.
    seed : int
        Seed of the sampling.
    server_lr : float
        Server learning rate on the FedAvg mean (1: plain FedAvg).
    optimizer : {"none", "avgm", "adam", "yogi", "adagrad"}
        Server optimizer on the aggregate (:class:`~fedcodec.pipeline.ServerOptimizer`:
        FedAvgM, FedAdam, FedYogi, FedAdagrad); its moments are saved with the state.
    optimizer_eta : float
        Its learning rate (0: 1.0 for avgm, 0.01 otherwise).
    optimizer_beta1, optimizer_beta2, optimizer_tau : float
        Momentum, second-moment decay, adaptivity.
    optimizer_second_moment : {"tensor", "weight"}
        One second moment per tensor (keeps error feedback's sum) or per weight.
    client_references : int
        Temporal references: keep the last decoded update of at most this many clients
        (least recently stored forgotten first) and tell clients in the round config that
        they may code their update against their previous one (0: off).  Memory: one
        float32 model per kept client (``client_references x 4 x weights`` bytes), and in
        the state database the same deflated (written with each round), so a restart
        keeps them; a client whose reference the server lacks (forgotten, or a database
        from before they were saved) has its reference-coded update refused and resends
        it without reference.
    """

    max_rounds: int = 0
    min_clients: int = 1
    target_clients: int = 10
    deadline_s: float = 600.0
    selection_probability: float = 1.0
    retry_after_s: float = 2.0
    seed: int = 0
    server_lr: float = 1.0
    optimizer: str = "none"
    optimizer_eta: float = 0.0
    optimizer_beta1: float = 0.9
    optimizer_beta2: float = 0.99
    optimizer_tau: float = 1e-3
    optimizer_second_moment: str = "tensor"
    client_references: int = 0

    def server_optimizer(self) -> ServerOptimizer | None:
        """The configured server optimizer (None: plain FedAvg with ``server_lr``).

        Raises
        ------
        ValueError
            A setting out of range (the message names it).
        """
        if self.optimizer == "none":
            return None
        return ServerOptimizer(
            self.optimizer,  # type: ignore[arg-type]
            eta=self.optimizer_eta or None,
            beta1=self.optimizer_beta1,
            beta2=self.optimizer_beta2,
            tau=self.optimizer_tau,
            second_moment=self.optimizer_second_moment,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ScheduleConfig:
    """Per-round variation of one uplink parameter (``fedcodec.pipeline`` schedules).

    Attributes
    ----------
    kind : {"constant", "step", "cosine"}
        Constant: ``[params]`` every round.  Step: multiply ``name`` by ``gamma`` every
        ``every`` rounds.  Cosine: move ``name`` from ``start`` to ``end`` over ``rounds``.
    name : {"lam", "S", "step", "budget_bytes"}
        The parameter that varies.
    gamma : float
        Step factor.
    every : int
        Rounds per step.
    start, end : float
        Cosine end points.
    rounds : int
        Cosine length.
    """

    kind: str = "constant"
    name: str = "lam"
    gamma: float = 1.0
    every: int = 1
    start: float = 0.0
    end: float = 0.0
    rounds: int = 1


@dataclass(frozen=True)
class DownlinkConfig:
    """The coded downlink (``fedcodec.pipeline.DownlinkEncoder``).

    Attributes
    ----------
    keep_versions : int
        Versions a client may lag behind and still get coded deltas (else a keyframe).
    keyframe_bits : int
        Resolution of the downlink grid (keyframes are near-lossless at this many bits).
    shared_initial : bool
        Every client holds the initial model (built from the same seed or shipped with the
        app), so it never travels and a client's first download is a delta (default);
        false: a keyframe stream, where a client's first download is a keyframe.
    send_initial : bool
        Send the initial model (4 bytes per weight) once to a client that lacks it and asks
        (default: an edge client without it works out of the box; the server logs a warning
        per client it sends it to).  False: such a client is refused with
        FAILED_PRECONDITION naming ``initial_digest``.  A client that holds it never asks.
    step_snap : str
        ``grid``: version steps snap to any multiple of the grid; ``pow2``:
        to power-of-two multiples, so catch-up deltas are far smaller (the demo: 111x
        instead of 71x total traffic at a 1 % budget) but a fixed coarse step may get
        up to 2x coarser (it suits byte budgets); ``auto`` (default, as the Flower
        strategy's): ``pow2`` for versions coded with sparsification and for dense ones
        while a client the stream served lags behind it (partial participation: its
        catch-up sums them), ``grid`` for dense versions every client follows one by one
        (docs/catchup.md: the default dense coding's downlink −4.4 % on the toy MLP with 10
        of 50 clients a round, −31 % on the benchmark CNNs with 6 of 30 through the Flower
        plugin, which codes the same bytes; the same accuracy).
    params : RoundParams
        How each new version is coded (``[downlink.params]``).
    temporal_reference : bool
        Code each version delta also against the previous version's delta (the same
        levels, the smaller coding per tensor) and send that coding to clients that hold
        the previous delta (edge SDK clients say so in their download request; older
        clients always get deltas without reference).  Memory: one float32 model (the
        latest decoded delta) plus up to ``keep_versions + 1`` extra coded deltas, in
        memory and in the state database.  Default false.
    """

    keep_versions: int = 32
    keyframe_bits: int = DEFAULT_KEYFRAME_BITS
    shared_initial: bool = True
    send_initial: bool = True
    step_snap: str = "auto"
    params: RoundParams = field(default_factory=RoundParams)
    temporal_reference: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """Sizes, concurrency and timing.

    Attributes
    ----------
    max_update_bytes : int
        Largest coded update accepted (0: twice the float32 model plus 1 MiB, more than
        any sensible update; at most 999,000,000, what one SQLite row holds).  Larger
        uploads fail with RESOURCE_EXHAUSTED as soon as the header declares, or the stream
        exceeds, the limit.
    max_chunk_bytes : int
        Largest upload chunk accepted, and the download chunk size (<= 1 MiB).
    max_message_bytes : int
        gRPC message limit both ways: one chunk plus its framing, never a whole model.
    max_concurrent_rpcs : int
        gRPC's own cap on calls at once (0: none).  Calls over it are refused at once
        with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded" (not queued; the edge SDK
        retries them) — the health service included, so the default leaves it off and
        bounds streams with the admission limits below instead.
    max_upload_streams : int
        Uploads receiving at once; at most one per client (a client's second upload is
        refused with RESOURCE_EXHAUSTED "… retry later" while its first runs).
    max_waiting_uploads : int
        Uploads that may wait (first come, first served) for one of the
        ``max_upload_streams`` slots; more are refused at once.
    admission_wait_s : float
        Longest wait for an upload slot before the upload is refused (retryable).
    max_large_payloads : int
        Received payloads larger than one chunk held in memory at once (they are
        spooled to a temporary file while they arrive).
    max_download_streams, downloads_per_client : int
        Downloads at once, in all and per client (more: refused, retryable).
    stream_idle_timeout_s : float
        Longest silence within an upload (before its header, between chunks) or a
        download (the client not reading); then the stream ends with DEADLINE_EXCEEDED.
    min_stream_bytes_per_s : int
        Slowest accepted transfer: a stream may last ``stream_idle_timeout_s +
        bytes / min_stream_bytes_per_s`` seconds in all (slow-drip streams end then).
    max_parallel_decodes : int
        Uploads validated (decoded) at once: bounds memory to O(model).
    codec_threads : int
        Codec threads per decode/encode (0: all CPUs).
    keep_model_blobs : int
        Newest exact global versions whose weights stay in the database (older ones keep
        their digests only).
    shutdown_grace_s : float
        Seconds running calls get to finish on shutdown.
    """

    max_update_bytes: int = 0
    max_chunk_bytes: int = MIB
    max_message_bytes: int = 4 * MIB
    max_concurrent_rpcs: int = 0
    max_upload_streams: int = 256
    max_waiting_uploads: int = 1024
    admission_wait_s: float = 5.0
    max_large_payloads: int = 4
    max_download_streams: int = 256
    downloads_per_client: int = 2
    stream_idle_timeout_s: float = 30.0
    min_stream_bytes_per_s: int = 16384
    max_parallel_decodes: int = 2
    codec_threads: int = 0
    keep_model_blobs: int = 4
    shutdown_grace_s: float = 10.0

    def update_limit(self, float32_bytes: int) -> int:
        """The effective ``max_update_bytes`` for a model of ``float32_bytes``."""
        return self.max_update_bytes or min(2 * float32_bytes + MIB, MAX_STORED_BYTES)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``fedcodec serve`` needs.

    Attributes
    ----------
    listen : str
        gRPC address (``host:port``; port 0 lets the OS choose).
    health_listen : str
        Optional plaintext address serving only the gRPC health service, for probes that
        cannot speak TLS (Kubernetes gRPC probes); empty: off.  The health service is
        always on at ``listen`` too.
    metrics_listen : str
        Prometheus endpoint (``host:port``, HTTP ``/metrics``); empty: off.
    state_path : str
        SQLite database of the durable state (created on first start).
    initial_model : str
        Version 0 on first start: an ``.npz`` of named float32 arrays (no pickle), or
        ``builtin:mnist-mlp``.  Ignored once the database holds a model.
    log_level : str
        debug, info, warning or error.
    log_format : {"json", "text"}
        One JSON object per line, or plain text.
    new_federation : bool
        When ``state_path`` is unusable (empty, truncated, corrupt, not a fedcodec
        database), move it aside and start a new federation.  Without it the server
        refuses to start (a valid database is always resumed).
    preset : str
        A named coding of both links (:func:`fedcodec.pipeline.get_preset`:
        ``near-lossless``, ``dense``, ``robust``, ``balanced``, ``lean-full``,
        ``lean-partial``):
        the uplink schedule, the downlink's and ``downlink.step_snap`` come from it, so
        ``[params]``, ``[schedule]``, ``[downlink.params]`` and ``downlink.step_snap``
        must be left unset.  Empty (default): those sections.
    """

    listen: str = "[::]:50051"
    health_listen: str = ""
    metrics_listen: str = "127.0.0.1:9464"
    state_path: str = "fedcodec-state.sqlite"
    initial_model: str = ""
    log_level: str = "info"
    log_format: str = "json"
    new_federation: bool = False
    preset: str = ""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    params: RoundParams = field(default_factory=RoundParams)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    robust: RobustPolicy = field(default_factory=RobustPolicy)

    def __post_init__(self) -> None:
        _validate(self)

    def build_schedule(self) -> Schedule:
        """The uplink schedule: the preset's, or ``[params]`` varied as ``[schedule]`` says."""
        if self.preset:
            return as_schedule(get_preset(self.preset).uplink)
        s = self.schedule
        if s.kind == "constant":
            return ConstantSchedule(self.params)
        if s.kind == "step":
            return StepSchedule(self.params, s.name, s.gamma, s.every)
        return CosineSchedule(self.params, s.name, s.start, s.end, s.rounds)

    def build_downlink(self) -> RoundParams | Schedule:
        """The downlink coding: the preset's schedule, or ``[downlink.params]`` every round."""
        if self.preset:
            return get_preset(self.preset).downlink
        return self.downlink.params

    def step_snap(self) -> StepSnapPolicy:
        """The downlink's step snapping: the preset's, or ``downlink.step_snap``."""
        if self.preset:
            return get_preset(self.preset).step_snap
        return step_snap_policy(self.downlink.step_snap)

    def to_json(self) -> dict[str, Any]:
        """All settings as a JSON-able dict (dotted keys), e.g. for ``--print-config``.

        With a preset, the keys it sets are left out (it sets them; loading both is an
        error).
        """
        return {
            key: _get(self, key)
            for key in KEYS
            if not (self.preset and key.startswith(_PRESET_SETS))
        }


# ---------------------------------------------------------------------------
# The key table: every accepted dotted key and its type.
# ---------------------------------------------------------------------------

_PARAM_KEYS: dict[str, type] = {
    "lam": float,
    "S": int,
    "step": float,
    "budget_bytes": int,
    "tolerance": float,
    "step_rule": str,
    "quantizer": str,
    "dither_salt": int,
    # On: fedcodec.pipeline.Sensitivity() (normalization statistics at their own fine step,
    # importance-derived steps per tensor, 1-d tensors never sparsified).
    "sensitivity": bool,
    "sparsification.topk": float,
    "sparsification.threshold": float,
    "sparsification.rows": float,
    "sparsification.allocation": str,
}
_OPTIONAL_PARAMS = {"step", "budget_bytes"} | {k for k in _PARAM_KEYS if "." in k}


def _section_keys(prefix: str, cls: type) -> dict[str, type]:
    out: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        if f.name == "params":
            continue
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type))
        if kind is not None:
            out[prefix + f.name] = kind
    return out


#: Every configuration key (dotted) and its type.
KEYS: dict[str, type] = {
    **_section_keys("", ServerConfig),
    **_section_keys("security.", SecurityConfig),
    **_section_keys("rounds.", RoundsConfig),
    **{f"params.{k}": t for k, t in _PARAM_KEYS.items()},
    **_section_keys("schedule.", ScheduleConfig),
    **_section_keys("downlink.", DownlinkConfig),
    **{f"downlink.params.{k}": t for k, t in _PARAM_KEYS.items()},
    **_section_keys("limits.", LimitsConfig),
    **_section_keys("robust.", RobustPolicy),
}
_ENV_NAMES = {ENV_PREFIX + key.upper().replace(".", "_"): key for key in KEYS}


def _get(config: ServerConfig, key: str) -> Any:
    parts = key.split(".")
    obj: Any = config
    for part in parts:
        if isinstance(obj, RoundParams) and part == "sparsification":
            obj = obj.sparsification or Sparsification()
            continue
        if isinstance(obj, RoundParams) and part == "sensitivity":
            return obj.sensitivity is not None
        obj = getattr(obj, part)
    return obj


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = KEYS[key]
    if value is None and key.split("params.", 1)[-1] in _OPTIONAL_PARAMS:
        return None  # an optional coding parameter left unset (as --print-config shows it)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        try:
            return kind(text) if kind is float else int(text, 0)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
    return value


def _flatten(data: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, key + ".", source))
        elif key in KEYS:
            out[key] = _coerce(key, value, source)
        else:
            raise ConfigError(f"{source}: unknown setting {key!r}")
    return out


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc}") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"{str(path)!r}: a config file is .toml or .json")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{str(path)!r} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold an object of settings")
    return data


def _params(values: Mapping[str, Any], prefix: str, base: RoundParams) -> RoundParams:
    data = base.to_json()
    sparse = dict(data.pop("sparsification", {}))
    for key in _PARAM_KEYS:
        full = prefix + key
        if full not in values:
            continue
        value = values[full]
        if key.startswith("sparsification."):
            sparse[key.split(".", 1)[1]] = value
        elif key == "sensitivity":
            data.pop("sensitivity", None)
            if value:
                data["sensitivity"] = Sensitivity().to_json()
        else:
            data[key] = value
    for key in _OPTIONAL_PARAMS:
        # 0 (or an empty value) switches an optional parameter off.
        if key in data and not data[key]:
            del data[key]
    sparse = {k: v for k, v in sparse.items() if v}
    if set(sparse) <= {"allocation"}:
        sparse = {}  # an allocation rule alone sparsifies nothing
    if sparse:
        data["sparsification"] = sparse
    try:
        return RoundParams.from_json(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[{prefix.rstrip('.')}]: {exc}") from exc


def _section(cls: type[Any], values: Mapping[str, Any], prefix: str, **extra: Any) -> Any:
    kwargs = {
        f.name: values[prefix + f.name]
        for f in dataclasses.fields(cls)
        if prefix + f.name in values
    }
    return cls(**kwargs, **extra)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Build the configuration from a file, the environment and overrides.

    Parameters
    ----------
    path : path-like, optional
        A ``.toml`` or ``.json`` file.
    env : mapping, optional
        Environment variables (default ``os.environ``).  ``FEDCODEC_*`` names of
        configuration keys are read; an unknown name with a section prefix
        (``FEDCODEC_ROUNDS_...``) is an error, other ``FEDCODEC_*`` names are not ours.
    overrides : mapping, optional
        Dotted keys to values (strings are converted like environment values).

    Returns
    -------
    ServerConfig

    Raises
    ------
    ConfigError
        An unreadable file, an unknown key, a wrong type or an invalid combination.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_flatten(_read_file(Path(path)), "", str(path)))
    environ = os.environ if env is None else env
    for name, raw in environ.items():
        key = _ENV_NAMES.get(name)
        if key is not None:
            values[key] = _coerce(key, raw, name)
        elif name.startswith(_SECTION_ENV_PREFIXES):
            # A section's prefix with an unknown key: a typo, not another tool's variable.
            raise ConfigError(f"unknown environment setting {name}")
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, value, "command line")
    if values.get("preset"):
        clash = sorted(k for k in values if k.startswith(_PRESET_SETS))
        if clash:
            raise ConfigError(
                f"preset = {values['preset']!r} sets the uplink and downlink coding: "
                f"leave {', '.join(clash)} unset (or drop the preset)"
            )
    try:
        return ServerConfig(
            **{f: values[f] for f in _section_keys("", ServerConfig) if f in values},
            security=_section(SecurityConfig, values, "security."),
            rounds=_section(RoundsConfig, values, "rounds."),
            params=_params(values, "params.", RoundParams()),
            schedule=_section(ScheduleConfig, values, "schedule."),
            downlink=_section(
                DownlinkConfig,
                values,
                "downlink.",
                params=_params(values, "downlink.params.", RoundParams()),
            ),
            limits=_section(LimitsConfig, values, "limits."),
            robust=_section(RobustPolicy, values, "robust."),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


#: Keys a preset sets (prefixes): they may not be given with ``preset``.
_PRESET_SETS = ("params.", "schedule.", "downlink.params.", "downlink.step_snap")

_SECTION_ENV_PREFIXES = tuple(
    f"{ENV_PREFIX}{section.upper()}_"
    for section in ("security", "rounds", "params", "schedule", "downlink", "limits", "robust")
)


def _validate(c: ServerConfig) -> None:
    problems: list[str] = []
    sec, rounds, lim = c.security, c.rounds, c.limits
    if not sec.insecure and not (sec.tls_cert and sec.tls_key):
        problems.append(
            "TLS needs security.tls_cert and security.tls_key "
            "(or security.insecure = true, for loopback tests only)"
        )
    if sec.tls_client_ca and sec.insecure:
        problems.append("security.tls_client_ca needs TLS (security.insecure is true)")
    if rounds.max_rounds < 0:
        problems.append("rounds.max_rounds must be >= 0")
    if rounds.min_clients < 1:
        problems.append("rounds.min_clients must be >= 1")
    if rounds.target_clients < rounds.min_clients:
        problems.append("rounds.target_clients must be >= rounds.min_clients")
    if not (math.isfinite(rounds.deadline_s) and rounds.deadline_s > 0):
        problems.append("rounds.deadline_s must be > 0")
    if not 0.0 < rounds.selection_probability <= 1.0:
        problems.append("rounds.selection_probability must be in (0, 1]")
    if not (math.isfinite(rounds.retry_after_s) and rounds.retry_after_s >= 0):
        problems.append("rounds.retry_after_s must be >= 0")
    if not (math.isfinite(rounds.server_lr) and rounds.server_lr > 0):
        problems.append("rounds.server_lr must be > 0")
    if rounds.client_references < 0:
        problems.append("rounds.client_references must be >= 0 (0: off)")
    try:
        rounds.server_optimizer()
    except ValueError as exc:
        problems.append(f"rounds.optimizer: {exc}")
    if c.schedule.kind not in {"constant", "step", "cosine"}:
        problems.append("schedule.kind must be constant, step or cosine")
    if c.log_format not in {"json", "text"}:
        problems.append("log_format must be json or text")
    if c.log_level.lower() not in {"debug", "info", "warning", "error"}:
        problems.append("log_level must be debug, info, warning or error")
    if not 1 <= c.downlink.keep_versions <= 1000:
        problems.append("downlink.keep_versions must be in 1..1000")
    if not 2 <= c.downlink.keyframe_bits <= 20:
        problems.append("downlink.keyframe_bits must be in 2..20")
    if c.downlink.step_snap not in ("grid", "pow2", "auto"):
        problems.append("downlink.step_snap must be grid, pow2 or auto")
    if c.preset:
        if c.preset not in PRESET_NAMES:
            problems.append(f"preset must be one of {', '.join(PRESET_NAMES)}, got {c.preset!r}")
        elif (
            c.params != RoundParams()
            or c.schedule != ScheduleConfig()
            or c.downlink.params != RoundParams()
            or c.downlink.step_snap != DownlinkConfig.step_snap
        ):
            problems.append(
                "preset sets the uplink and downlink coding: leave [params], [schedule], "
                "[downlink.params] and downlink.step_snap at their defaults"
            )
    if not 0 <= lim.max_update_bytes <= MAX_STORED_BYTES:
        problems.append(f"limits.max_update_bytes must be in 0..{MAX_STORED_BYTES}")
    if not 1024 <= lim.max_chunk_bytes <= MIB:
        problems.append("limits.max_chunk_bytes must be in 1 KiB..1 MiB")
    if lim.max_message_bytes < lim.max_chunk_bytes + 64 * 1024:
        problems.append("limits.max_message_bytes must exceed max_chunk_bytes by >= 64 KiB")
    if lim.max_concurrent_rpcs < 0 or lim.max_parallel_decodes < 1:
        problems.append("limits.max_concurrent_rpcs must be >= 0, max_parallel_decodes >= 1")
    if (
        min(lim.max_upload_streams, lim.max_large_payloads, lim.max_download_streams) < 1
        or min(lim.downloads_per_client, lim.min_stream_bytes_per_s) < 1
        or lim.max_waiting_uploads < 0
    ):
        problems.append(
            "limits.max_upload_streams, max_large_payloads, max_download_streams, "
            "downloads_per_client, min_stream_bytes_per_s must be >= 1, max_waiting_uploads >= 0"
        )
    if not (
        math.isfinite(lim.admission_wait_s)
        and lim.admission_wait_s >= 0
        and math.isfinite(lim.stream_idle_timeout_s)
        and lim.stream_idle_timeout_s > 0
    ):
        problems.append("limits.admission_wait_s must be >= 0 and stream_idle_timeout_s > 0")
    if lim.codec_threads < 0 or lim.keep_model_blobs < 1:
        problems.append("limits.codec_threads must be >= 0 and keep_model_blobs >= 1")
    if not (math.isfinite(lim.shutdown_grace_s) and lim.shutdown_grace_s >= 0):
        problems.append("limits.shutdown_grace_s must be >= 0")
    if problems:
        raise ConfigError("; ".join(problems))
    if c.schedule.kind != "constant":
        try:
            c.build_schedule()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[schedule]: {exc}") from exc
