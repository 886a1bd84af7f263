"""Bad input raises InvalidParameterError (a ValueError) whose message names
the tensor and the problem; nothing is cast or copied silently."""

from __future__ import annotations

import numpy as np
import pytest

import fedcodec
from fedcodec import errors

GOOD = np.ones((3, 4), dtype=np.float32)


def raises_invalid(match: str):
    """pytest.raises for InvalidParameterError with ``match`` in the message."""
    return pytest.raises(fedcodec.InvalidParameterError, match=match)


def check_error(info: pytest.ExceptionInfo, code: int) -> None:
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, fedcodec.FedCodecError)
    assert error.code == code
    assert error.result_name == fedcodec._binding.result_name(code)
    assert str(error).startswith(error.result_name + ": ")


@pytest.mark.parametrize(
    ("dtype", "shown"),
    [(np.float64, "float64"), (np.float16, "float16"), (np.int32, "int32"), (">f4", ">f4")],
)
def test_non_float32_input_is_rejected_not_cast(dtype, shown):
    tensors = {"conv1.weight": GOOD, "fc.bias": np.ones(4, dtype=dtype)}
    with raises_invalid(rf"tensor 'fc.bias' \(position 1\).*dtype float32.*{shown}") as info:
        fedcodec.encode(tensors)
    check_error(info, errors.FC_ERR_INVALID_ARGUMENT)


def test_python_lists_are_float64_and_rejected():
    with raises_invalid("tensor 0: values must have dtype float32"):
        fedcodec.encode([[1.0, 2.0]])


def test_non_contiguous_input_is_rejected_not_copied():
    for bad in (GOOD.T, GOOD[:, ::2], np.asfortranarray(np.ones((3, 4), np.float32))):
        with raises_invalid("tensor 1: values must be C-contiguous"):
            fedcodec.encode([GOOD, bad])


def test_misaligned_input_is_rejected():
    raw = np.zeros(4 * 12 + 1, dtype=np.uint8)[1:].view(np.float32)
    assert not raw.flags.aligned
    with raises_invalid("not aligned"):
        fedcodec.encode([raw])


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_tensor_and_position(bad_value):
    x = np.zeros((3, 4), dtype=np.float32)
    x[2, 1] = bad_value
    with raises_invalid(
        r"tensor 'b' \(position 1\): values contain 1 NaN or infinite.*\(2, 1\)"
    ) as info:
        fedcodec.encode({"a": GOOD, "b": x})
    check_error(info, errors.FC_ERR_NONFINITE)


def test_too_many_dimensions():
    with raises_invalid("9 dimensions, at most 8"):
        fedcodec.encode([np.zeros((1,) * 9, dtype=np.float32)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"S": -1}, r"S must be in \[0, 4294967295\], got -1"),
        ({"S": 2**32}, "S must be in"),
        ({"S": 1.5}, "S must be an integer"),
        ({"lam": -0.1}, "lam must be >= 0"),
        ({"lam": float("nan")}, "lam must be finite"),
        ({"lam": float("inf")}, "lam must be finite"),
        ({"lam": "0.1"}, "lam must be a number"),
        ({"max_gtx": 0}, r"max_gtx must be in \[1, 8\], got 0"),
        ({"max_gtx": 9}, r"max_gtx must be in \[1, 8\], got 9"),
        ({"threads": -1}, "threads must be in"),
        ({"window_set": 8}, r"window_set must be 0..7 or .auto."),
        ({"transpose": 2}, "transpose must be True, False or 'auto'"),
        ({"slice_elems": 0}, "slice_elems must be in"),
        ({"mode": "sparse"}, "mode must be one of"),
        ({"step": 0.0}, "step must be > 0"),
        ({"step": -1.0}, "step must be > 0"),
        ({"step": float("nan")}, "step must be finite"),
        ({"step": 1e-45}, "not a normal float32"),
        ({"step": 1e300}, "not a normal float32"),
        ({"step": [1.0, 2.0]}, "step has 2 entries for 1 tensors"),
        ({"step": {"w": 1.0}}, "step is a mapping, but the tensors are a sequence"),
        ({"sigma_min": -1.0}, "sigma_min must be > 0"),
        ({"importance": [np.ones(3)]}, r"importance has shape \(3,\).*\(3, 4\)"),
        ({"importance": [-GOOD]}, "importance must be finite and >= 0"),
        ({"importance": [GOOD * np.nan]}, "importance must be finite and >= 0"),
        ({"importance": GOOD}, "one array"),
        ({"sigma": [GOOD * 0]}, "sigma must be finite and > 0"),
        ({"sigma": [GOOD], "importance": [GOOD]}, "importance or sigma, not both"),
    ],
)
def test_bad_parameters(kwargs, message):
    with raises_invalid(message):
        fedcodec.encode([GOOD], **kwargs)


