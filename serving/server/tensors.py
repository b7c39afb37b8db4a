"""Tensors across the wire: TensorProto <-> numpy (gRPC) and TF Serving's JSON rules <-> numpy (REST)."""
from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from typing import Any

import numpy as np
import orjson
import simdjson
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.server.errors import invalid

STRING = types_pb2.DT_STRING


@functools.cache
def np_dtype(dtype_enum: int) -> np.dtype:
    """numpy dtype of a TF DataType enum (object for DT_STRING)."""
    return np.dtype(object) if dtype_enum == STRING else np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)


def dtype_name(dtype_enum: int) -> str:
    """TF Serving's name for a dtype, e.g. 'float', 'string'."""
    return tf.dtypes.as_dtype(dtype_enum).name.replace("float32", "float").replace("float64", "double")


# --- gRPC: TensorProto <-> numpy ----------------------------------------------------------------

# The repeated field that carries a dtype's values when tensor_content is empty (TensorFlow's tensor.cc).
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val", types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val", types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val", STRING: "string_val",
}


def proto_shape(proto: tensor_pb2.TensorProto, what: str) -> tuple[tuple[int, ...], int]:
    """(shape, element count) a TensorProto declares; INVALID_ARGUMENT for a dtype or shape no tensor has."""
    if proto.dtype not in _VALUE_FIELD:
        raise invalid(f"{what}: unsupported tensor dtype {types_pb2.DataType.Name(proto.dtype)}"
                      if proto.dtype in types_pb2.DataType.values() else f"{what}: unknown dtype {proto.dtype}")
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"{what}: a tensor's shape must be fully defined (unknown_rank is set)")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid(f"{what}: a tensor's shape must be fully defined: [{','.join(map(str, shape))}]")
    return shape, math.prod(shape)


def check_element_count(count: int, limit: int) -> None:
    """INVALID_ARGUMENT for a request of more tensor elements than `--max_request_elements`."""
    if count > limit:
        raise invalid(f"The request has {count} tensor elements, more than this server's limit of {limit} "
                      "per request (--max_request_elements): send it in smaller batches")


def to_ndarray(proto: tensor_pb2.TensorProto, what: str = "tensor") -> np.ndarray:
    """Decode a TensorProto as TensorFlow does: `tensor_content`, or a repeated `*_val` field that may be
    shorter than the shape (its last value repeats; none means zeros), never longer.

    Call `proto_shape` first to bound the element count: this allocates the declared size.
    """
    shape, count = proto_shape(proto, what)
    dtype = np_dtype(proto.dtype)
    if proto.tensor_content and proto.dtype != STRING:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise invalid(f"{what}: tensor_content has {len(proto.tensor_content)} bytes, shape "
                          f"[{','.join(map(str, shape))}] of {dtype_name(proto.dtype)} needs {count * dtype.itemsize}")
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    field = _VALUE_FIELD[proto.dtype]
    raw = getattr(proto, field)
    if proto.dtype == STRING:
        values = np.empty(len(raw), dtype=object)
        values[:] = list(raw)
    elif field == "half_val":  # the 16-bit patterns, in int32s
        values = np.asarray(raw, dtype=np.int64).astype(np.uint16).view(dtype)
    elif dtype.kind == "c":  # (real, imaginary) pairs
        values = np.asarray(raw, dtype=np.float32 if dtype.itemsize == 8 else np.float64)
        values = values[:len(values) // 2 * 2].view(dtype)
    elif dtype.kind in "iu":
        values = np.asarray(raw, dtype=np.uint64 if field == "uint64_val" else np.int64).astype(dtype)
    else:
        values = np.asarray(raw, dtype=dtype)
    if len(values) > count:
        raise invalid(f"{what}: {len(values)} values in {field} for shape [{','.join(map(str, shape))}] "
                      f"of {count} elements")
    if len(values) == count:
        return values.reshape(shape)
    array = np.empty(count, dtype=dtype)
    array[:len(values)] = values
    array[len(values):] = values[-1] if len(values) else (b"" if proto.dtype == STRING else 0)
    return array.reshape(shape)


def to_tensor_proto(array: np.ndarray, dtype_enum: int | None = None, *,
                    as_content: bool = False) -> tensor_pb2.TensorProto:
    """Encode an array as TF Serving encodes a response tensor: strings in `string_val`; numbers in their
    repeated `*_val` field (TensorFlow's AsProtoField), or, with `as_content`
    (--enable_serialization_as_tensor_content), as raw bytes in `tensor_content` (AsProtoTensorContent)."""
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
        )
    )
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
        return proto
    # A TF1 variable's output is declared as its reference type (DT_FLOAT_REF = DT_FLOAT + 100): the value's
    # type is the base one, as TensorFlow writes it.
    dtype_enum = dtype_enum - 100 if dtype_enum and dtype_enum > 100 else dtype_enum
    proto.dtype = dtype_enum or tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    array = np.ascontiguousarray(array, dtype=np_dtype(proto.dtype))
    if as_content:
        proto.tensor_content = array.tobytes()
        return proto
    field = _VALUE_FIELD[proto.dtype]
    if field == "half_val":  # the 16-bit patterns, in int32s
        values = array.view(np.uint16).ravel()
    elif array.dtype.kind == "c":  # (real, imaginary) pairs
        values = array.view(np.float32 if array.dtype.itemsize == 8 else np.float64).ravel()
    else:
        values = array.ravel()
    getattr(proto, field).extend(values.tolist())
    return proto


