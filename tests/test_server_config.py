"""Server configuration: one path from a file, the environment and flags."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from fedcodec.client.edge import round_info_from_proto
from fedcodec.pipeline import (
    CosineSchedule,
    RoundParams,
    Sensitivity,
    Sparsification,
    as_schedule,
    get_preset,
)
from fedcodec.server import BackgroundServer, ConfigError, ServerConfig, load_config
from fedcodec.server.auth import TokenRegistry, token_digest
from fedcodec.server.config import SecurityConfig

import loopback
from loopback import loopback_config

INSECURE = {"security.insecure": True}
SPARSE_ALLOCATION = "params.sparsification.allocation"


def test_a_toml_file_then_the_environment_then_flags_win_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'listen = "0.0.0.0:6000"\n[rounds]\nmin_clients = 3\ntarget_clients = 9\n'
        "[params]\nbudget_bytes = 5000\n[params.sparsification]\ntopk = 0.1\n"
        "[security]\ninsecure = true\n"
    )
    env = {"FEDCODEC_ROUNDS_TARGET_CLIENTS": "12", "FEDCODEC_LISTEN": "127.0.0.1:7000"}
    config = load_config(path, env=env, overrides={"listen": "127.0.0.1:8000"})
    assert config.listen == "127.0.0.1:8000"
    assert config.rounds.min_clients == 3
    assert config.rounds.target_clients == 12
    assert config.params.budget_bytes == 5000
    assert config.params.sparsification is not None
    assert config.params.sparsification.topk == 0.1


def test_json_files_work_the_same(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"security": {"insecure": True}, "rounds": {"max_rounds": 5}}))
    assert load_config(path, env={}).rounds.max_rounds == 5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"overrides": {"rounds.min_clientz": 3}}, "unknown setting"),
        ({"env": {"FEDCODEC_ROUNDS_MIN_CLIENTZ": "3"}}, "unknown environment setting"),
        ({"env": {"FEDCODEC_ROUNDS_MIN_CLIENTS": "three"}}, "must be int"),
        ({"overrides": {"rounds.min_clients": 5, "rounds.target_clients": 2}}, "target_clients"),
        ({"overrides": {"limits.max_chunk_bytes": 4 << 20}}, "max_chunk_bytes"),
        ({"overrides": {"limits.max_update_bytes": 2 << 30}}, "max_update_bytes"),
        ({"overrides": {"params.lam": -1}}, "lam"),
        ({"overrides": {"params.quantizer": "lloyd"}}, "quantizer must be one of"),
        ({"overrides": {"params.quantizer": "dither", "params.lam": 0.5}}, "lam must be 0"),
        ({"env": {"FEDCODEC_PARAMS_SENSITIVITY": "maybe"}}, "true or false"),
        ({"overrides": {"params.sparsification.topk": 0.1, SPARSE_ALLOCATION: "x"}}, "allocation"),
        ({"overrides": {"schedule.kind": "cosine", "schedule.name": "nope"}}, "schedule"),
        ({"overrides": {"rounds.optimizer": "sgd"}}, "rounds.optimizer: kind"),
        ({"overrides": {"downlink.step_snap": "octave"}}, "grid, pow2 or auto"),
        ({"overrides": {"rounds.optimizer": "adam", "rounds.optimizer_beta1": 1.5}}, "beta1"),
        (
            {"overrides": {"rounds.optimizer": "adam", "rounds.optimizer_second_moment": "row"}},
            "second_moment",
        ),
    ],
)
def test_unknown_keys_wrong_types_and_bad_combinations_are_errors(
    source: dict[str, dict[str, object]], message: str
) -> None:
    overrides = {**INSECURE, **source.get("overrides", {})}
    with pytest.raises(ConfigError, match=message):
        load_config(env=source.get("env", {}), overrides=overrides)


def test_the_downlink_step_snap_may_be_auto() -> None:
    config = load_config(env={}, overrides={**INSECURE, "downlink.step_snap": "auto"})
    assert config.downlink.step_snap == "auto"


def test_other_programs_fedcodec_variables_are_left_alone() -> None:
    config = load_config(env={"FEDCODEC_TOKEN": "x", "FEDCODEC_WERROR": "1"}, overrides=INSECURE)
    assert config.security.insecure


def test_a_schedule_section_varies_one_parameter_over_rounds() -> None:
    config = load_config(
        env={},
        overrides={
            **INSECURE,
            "params.budget_bytes": 4000,
            "schedule.kind": "cosine",
            "schedule.name": "budget_bytes",
            "schedule.start": 8000,
            "schedule.end": 2000,
            "schedule.rounds": 10,
        },
    )
    schedule = config.build_schedule()
    assert isinstance(schedule, CosineSchedule)
    assert schedule(0, None).budget_bytes == 8000
    assert schedule(10, None).budget_bytes == 2000


def test_zero_switches_an_optional_coding_parameter_off() -> None:
    config = load_config(env={"FEDCODEC_PARAMS_BUDGET_BYTES": "0"}, overrides=INSECURE)
    assert config.params == RoundParams()


def test_every_key_round_trips_through_print_config() -> None:
    config = load_config(env={}, overrides={**INSECURE, "params.step": 0.01})
    again = load_config(env={}, overrides=config.to_json())
    assert again == config


def test_quantizer_sensitivity_and_rd_sparsification_are_server_settings(tmp_path: Path) -> None:
    """Every RoundParams choice a client can be told to use is a server setting too."""
    path = tmp_path / "server.toml"
    path.write_text(
        "[security]\ninsecure = true\n"
        '[params]\nquantizer = "trellis"\nsensitivity = true\n'
        '[params.sparsification]\ntopk = 0.02\nallocation = "rd"\n'
        '[downlink.params]\nquantizer = "trellis8"\n'
    )
    config = load_config(path, env={"FEDCODEC_PARAMS_DITHER_SALT": "7"})
    assert config.params == RoundParams(
        quantizer="trellis",
        dither_salt=7,
        sensitivity=Sensitivity(),
        sparsification=Sparsification(topk=0.02, allocation="rd"),
    )
    assert config.downlink.params == RoundParams(quantizer="trellis8")
    assert load_config(env={}, overrides=config.to_json()) == config
    # The defaults print as "off" and load back as off: no sparsification from an
    # allocation rule alone, no sensitivity.
    plain = load_config(env={}, overrides=INSECURE)
    assert plain.to_json()["params.sensitivity"] is False
    assert load_config(env={}, overrides=plain.to_json()).params == RoundParams()


def _checked_in_params(server: BackgroundServer, client_id: str, token: str) -> RoundParams:
    """The coding parameters a client checking in is told."""
    conn = loopback.connect(server, token, client_id)
    try:
        answer = conn.check_in()
    finally:
        conn.close()
    return round_info_from_proto(answer.config).params


def test_the_round_config_tells_clients_the_configured_quantizer(tmp_path: Path) -> None:
    """End to end: a client checking in learns the quantizer from the server's settings."""
    settings = {"params.quantizer": "dither", "params.lam": 0.0, "params.sensitivity": True}
    config = loopback_config(tmp_path, {"rounds.min_clients": 1}, settings)
    tokens = {"c0": "token-of-client-0-0123456789"}
    model = {"w": np.zeros((4, 8), np.float32)}
    with BackgroundServer(config, tokens=tokens, initial_model=model) as server:
        params = _checked_in_params(server, "c0", tokens["c0"])
    assert params.quantizer == "dither"
    assert params.lam == 0.0
    assert params.sensitivity == Sensitivity()


