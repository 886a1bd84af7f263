"""One RoundParams serialization on every transport: proto, Flower config, JSON."""

from __future__ import annotations

import pytest

from fedcodec.pipeline import RoundParams, Sparsification
from fedcodec.pipeline.params import Sensitivity
from fedcodec.v1 import round_pb2
from fedcodec.wire import WireError, params_from_proto, params_to_proto

CASES = [
    RoundParams(),
    RoundParams(lam=0.5, S=16, step_rule="tensor"),
    RoundParams(step=0.003, tolerance=0.1),
    RoundParams(budget_bytes=1234, sparsification=Sparsification(topk=0.02, allocation="rd")),
    RoundParams(S=32, sensitivity=Sensitivity()),
]


@pytest.mark.parametrize("params", CASES)
def test_params_survive_proto_and_json_text_unchanged(params: RoundParams) -> None:
    msg = params_to_proto(params)
    wire = round_pb2.CodingParams.FromString(msg.SerializeToString())
    assert params_from_proto(wire) == params
    assert RoundParams.from_json_text(params.to_json_text()) == params
    # A client that reads only the typed fields gets the core parameters.
    wire.params_json = ""
    core = params_from_proto(wire)
    assert (core.lam, core.S, core.step, core.budget_bytes, core.step_rule) == (
        params.lam,
        params.S,
        params.step,
        params.budget_bytes,
        params.step_rule,
    )


def test_a_parameter_out_of_range_is_an_error_naming_the_field() -> None:
    msg = params_to_proto(RoundParams())
    msg.params_json = '{"lam": -1, "S": 4}'
    with pytest.raises(WireError, match="lam must be"):
        params_from_proto(msg)
    msg.params_json = '{"quantiser": "uniform"}'
    with pytest.raises(WireError, match="quantiser"):
        params_from_proto(msg)
    typed = round_pb2.CodingParams(lam=0.1, s=4, tolerance=0.05, quantizer=99)  # type: ignore[arg-type]
    with pytest.raises(WireError, match=r"params\.quantizer"):
        params_from_proto(typed)


@pytest.mark.parametrize("quantizer", ["uniform", "trellis", "trellis8", "dither"])
def test_every_quantizer_is_selectable_on_the_wire(quantizer: str) -> None:
    params = RoundParams(lam=0.0, S=8, quantizer=quantizer, dither_salt=3)  # type: ignore[arg-type]
    msg = params_to_proto(params)
    assert params_from_proto(msg) == params
    msg.params_json = ""
    assert params_from_proto(msg).quantizer == quantizer