def test_zero_importance_everywhere_is_explained():
    with raises_invalid("importance is 0 everywhere"):
        fedcodec.encode([GOOD], importance=[np.zeros_like(GOOD)])


def test_step_too_small_for_the_values_is_a_level_overflow():
    with raises_invalid(r"tensor 0: max \|value\| 1e\+06 / step 1e-06 exceeds") as info:
        fedcodec.encode([np.full(3, 1e6, np.float32)], step=1e-6)
    check_error(info, errors.FC_ERR_LEVEL_OVERFLOW)


def test_mapping_options_must_name_known_tensors():
    with raises_invalid(r"step names unknown tensors: \['typo'\]"):
        fedcodec.encode({"w": GOOD}, step={"typo": 1.0})
    with pytest.raises(fedcodec.InvalidParameterError, match="keys must be str"):
        fedcodec.encode({1: GOOD})


def test_a_single_array_is_not_a_list_of_tensors():
    with raises_invalid(r"not one array; wrap a single tensor in a list"):
        fedcodec.encode(GOOD)
    with raises_invalid("sequence or mapping"):
        fedcodec.encode("weights")


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (np.array([2**30], dtype=np.int32), "a level of magnitude 1073741824 exceeds"),
        (np.array([-(2**30)], dtype=np.int32), "a level of magnitude 1073741824 exceeds"),
        (np.array([2**40], dtype=np.int64), r"levels range over \[1099511627776"),
        (np.array([1.0], dtype=np.float32), "levels must have an integer dtype"),
        (np.array([True]), "levels must have an integer dtype"),
        (np.arange(6, dtype=np.int32).reshape(2, 3).T, "levels must be C-contiguous"),
    ],
)
def test_bad_levels(levels, message):
    with raises_invalid(message):
        fedcodec.encode_levels([levels], step=1.0)


def test_levels_need_a_positive_step():
    levels = [np.zeros(3, dtype=np.int32)]
    for step in (0.0, -1.0, float("nan")):
        with pytest.raises(fedcodec.InvalidParameterError, match="step"):
            fedcodec.encode_levels(levels, step=step)
    with raises_invalid("need a step"):
        fedcodec.encode_levels(levels, step=[None])


def test_decode_names_must_match_the_container():
    data = fedcodec.encode([GOOD, GOOD]).data
    with raises_invalid("names has 1 entries, the container holds 2") as info:
        fedcodec.decode(data, names=["a"])
    check_error(info, errors.FC_ERR_MISMATCH)
    with raises_invalid("distinct"):
        fedcodec.decode(data, names=["a", "a"])
    with raises_invalid("names must be a sequence"):
        fedcodec.decode(data, names="ab")


def test_decode_parameters_are_checked():
    data = fedcodec.encode([GOOD]).data
    with raises_invalid("threads must be in"):
        fedcodec.decode(data, threads=-1)
    with raises_invalid("max_total_elems must be in"):
        fedcodec.decode(data, max_total_elems=-5)
    with raises_invalid("data must be bytes-like"):
        fedcodec.decode("FCDC")


def test_decode_accepts_any_contiguous_byte_buffer():
    data = fedcodec.encode([GOOD], step=0.5).data
    for buffer in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        np.testing.assert_array_equal(fedcodec.decode(buffer)[0], GOOD)
    with raises_invalid("contiguous"):
        fedcodec.decode(memoryview(data + data)[::2])


def test_levels_whose_reconstruction_overflows_float32_are_refused():
    # 2**29 * 1e38 is not a float32: the encoder refuses what a decoder would
    # have to turn into infinity (and the decoder refuses such containers).
    levels = np.full((4, 4), 2**29, dtype=np.int32)
    with pytest.raises(errors.InvalidParameterError):
        fedcodec.encode_levels([levels], step=1e38)
    ok = fedcodec.encode_levels([levels], step=1e20)
    assert np.isfinite(fedcodec.decode(ok.data)[0]).all()
