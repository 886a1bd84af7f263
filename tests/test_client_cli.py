"""``fedcodec client`` from the command line against a real server on loopback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fedcodec.cli import main
from fedcodec.server import BackgroundServer, load_config, load_initial_model

from loopback import silent_server

TOKENS = {"phone-1": "cli-client-token-0123456789abcdef"}


def test_fedcodec_client_takes_part_until_the_federation_finishes(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    config = load_config(
        env={},
        overrides={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "state_path": str(tmp_path / "state.sqlite"),
            "security.insecure": True,
            "rounds.max_rounds": 1,
            "rounds.min_clients": 1,
            "rounds.target_clients": 1,
            "rounds.retry_after_s": 0.05,
            "params.budget_bytes": 4000,
            "limits.codec_threads": 1,
        },
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["phone-1"] + "\n")
    model = load_initial_model("builtin:mnist-mlp")
    with BackgroundServer(config, tokens=TOKENS, initial_model=model) as server:
        status = main(
            [
                "client",
                "--server",
                f"127.0.0.1:{server.port}",
                "--client-id",
                "phone-1",
                "--token-file",
                str(token_file),
                "--insecure",
                "--state-dir",
                str(tmp_path / "client"),
                "--train",
                "builtin:mnist",
                "--shard",
                "0/8",
                "--log-format",
                "text",
            ]
        )
        assert status == 0
        assert server.coordinator.finished
        history = server.call(server.coordinator.history)
    assert [h["round_id"] for h in history] == [1]
    assert all(h["stats"]["updates"][0]["client_id"] == "phone-1" for h in history)
    assert (tmp_path / "client" / "encoder.npz").exists()
    assert (tmp_path / "client" / "model.npz").exists()


def test_fedcodec_client_health_exits_0_when_serving_and_1_when_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(
        env={},
        overrides={
            "listen": "127.0.0.1:0",
            "health_listen": "127.0.0.1:0",
            "metrics_listen": "",
            "state_path": str(tmp_path / "state.sqlite"),
            "security.insecure": True,
        },
    )
    model = {"w": load_initial_model("builtin:mnist-mlp")["b2"]}  # type: ignore[index]
    with BackgroundServer(config, tokens=TOKENS, initial_model=model) as server:
        port = server.server.health_port
        assert main(["client", "--server", f"127.0.0.1:{port}", "--insecure", "--health"]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert main(["client", "--server", f"127.0.0.1:{closed}", "--insecure", "--health"]) == 1
    # Nothing listens there: said so, not NOT_SERVING (a server that answers "not serving").
    out = capsys.readouterr().out
    assert out.startswith("UNAVAILABLE: "), out
    assert "NOT_SERVING" not in out


def test_fedcodec_client_without_a_token_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FEDCODEC_TOKEN", raising=False)
    status = main(["client", "--server", "127.0.0.1:1", "--client-id", "x", "--insecure"])
    assert status == 2
    assert "token" in capsys.readouterr().err


def test_call_deadline_ends_the_client_when_the_server_never_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlxtend")
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["phone-1"] + "\n")
    with silent_server() as port:
        start = time.monotonic()
        status = main(
            [
                "client",
                "--server",
                f"127.0.0.1:{port}",
                "--client-id",
                "phone-1",
                "--token-file",
                str(token_file),
                "--insecure",
                "--call-deadline",
                "0.5",
                "--log-format",
                "text",
            ]
        )
        elapsed = time.monotonic() - start
    assert status == 1
    # The run also loads the bundled data and builds the model, which takes seconds on a
    # loaded machine; without the deadline the first call alone would wait ~16 min.
    assert elapsed < 60.0
    assert "no answer within the call deadline of 0.5 s" in capsys.readouterr().err