def test_tokens_are_kept_as_digests_and_map_to_their_client(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"a": "a-token-0123456789abcdef", "b": token_digest("b-token-0123456789abc")})
    )
    registry = TokenRegistry.from_file(path)
    assert registry.client_for("Bearer a-token-0123456789abcdef") == "a"
    assert registry.client_for("bearer b-token-0123456789abc") == "b"
    assert registry.client_for("Bearer nope-0123456789abcdef") is None
    assert registry.client_for("a-token-0123456789abcdef") is None
    assert registry.client_for(None) is None
    with pytest.raises(ValueError, match="share a token"):
        TokenRegistry({"a": "same-token-0123456789", "b": "same-token-0123456789"})
    with pytest.raises(ValueError, match="shorter"):
        TokenRegistry({"a": "short"})


def test_a_server_optimizer_is_configured_in_rounds(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        '[rounds]\noptimizer = "adam"\noptimizer_eta = 0.02\n[security]\ninsecure = true\n'
    )
    optimizer = load_config(path, env={}).rounds.server_optimizer()
    assert optimizer is not None
    assert optimizer.settings() == {
        "kind": "adam",
        "eta": 0.02,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
        "second_moment": "tensor",
    }
    assert load_config(env={}, overrides=INSECURE).rounds.server_optimizer() is None