# --- REST: JSON <-> numpy ----------------------------------------------------------------------

def loads(body: bytes) -> Any:
    """Parse a request body; NaN, Infinity and -Infinity are accepted as TF Serving accepts them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise invalid("JSON Parse error: the body is nested too deeply") from None


def count_elements_bound(body: bytes) -> int:
    """An upper bound of the numbers or strings a JSON body holds (every value but the first follows a
    comma), read before parsing: a body must not be turned into more Python objects than the limit."""
    return body.count(b",") + 1


# The characters of JSON numbers, and the whitespace between tokens: what is left of a body without them is
# its structure (brackets, braces, commas, keys).
_NUMBER_AND_SPACE = b"0123456789.eE+- \t\r\n"


def numeric_predict_body(body: bytes) -> tuple[str, str, np.ndarray] | None:
    """The common :predict body, parsed straight into one float64 array: ("instances" or "inputs",
    signature_name, array) for `{"instances"|"inputs": <regular nested array of numbers>}`, optionally with
    a string "signature_name"; None for any other body, which the general path (`loads` + `from_json`)
    then parses, answering its errors.

    simdjson parses the body and copies the numbers into one buffer: no Python list or float is made per
    element, which is what costs orjson + numpy ~180 us on one 28x28 image (~30 us here) and fills the
    garbage collector's young generation. The shape is read along the first elements; that the array is
    regular with that shape (not ragged, nothing but numbers) is checked by comparing the body without
    number characters and whitespace to the structure that shape and those keys give, so the answer is
    the general path's exactly whenever this one gives one.
    """
    if b"\\" in body:  # an escape in a string: then its text need not be the one orjson writes below
        return None
    try:
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        keys = list(document.keys())
        tensor_keys = [k for k in keys if k in ("instances", "inputs")]
        if len(tensor_keys) != 1 or len(set(keys)) != len(keys) or not set(keys) <= {*tensor_keys, "signature_name"}:
            return None
        key = tensor_keys[0]
        signature_name = document.get("signature_name", "")
        array = document[key]
        if not isinstance(signature_name, str) or not isinstance(array, simdjson.Array):
            return None
        shape, first = [], array
        while isinstance(first, simdjson.Array):
            if not len(first):
                return None
            shape.append(len(first))
            first = first[0]
        if type(first) not in (int, float):  # b64 objects, strings, named inputs: leave before reading the body again
            return None
        structure = b",".join(orjson.dumps(k) + b":" + (_structure(tuple(shape)) if k == key else
                                                         orjson.dumps(signature_name)) for k in keys)
        if body.translate(None, _NUMBER_AND_SPACE) != b"{" + structure.translate(None, _NUMBER_AND_SPACE) + b"}":
            return None
        values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError):  # simdjson's errors: not this form
        return None
    return key, signature_name, values.reshape(shape)


def _structure(shape: tuple[int, ...]) -> bytes:
    """A regular nested array of `shape` with its numbers left out: (2, 1) -> b"[[],[]]"."""
    inner = _inner_structure(shape[1:]) if len(shape) > 1 else b""
    return b"[" + b",".join([inner] * shape[0]) + b"]"


@functools.lru_cache(maxsize=16)
def _inner_structure(shape: tuple[int, ...]) -> bytes:  # the inner levels repeat across requests
    return _structure(shape)


def is_b64(value: Any) -> bool:
    """True for TF Serving's binary value object {"b64": "..."}."""
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def decode_b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise invalid(f"'b64' value must be a string, got: {text!r:.60}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Unable to base64 decode: {text[:60]!r}") from None


