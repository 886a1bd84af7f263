"""``fedcodec client``: run an edge client from the command line (flags in :mod:`fedcodec.cli`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from fedcodec.client.edge import EdgeClient, Outcome, RoundResult, TrainFn
from fedcodec.client.errors import AuthenticationError, ServerUnavailableError
from fedcodec.client.transport import Connection, RetryPolicy
from fedcodec.logs import setup_logging
from fedcodec.models import BUILTIN_MNIST_MLP, load_model

__all__ = ["load_trainer", "read_token", "run_client"]

log = logging.getLogger("fedcodec.client")


def read_token(token_file: str | None) -> str:
    """The bearer token from a file, else from ``$FEDCODEC_TOKEN``.

    Raises
    ------
    ValueError
        Neither is set, or the file is unreadable or empty.
    """
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {token_file!r}: {exc}") from exc
    else:
        token = os.environ.get("FEDCODEC_TOKEN", "").strip()
    if not token:
        raise ValueError("no token: pass --token-file PATH or set FEDCODEC_TOKEN")
    return token


def load_trainer(spec: str, shard: tuple[int, int]) -> TrainFn:
    """The training callback named by ``--train``.

    Parameters
    ----------
    spec : str
        ``builtin:mnist`` (the toy MLP of :mod:`fedcodec.toy` on MNIST-5k shard ``shard``), or
        ``MODULE:FUNCTION`` (a callable ``(weights, round_info) -> TrainResult``).
    shard : (int, int)
        Shard index and count for ``builtin:mnist``.
    """
    if spec == "builtin:mnist":
        from fedcodec.toy import mnist_trainer

        return mnist_trainer(shard[0], shard[1])
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"--train must be builtin:mnist or MODULE:FUNCTION, got {spec!r}")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise ValueError(f"{spec!r} is not a callable")
    trainer: TrainFn = fn
    return trainer


def _report(result: RoundResult) -> None:
    if result.outcome in (Outcome.PARTICIPATED, Outcome.REFUSED):
        log.info(
            "round done",
            extra={
                "event": "round_done",
                "outcome": result.outcome.value,
                "round_id": result.round_id,
                "bytes_up": result.bytes_up,
                "bytes_down": result.bytes_down,
                "keyframe": result.keyframe,
            },
        )


def run_client(args: argparse.Namespace) -> int:
    """Run ``fedcodec client`` with parsed arguments; return the exit status."""
    setup_logging(args.log_level, args.log_format)
    call_deadline_s: float | None = getattr(args, "call_deadline", None)
    if args.health:
        connection = Connection(
            args.server,
            "",
            tls_ca=args.tls_ca,
            insecure=args.insecure,
            server_name=args.server_name,
            client_cert=args.client_cert,
            client_key=args.client_key,
            retry=RetryPolicy(call_deadline_s=call_deadline_s),
        )
        try:
            status = connection.health_status()
        finally:
            connection.close()
        # A server that answers NOT_SERVING and one that cannot be reached at all are
        # different problems: the reason is printed (it used to be NOT_SERVING for both).
        print(status)
        return 0 if status == "SERVING" else 1
    if not args.client_id:
        print("fedcodec client: --client-id (or FEDCODEC_CLIENT_ID) is required", file=sys.stderr)
        return 2
    try:
        token = read_token(args.token_file)
        trainer = load_trainer(args.train, args.shard)
        source = getattr(args, "initial_model", None)
        if source is None and args.train == "builtin:mnist":
            source = BUILTIN_MNIST_MLP
        initial = load_model(source or "")
    except (ValueError, ImportError) as exc:
        print(f"fedcodec client: {exc}", file=sys.stderr)
        return 2
    try:
        with EdgeClient(
            args.server,
            client_id=args.client_id,
            token=token,
            state_dir=args.state_dir,
            tls_ca=args.tls_ca,
            insecure=args.insecure,
            server_name=args.server_name,
            client_cert=args.client_cert,
            client_key=args.client_key,
            initial_model=initial,
            request_initial=bool(getattr(args, "request_initial", True)),
            call_deadline_s=call_deadline_s,
        ) as client:
            results = client.run(trainer, max_rounds=args.rounds, on_round=_report)
    except AuthenticationError as exc:
        print(f"fedcodec client: {exc}", file=sys.stderr)
        return 3
    except (ServerUnavailableError, KeyboardInterrupt) as exc:
        print(f"fedcodec client: stopped: {exc!r}", file=sys.stderr)
        return 1
    done = sum(1 for r in results if r.outcome is Outcome.PARTICIPATED)
    log.info("client finished", extra={"event": "client_finished", "rounds": done})
    return 0