def test_a_preset_sets_the_coding_of_both_links(tmp_path: Path) -> None:
    """``preset = "..."``: the uplink schedule, the downlink's and the step snapping are the
    product preset's (the Flower wrapper's ``preset=`` objects)."""
    path = tmp_path / "server.toml"
    path.write_text('preset = "lean-partial"\n[security]\ninsecure = true\n')
    config = load_config(path, env={})
    preset = get_preset("lean-partial")
    uplink, downlink = config.build_schedule(), as_schedule(config.build_downlink())
    for r in range(10):
        assert uplink(r, None) == as_schedule(preset.uplink)(r, None)
        assert downlink(r, None) == as_schedule(preset.downlink)(r, None)
    assert config.step_snap() == "auto"
    assert load_config(env={"FEDCODEC_PRESET": "lean-full"}, overrides=INSECURE).step_snap() == (
        "grid"
    )
    # --print-config leaves out what the preset sets, and loads back the same
    printed = config.to_json()
    assert printed["preset"] == "lean-partial"
    assert not [k for k in printed if k.startswith(("params.", "schedule.", "downlink.params."))]
    assert load_config(env={}, overrides=printed) == config
    # without a preset: [params] and [downlink] as before
    plain = load_config(env={}, overrides={**INSECURE, "downlink.step_snap": "pow2"})
    assert plain.build_downlink() == RoundParams()
    assert plain.step_snap() == "pow2"
    assert plain.build_schedule()(3, None) == RoundParams()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"preset": "balanced", "params.lam": 0.2}, "leave params.lam unset"),
        ({"preset": "balanced", "schedule.kind": "step"}, "schedule.kind"),
        ({"preset": "balanced", "downlink.params.S": 8}, "downlink.params.S"),
        ({"preset": "balanced", "downlink.step_snap": "grid"}, "downlink.step_snap"),
        (
            {"preset": "fastest"},
            "preset must be one of near-lossless, dense, robust, balanced, lean-full",
        ),
    ],
)
def test_a_preset_with_explicit_coding_or_an_unknown_name_is_a_config_error(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides={**INSECURE, **settings})


def test_a_preset_and_explicit_coding_in_one_config_object_are_refused() -> None:
    with pytest.raises(ConfigError, match="preset sets the uplink and downlink coding"):
        ServerConfig(
            preset="balanced",
            params=RoundParams(S=8),
            security=SecurityConfig(insecure=True),
        )


def test_clients_run_rounds_with_a_preset(tmp_path: Path) -> None:
    """End to end: edge clients get the preset's parameters, and two rounds of the sparse
    coding (top-k warm-up both ways, row-clustered) aggregate and travel back."""
    settings = {"rounds.min_clients": 2, "rounds.target_clients": 2, "preset": "lean-partial"}
    config = loopback_config(tmp_path, settings)
    tokens = {f"c{i}": f"token-of-client-{i}-0123456789" for i in range(2)}
    rng = np.random.default_rng(0)
    model = {
        "w": rng.standard_normal((16, 32)).astype(np.float32),
        "bn.running_var": np.ones(16, np.float32),
    }
    with BackgroundServer(config, tokens=tokens, initial_model=model) as server:
        params = _checked_in_params(server, "c0", tokens["c0"])
        assert params == as_schedule(get_preset("lean-partial").uplink)(0, None)
        clients = [
            loopback.edge_client(server.port, cid, token, model) for cid, token in tokens.items()
        ]
        try:
            results: list[loopback.RoundResult] = []

            def run(i: int) -> None:
                train = loopback.directional_trainer(model, i, 1)
                results.append(loopback.participate(clients[i], train))

            for _ in range(2):
                results.clear()
                threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert len(results) == 2
                # an update of 1 % of 528 weights: far below the float32 model (2,112 B)
                assert all(0 < r.bytes_up < 600 for r in results), results
        finally:
            for c in clients:
                c.close()


def test_fedcodec_serve_help_names_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    """The --preset help lists the names by hand (the CLI does not import the pipeline to
    start); it must name every preset, in order."""
    from fedcodec.cli import main
    from fedcodec.pipeline import PRESET_NAMES

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"({', '.join(PRESET_NAMES)};" in text


def test_fedcodec_serve_takes_a_preset_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from fedcodec.cli import main

    assert main(["serve", "--insecure", "--preset", "lean-full", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["preset"] == "lean-full"
    assert "params.lam" not in printed
    assert main(["serve", "--insecure", "--preset", "fastest", "--print-config"]) == 2
    names = "near-lossless, dense, robust, balanced, lean-full, lean-partial"
    assert names in capsys.readouterr().err
    args = ["serve", "--insecure", "--preset", "balanced", "--set", "params.S=8"]
    assert main([*args, "--print-config"]) == 2
    assert "leave params.S unset" in capsys.readouterr().err
