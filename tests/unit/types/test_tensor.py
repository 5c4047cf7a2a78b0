"""Tensor: coercion at the boundary, JSON (base64 and nested lists), pickle, torch without a copy, shared memory."""

from __future__ import annotations

import copy
import json
import pickle
import socket
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvai_sdk.exc import InputValidationError
from rvai_sdk.transport.channel import INLINE_THRESHOLD, Channel
from rvai_sdk.transport.shm import SlotPool, shm_supported
from rvai_sdk.types import Image, Tensor, coerce, fake, json_schema
from tests.unit.types._support import examples

DTYPES = [np.bool_, np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.complex64]

tensors = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dtype=dt, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)


def identical(a: Any, b: Any) -> bool:
    """Same class, dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@examples
@given(tensors)
def test_any_tensor_round_trips_exactly_through_json_pickle_and_deepcopy(array: np.ndarray) -> None:
    tp = Tensor[array.dtype]
    value = tp(array)
    text = json.dumps(value.to_json(), allow_nan=False)
    assert identical(tp.from_json(json.loads(text)), value)
    assert identical(Tensor.from_json(json.loads(text)).view(np.ndarray), array)
    assert identical(pickle.loads(pickle.dumps(value, protocol=5)), value)
    assert identical(pickle.loads(pickle.dumps(value, protocol=2)), value)
    assert identical(copy.deepcopy(value), value)
    jsonschema.validate(value.to_json(), tp.json_schema())


@examples
@given(hnp.arrays(dtype=np.float32, shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), elements=st.floats(-1e6, 1e6, width=32)))
def test_nested_lists_are_accepted_as_json_input(array: np.ndarray) -> None:
    nested = array.tolist()
    decoded = Tensor[np.float32].from_json(json.loads(json.dumps(nested)))
    assert identical(decoded, Tensor[np.float32](array))
    jsonschema.validate(nested, Tensor[np.float32].json_schema())


def test_an_array_of_the_dtype_is_wrapped_without_a_copy_and_a_lossless_dtype_is_converted() -> None:
    array = np.zeros((4, 5), np.float32)
    wrapped = coerce(Tensor[np.float32], array)
    assert type(wrapped) is Tensor[np.float32] and np.shares_memory(wrapped, array)
    converted = coerce(Tensor[np.float32], np.arange(3, dtype=np.uint8))
    assert converted.dtype == np.float32 and converted.tolist() == [0.0, 1.0, 2.0]
    image = Image(np.ones((2, 2, 3), np.uint8))
    assert np.shares_memory(Tensor[np.uint8, (None, None, 3)].coerce(image), image)


def test_a_lossy_dtype_a_wrong_shape_and_non_numbers_are_refused_with_the_type_and_a_fix() -> None:
    with pytest.raises(InputValidationError, match=r"expected Tensor\[float32\], got an array of dtype float64; convert it with \.astype\(np\.float32\)"):
        Tensor[np.float32].coerce(np.zeros(3))
    with pytest.raises(InputValidationError, match=r"expected Tensor\[uint8, \(None, None, 3\)\], got an array of shape \(4, 4\)"):
        Tensor[np.uint8, (None, None, 3)].coerce(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputValidationError, match=r"expected Tensor\[uint8\], got numbers that are not whole or outside uint8's range"):
        Tensor[np.uint8].from_json([1, 256])
    with pytest.raises(InputValidationError, match="not a rectangular array"):
        Tensor.coerce([[1, 2], [3]])
    with pytest.raises(InputValidationError, match="expected Tensor, got str"):
        Tensor.coerce("abc")
    with pytest.raises(InputValidationError, match="do not fill shape"):
        Tensor.from_json({"dtype": "float32", "shape": [2], "data": "AAAA"})
    with pytest.raises(TypeError, match="Tensor takes a numpy dtype"):
        Tensor["not-a-dtype"]
    with pytest.raises(TypeError, match="a Tensor shape is a tuple"):
        Tensor[np.uint8, [None, 3]]


def test_spellings_of_one_dtype_are_one_class_that_pickles_by_reference() -> None:
    assert Tensor[np.float32] is Tensor["float32"] is Tensor[np.dtype("float32")]
    shaped = Tensor[np.uint8, (None, None, 3)]
    assert shaped.type_name() == "Tensor[uint8, (None, None, 3)]"
    assert pickle.loads(pickle.dumps(shaped)) is shaped


class Embedding(Tensor[np.float32], shape=(8,)):
    """A named tensor type, the form mypy --strict accepts for a shape."""


def test_a_subclass_declares_dtype_and_shape_with_keywords() -> None:
    assert Embedding.expected_dtype == np.float32 and Embedding.expected_shape == (8,)
    value = fake(Embedding, np.random.default_rng(0))
    assert type(value) is Embedding and value.shape == (8,)
    assert identical(pickle.loads(pickle.dumps(value)), value)
    with pytest.raises(InputValidationError, match=r"expected Embedding, got an array of shape \(7,\)"):
        Embedding(np.zeros(7, np.float32))


@pytest.mark.parametrize("tp", [Tensor, Tensor[np.int8], Tensor[np.bool_, (2, None)], Embedding])
def test_fake_values_fit_their_type_and_schema(tp: Any) -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        value = fake(tp, rng)
        assert type(value) is tp and identical(coerce(tp, value), value)
        jsonschema.validate(value.to_json(), json_schema(tp))


def test_arithmetic_and_indexing_give_plain_arrays() -> None:
    value = Tensor[np.float32](np.ones((2, 3), np.float32))
    assert type(value + 1) is np.ndarray and type(value[0]) is np.ndarray and type(value.reshape(6)) is np.ndarray
    assert repr(value) == "Tensor[float32](shape=(2, 3), dtype=float32)"


def test_a_cpu_torch_tensor_is_taken_and_given_back_without_a_copy() -> None:
    torch = pytest.importorskip("torch")
    source = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    value = Tensor[np.float32].coerce(source)
    value[0, 0] = 42.0
    assert float(source[0, 0]) == 42.0  # same memory
    back = value.to_torch()
    back[1, 2] = -1.0
    assert float(value[1, 2]) == -1.0
    assert Tensor.from_torch(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]
    with pytest.raises(InputValidationError, match="bfloat16"):
        Tensor.coerce(torch.ones(2, dtype=torch.bfloat16))
    decoded = Tensor[np.float32].from_json(value.to_json())
    decoded.to_torch()[0, 0] = 5.0  # decoded from JSON into writable memory
    assert float(decoded[0, 0]) == 5.0


@pytest.mark.skipif(not shm_supported(), reason="no memfd_create on this platform")
def test_a_large_tensor_crosses_the_transport_in_shared_memory_like_an_image() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = Channel(a, SlotPool(max_bytes=64 << 20)), Channel(b, SlotPool(max_bytes=64 << 20))
    try:
        frame = np.random.default_rng(0).random((1080, 1920), dtype=np.float32)
        assert frame.nbytes >= INLINE_THRESHOLD
        left.post(("p", 1, None, {"t": Tensor[np.float32](frame)}))
        ops = right.recv()
        assert ops is not None
        received = ops[0][3]["t"]
        assert type(received) is Tensor[np.float32] and np.array_equal(received, frame)
        assert left.pool is not None and left.pool.stats()["leased"] == 1  # one slot, mapped by the receiver
    finally:
        left.close()
        right.close()
