"""Checkpoints of any pytree of arrays in one file, every dtype bit-exact, written atomically.

The file is a valid safetensors file (https://github.com/huggingface/safetensors):

    8 bytes   N, the header length, unsigned little-endian
    N bytes   UTF-8 JSON header, padded with spaces to a multiple of 8
    rest      every leaf's raw bytes (C order, little-endian), one after the other

The header maps each tensor name (the leaf's key path, `jax.tree_util.keystr`) to its safetensors
`dtype` code, `shape` and `data_offsets`, and holds our own record under `__metadata__`: the format
tag, the leaves in flattening order with their NumPy dtype names, shapes and CRC-32s, the tree's
structure (dicts, lists, tuples, None) and the caller's JSON metadata. A dtype without a
safetensors code (`float8_e4m3fnuz`, `int4`, ...) is stored as `U8` with one trailing axis of its
item size, so the file stays readable by other safetensors readers; our record keeps the real dtype.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import zlib
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16, float8_* with NumPy so np.dtype(name) finds them)
import numpy as np
from jax.tree_util import DictKey, SequenceKey, keystr

import dtypepolicy as dp

FORMAT = "dtypepolicy.checkpoint"
VERSION = 1

# NumPy dtype name -> safetensors dtype code.
_SAFETENSORS_CODES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "uint32": "U32",
    "int32": "I32",
    "uint64": "U64",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
_ROOT_NAME = "<root>"  # keystr(()) is "", an awkward tensor name


def _name(path: tuple) -> str:
    return keystr(path) or _ROOT_NAME


def _is_variable(node: Any) -> bool:
    return isinstance(node, dp.Variable)


def _describe(dtype: Any, shape: tuple) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


# --- saving ------------------------------------------------------------------------------


def _leaf_to_numpy(leaf: Any, name: str) -> tuple[np.ndarray, str | None, tuple[int, ...], str]:
    """(raw array, PRNG impl or None, logical shape, logical dtype name) of one leaf."""
    if isinstance(leaf, dp.Variable):
        leaf = leaf._read_storage()  # the stored bits; the autocast read would round them
    if isinstance(leaf, jax.core.Tracer):
        raise TypeError(
            f"save_checkpoint: the leaf at {name} is a value traced by JAX; expected concrete arrays. "
            f"Save outside jax.jit/grad/vmap, from the values the traced function returned."
        )
    impl = None
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(leaf))
        shape, dtype_name = tuple(leaf.shape), str(leaf.dtype)
        leaf = jax.random.key_data(leaf)
    try:
        array = np.asarray(leaf)
    except Exception as error:
        raise TypeError(
            f"save_checkpoint: cannot convert the leaf at {name} ({type(leaf).__name__}) to an array ({error}); "
            f"expected arrays, NumPy/Python numbers or dtypepolicy Variables."
        ) from None
    if array.dtype.kind in "OUSMm" or (array.dtype.kind == "V" and array.dtype.type.__module__ != "ml_dtypes"):
        raise TypeError(
            f"save_checkpoint: the leaf at {name} has dtype {array.dtype}, which has no raw numeric form; "
            f"expected a numeric or bool array."
        )
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = array.copy(order="C")  # not np.ascontiguousarray: it turns a 0-d array into 1-d
    if impl is None:
        shape, dtype_name = tuple(array.shape), array.dtype.name
    return array, impl, shape, dtype_name


def _structure(node: Any, path: tuple) -> dict:
    """A JSON record of plain containers; anything else is opaque (restorable only with like=)."""
    if node is None:
        return {"t": "none"}
    if type(node) is dict:
        if all(type(k) in (str, int) for k in node):
            return {"t": "dict", "items": [[k, _structure(v, (*path, DictKey(k)))] for k, v in node.items()]}
        return {"t": "opaque", "type": "dict with non-str/int keys", "at": _name(path)}
    if type(node) in (list, tuple):
        kind = "list" if type(node) is list else "tuple"
        return {"t": kind, "items": [_structure(v, (*path, SequenceKey(i))) for i, v in enumerate(node)]}
    leaves = jax.tree_util.tree_leaves(node, is_leaf=_is_variable)
    if len(leaves) == 1 and leaves[0] is node:
        return {"t": "leaf", "name": _name(path)}
    return {"t": "opaque", "type": f"{type(node).__module__}.{type(node).__qualname__}", "at": _name(path)}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray) and np.asarray(value).ndim == 0:
        return np.asarray(value).item()
    raise TypeError(f"{value!r} of type {type(value).__name__} is not JSON-serializable")


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """A new hidden file next to the target; mode 0o666 less the umask, as open() gives (mkstemp gives 0o600)."""
    while True:
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            ), temporary
        except FileExistsError:
            continue


def save_checkpoint(path: str | os.PathLike, tree: Any, metadata: Any = None) -> None:
    """Saves a pytree of arrays to the file `path`, every leaf's bits exact, atomically.

    Leaves may be JAX or NumPy arrays of any numeric or bool dtype (bfloat16, float16 and float8
    included), Python/NumPy numbers, typed PRNG keys, or `dtypepolicy.Variable`s (saved from their
    storage, never through the autocast read). `metadata` is any JSON-serializable value, read back
    with `checkpoint_metadata`. The file is written under a temporary name in the same directory
    and renamed over `path` only once complete, so a failed or interrupted save leaves any previous
    checkpoint at `path` as it was.

    Example:
        >>> import tempfile, os, numpy as np, jax.numpy as jnp
        >>> from layers.training import save_checkpoint, restore_checkpoint
        >>> path = os.path.join(tempfile.mkdtemp(), "state.ckpt")
        >>> save_checkpoint(path, {"w": jnp.ones((2,), jnp.bfloat16), "step": np.int32(7)})
        >>> restored = restore_checkpoint(path)
        >>> restored["w"].dtype, int(restored["step"])
        (dtype(bfloat16), 7)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"save_checkpoint: path {path!r} is a directory; expected a file name.")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save_checkpoint: the directory {directory!r} of {path!r} does not exist.")

    # Everything is converted and checked before the temporary file exists: bad input writes nothing.
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
    arrays, leaves, header, offset = [], [], {}, 0
    for key_path, leaf in flat:
        name = _name(key_path)
        if name in header:
            raise ValueError(f"save_checkpoint: two leaves share the key path {name}; expected distinct key paths.")
        array, impl, shape, dtype_name = _leaf_to_numpy(leaf, name)
        raw = array.reshape(-1).view(np.uint8) if array.size else np.zeros((0,), np.uint8)
        code = _SAFETENSORS_CODES.get(array.dtype.name)
        stored_shape = list(array.shape) if code else [*array.shape, array.dtype.itemsize]
        header[name] = {"dtype": code or "U8", "shape": stored_shape, "data_offsets": [offset, offset + raw.size]}
        entry = {"name": name, "dtype": dtype_name, "shape": list(shape), "crc32": zlib.crc32(raw)}
        if impl is not None:
            entry |= {"prng_impl": impl, "data_dtype": array.dtype.name, "data_shape": list(array.shape)}
        elif not code:
            entry["data_dtype"] = array.dtype.name
        leaves.append(entry)
        arrays.append(raw)
        offset += raw.size
    try:
        user = json.dumps(metadata, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"save_checkpoint: metadata must be JSON-serializable, received {metadata!r} ({error})."
        ) from None
    header["__metadata__"] = {
        "format": FORMAT,
        "version": str(VERSION),
        "leaves": json.dumps(leaves),
        "structure": json.dumps(_structure(tree, ())),
        "metadata": user,
    }
    encoded = json.dumps(header, ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)

    handle, temporary = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(struct.pack("<Q", len(encoded)))
            file.write(encoded)
            for raw in arrays:
                file.write(raw.data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- reading -----------------------------------------------------------------------------


def _read(path: str | os.PathLike, with_data: bool = True) -> tuple[dict, list[dict], bytearray]:
    """(our metadata record, leaf entries, data bytes) of a checkpoint file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"Checkpoint {path!r} {what}; expected a file written by save_checkpoint.")
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"Checkpoint {path!r} is not a checkpoint: {size} bytes, shorter than its header.")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise ValueError(
                f"Checkpoint {path!r} is truncated or not a checkpoint: its header claims {length} bytes, "
                f"the file has {size - 8} after the length."
            )
        try:
            header = json.loads(file.read(length).decode("utf-8"))
            record = header["__metadata__"]
            if record.get("format") != FORMAT:
                raise KeyError("format")
            leaves = json.loads(record["leaves"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(
                f"Checkpoint {path!r} is not a {FORMAT} file (a safetensors header with our __metadata__ record)."
            ) from None
        if int(record.get("version", 0)) > VERSION:
            raise ValueError(
                f"Checkpoint {path!r} has format version {record['version']}; this library reads up to {VERSION}."
            )
        data = bytearray(size - 8 - length if with_data else 0)
        file.readinto(data)
    for entry in leaves:
        tensor = header.get(entry["name"])
        if not isinstance(tensor, dict) or "data_offsets" not in tensor:
            raise ValueError(f"Checkpoint {path!r} is corrupt: its record lists {entry['name']}, its header does not.")
        entry["_offsets"] = tensor["data_offsets"]
    return record, leaves, data


def _load_leaf(path: str, entry: dict, data: bytearray) -> Any:
    name = entry["name"]
    begin, end = entry["_offsets"]
    if not 0 <= begin <= end <= len(data):
        raise ValueError(f"Checkpoint {path!r} is truncated: the bytes of {name} lie past the end of the file.")
    raw = np.frombuffer(data, np.uint8, count=end - begin, offset=begin) if end > begin else np.zeros(0, np.uint8)
    if zlib.crc32(raw) != entry["crc32"]:
        raise ValueError(f"Checkpoint {path!r} is corrupt: the bytes of {name} do not match their CRC-32.")
    data_dtype = np.dtype(entry.get("data_dtype", entry["dtype"]))
    data_shape = tuple(entry.get("data_shape", entry["shape"]))
    array = raw.view(data_dtype).reshape(data_shape) if raw.size else np.zeros(data_shape, data_dtype)
    if "prng_impl" in entry:
        return jax.random.wrap_key_data(array, impl=entry["prng_impl"])
    return array


def _expected_spec(leaf: Any) -> tuple[tuple[int, ...], str]:
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):  # Python numbers
        leaf = np.asarray(leaf)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return tuple(leaf.shape), str(leaf.dtype)
    return tuple(leaf.shape), np.dtype(leaf.dtype).name


def _rebuild(node: dict, by_name: dict[str, Any], path: str) -> Any:
    kind = node["t"]
    if kind == "none":
        return None
    if kind == "leaf":
        return by_name[node["name"]]
    if kind == "dict":
        return {k: _rebuild(v, by_name, path) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        items = [_rebuild(v, by_name, path) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    raise ValueError(
        f"Checkpoint {path!r} holds a {node['type']} at {node['at']}, which can only be rebuilt from its "
        f"type: pass like= (a tree of the same structure, e.g. the freshly initialized state)."
    )


def _restore(path: str | os.PathLike, like: Any, what: str) -> Any:
    """Restores against `like` (the structure, shapes and dtypes expected), checking every leaf first."""
    path = os.fspath(path)
    record, leaves, data = _read(path)
    entries = {entry["name"]: entry for entry in leaves}
    if like is None:
        return _rebuild(
            json.loads(record["structure"]), {n: _load_leaf(path, e, data) for n, e in entries.items()}, path
        )

    flat, treedef = jax.tree_util.tree_flatten_with_path(like, is_leaf=_is_variable)
    problems, names = [], []
    for key_path, leaf in flat:
        name = _name(key_path)
        names.append(name)
        shape, dtype = _expected_spec(leaf)
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{name}: {what} has {_describe(dtype, shape)}, the checkpoint has no such entry")
        elif (tuple(entry["shape"]), entry["dtype"]) != (shape, dtype):
            problems.append(
                f"{name}: the checkpoint holds {_describe(entry['dtype'], entry['shape'])}, "
                f"{what} expects {_describe(dtype, shape)}"
            )
    wanted = set(names)
    problems += [
        f"{name}: the checkpoint holds {_describe(e['dtype'], e['shape'])}, {what} has no such entry"
        for name, e in entries.items()
        if name not in wanted
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ValueError(f"Checkpoint {path!r} does not match {what}: {shown}.")
    return jax.tree_util.tree_unflatten(treedef, [_load_leaf(path, entries[name], data) for name in names])


def restore_checkpoint(path: str | os.PathLike, like: Any = None) -> Any:
    """Reads a checkpoint written by `save_checkpoint`; leaves come back as NumPy arrays, bits exact.

    Without `like`, the tree is rebuilt from its record (dicts, lists, tuples, None); other pytree
    nodes (NamedTuples such as optax states, custom classes) need `like`. With `like`, a tree of the
    expected structure (arrays, `jax.ShapeDtypeStruct`s or Variables as leaves), every leaf is
    checked against the checkpoint before any is read: a missing or extra key path, or a shape or
    dtype that differs, is a ValueError naming the key path and both sides; the result has `like`'s
    structure. Leaves are NumPy arrays (so int64/float64 survive with JAX's x64 off); typed PRNG keys
    come back as JAX key arrays.

    Example:
        >>> import tempfile, os, jax, numpy as np
        >>> from layers.training import save_checkpoint, restore_checkpoint
        >>> path = os.path.join(tempfile.mkdtemp(), "state.ckpt")
        >>> save_checkpoint(path, {"w": np.zeros((2, 3), np.float32)})
        >>> restore_checkpoint(path, like={"w": jax.ShapeDtypeStruct((2, 3), np.float32)})["w"].shape
        (2, 3)
    """
    return _restore(path, like, "like=")


def checkpoint_metadata(path: str | os.PathLike) -> Any:
    """The JSON metadata given to `save_checkpoint` (None when none was given), read without the arrays.

    Example:
      >>> import tempfile, os, numpy as np
      >>> from layers.training import save_checkpoint
      >>> path = os.path.join(tempfile.mkdtemp(), "state.ckpt")
      >>> save_checkpoint(path, {"w": np.zeros(2, np.float32)}, metadata={"epoch": 3})
      >>> checkpoint_metadata(path)
      {'epoch': 3}
    """
    record, _, _ = _read(path, with_data=False)
    return json.loads(record["metadata"])