def _strings(value: Any) -> Any:
    """Nested JSON strings / {"b64"} objects -> nested bytes."""
    if isinstance(value, list):
        return [_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    if is_b64(value):
        return decode_b64(value["b64"])
    raise invalid(f"JSON Value: {short(value)} Type: {_json_type(value)} is not of expected type: string")


def _json_type(value: Any) -> str:
    return {bool: "Bool", int: "Number", float: "Number", str: "String", list: "Array", dict: "Object"}.get(
        type(value), "Null")


def short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def from_json(value: Any, dtype_enum: int, what: str) -> np.ndarray:
    """A JSON value (number, bool, string, b64 object, nested lists) as an array of the signature's dtype."""
    if dtype_enum == STRING:
        decoded = _strings(value)
        try:
            array = np.array(decoded, dtype=object)
        except ValueError:
            raise invalid(f"{what}: ragged nested lists are not a tensor") from None
        if array.dtype != object or (array.ndim and any(isinstance(v, list) for v in array.ravel())):
            raise invalid(f"{what}: ragged nested lists are not a tensor")
        return array
    dtype = np_dtype(dtype_enum)
    if dtype.kind != "b" and isinstance(_first_leaf(value), bool):  # numpy would read true as 1
        raise _bad_numeric(value, dtype_enum, what)
    try:
        if dtype.kind == "f":
            return np.asarray(value, dtype=dtype)
        raw = np.asarray(value)
    except (ValueError, TypeError):
        raise _bad_numeric(value, dtype_enum, what) from None
    if raw.dtype.kind not in "biuf" or (dtype.kind == "b" and raw.dtype.kind != "b"):
        raise _bad_numeric(value, dtype_enum, what)
    if dtype.kind in "iu" and raw.dtype.kind == "f" and not np.all(np.mod(raw, 1) == 0):
        raise invalid(f"{what}: JSON Value: {short(value)} is not of expected type: {dtype_name(dtype_enum)}")
    return raw.astype(dtype, copy=False)


def _first_leaf(value: Any) -> Any:
    """The first scalar of nested lists (a cheap type check that keeps the hot path at one conversion)."""
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _bad_numeric(value: Any, dtype_enum: int, what: str):
    if isinstance(value, list) and _is_ragged(value):
        return invalid(f"{what}: ragged nested lists are not a tensor: {short(value)}")
    return invalid(f"{what}: JSON Value: {short(value)} is not of expected type: {dtype_name(dtype_enum)}")


def _is_ragged(value: Any) -> bool:
    """True when nested lists have different lengths at the same depth."""
    def shape(v: Any) -> tuple:
        if not isinstance(v, list):
            return ()
        inner = {shape(x) for x in v}
        if len(inner) > 1:
            raise ValueError
        return (len(v), *(inner.pop() if inner else ()))

    try:
        shape(value)
        return False
    except ValueError:
        return True


def to_json_value(array: np.ndarray, alias: str) -> Any:
    """An output array as JSON-ready lists; strings as text, or {"b64"} when the alias ends in `_bytes`."""
    if array.dtype == object or array.dtype.kind in "SU":
        if alias.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)  # noqa: E731
        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array


def dumps(payload: dict) -> bytes:
    """Serialize a response; non-finite floats are written as NaN/Infinity like TF Serving does."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(payload, default=_default).encode()


def dumps_checked(payload: dict, arrays: list[np.ndarray]) -> bytes:
    """`dumps`, but through the stdlib encoder when an array holds NaN or infinities (orjson writes null)."""
    for array in arrays:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            return json.dumps(payload, default=_default).encode()
    return dumps(payload)


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
