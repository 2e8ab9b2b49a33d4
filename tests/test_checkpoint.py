"""Checkpoints (layers.training): every dtype's bits survive, structure and like= checks, atomic saves, layers."""

import json
import os
import struct
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers.training import (
    _checkpoint,
    checkpoint_metadata,
    restore_checkpoint,
    restore_layer,
    save_checkpoint,
    save_layer,
)

DTYPES = [
    "float32",
    "bfloat16",
    "float16",
    "float8_e4m3fn",
    "float8_e5m2",
    "int32",
    "uint32",
    "bool",
    "int8",
    "uint8",
    "int64",
    "float64",
    "float8_e4m3fnuz",  # no safetensors code: stored as U8 bytes, our record keeps the dtype
    "int4",
]
SHAPES = [(), (0,), (3, 0), (5, 7)]


def bits(array) -> bytes:
    """The raw bytes of an array: equal bytes mean equal bits, NaN payloads and -0.0 included."""
    array = np.asarray(array)
    return array.reshape(-1).view(np.uint8).tobytes() if array.size else b""


def all_bit_patterns(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    """Random bit patterns of `dtype` (NaNs with payloads, infinities, subnormals, -0.0 all occur)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.name == "int4":
        return rng.integers(-8, 8, size=shape).astype(dtype)
    raw = rng.integers(0, 256, size=(*shape, dtype.itemsize), dtype=np.uint8)
    return np.ascontiguousarray(raw).view(dtype).reshape(shape)


def nan_payloads() -> dict:
    """Hand-picked patterns a float conversion would change: quiet/signalling NaNs with payloads, -0.0."""
    return {
        "f32": np.array([0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000, 0x00000001], np.uint32).view(np.float32),
        "f16": np.array([0x7E01, 0xFC01, 0x7C01, 0x8000, 0x0001], np.uint16).view(np.float16),
        "bf16": np.array([0x7FC1, 0xFF81, 0x7F81, 0x8000, 0x0001], np.uint16).view(ml_dtypes.bfloat16),
        "e4m3": np.array([0x7F, 0xFF, 0x80, 0x01], np.uint8).view(ml_dtypes.float8_e4m3fn),
        "e5m2": np.array([0x7D, 0xFE, 0x80, 0x01], np.uint8).view(ml_dtypes.float8_e5m2),
    }


def assert_same_bits(restored, original):
    original = np.asarray(original)
    assert isinstance(restored, np.ndarray)
    assert restored.dtype == original.dtype and restored.shape == original.shape
    assert bits(restored) == bits(original)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_bit_exact_for_every_dtype_and_shape(tmp_path, dtype):
    tree = {f"s{i}": all_bit_patterns(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, tree)
    restored = restore_checkpoint(path)
    assert sorted(restored) == sorted(tree)
    for key in tree:
        assert_same_bits(restored[key], tree[key])


def test_nan_payloads_and_negative_zero_survive_from_jax_and_numpy(tmp_path):
    tree = nan_payloads()
    tree["jax"] = {k: jnp.asarray(v) for k, v in nan_payloads().items()}
    save_checkpoint(tmp_path / "c.ckpt", tree)
    restored = restore_checkpoint(tmp_path / "c.ckpt")
    for key, value in nan_payloads().items():
        assert_same_bits(restored[key], value)
        assert_same_bits(restored["jax"][key], value)


def test_structure_round_trips_without_like(tmp_path):
    tree = {
        "a": [np.float32(1.5), (np.int32(2), None, [])],
        "ints": {3: {"nested": (np.zeros((2,), np.float16),)}, 1: None},
        "none": None,
        "py": [1.25, 7, True],
    }
    save_checkpoint(tmp_path / "c.ckpt", tree)
    restored = restore_checkpoint(tmp_path / "c.ckpt")
    assert set(restored) == {"a", "ints", "none", "py"} and list(restored["ints"]) == [3, 1]
    assert type(restored["a"]) is list and type(restored["a"][1]) is tuple
    assert restored["a"][1][1] is None and restored["a"][1][2] == [] and restored["none"] is None
    assert type(restored["ints"][3]["nested"]) is tuple and restored["ints"][1] is None
    assert_same_bits(restored["a"][0], np.float32(1.5))
    assert_same_bits(restored["ints"][3]["nested"][0], np.zeros((2,), np.float16))
    # Python numbers are saved as NumPy would convert them.
    for value, back in zip(tree["py"], restored["py"], strict=True):
        assert_same_bits(back, np.asarray(value))


def test_a_single_array_and_an_empty_tree(tmp_path):
    save_checkpoint(tmp_path / "one.ckpt", np.arange(3, dtype=np.int32))
    assert_same_bits(restore_checkpoint(tmp_path / "one.ckpt"), np.arange(3, dtype=np.int32))
    save_checkpoint(tmp_path / "empty.ckpt", {})
    assert restore_checkpoint(tmp_path / "empty.ckpt") == {}


def test_variables_are_saved_from_storage_not_through_the_autocast_read(tmp_path):
    raw = np.array([1.0 + 2.0**-20, -3.0], np.float32)  # bfloat16 would round the first value
    variable = dp.Variable(raw, name="w")
    with dp.autocast_scope("bfloat16"):
        assert variable.value.dtype == jnp.bfloat16
        save_checkpoint(tmp_path / "c.ckpt", {"w": variable})
    assert_same_bits(restore_checkpoint(tmp_path / "c.ckpt")["w"], raw)


def test_typed_prng_keys_round_trip(tmp_path):
    key = jax.random.split(jax.random.key(3), 2)
    save_checkpoint(tmp_path / "c.ckpt", {"key": key, "raw": jax.random.key_data(key)})
    restored = restore_checkpoint(tmp_path / "c.ckpt")
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    assert str(jax.random.key_impl(restored["key"])) == str(jax.random.key_impl(key))
    assert bits(jax.random.key_data(restored["key"])) == bits(jax.random.key_data(key))
    assert_same_bits(restored["raw"], jax.random.key_data(key))


def test_metadata_round_trips_and_numpy_scalars_become_json_numbers(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"x": np.zeros(1)}, metadata={"step": np.int64(12), "note": "é", "lr": 0.5})
    assert checkpoint_metadata(tmp_path / "c.ckpt") == {"step": 12, "note": "é", "lr": 0.5}
    save_checkpoint(tmp_path / "d.ckpt", {"x": np.zeros(1)})
    assert checkpoint_metadata(tmp_path / "d.ckpt") is None


def test_the_file_is_a_safetensors_file_read_by_hand(tmp_path):
    """The layout written out (8-byte length, JSON header, raw bytes), read with struct and json only."""
    value = np.array([[1.0, -2.0]], ml_dtypes.bfloat16)
    save_checkpoint(tmp_path / "c.ckpt", {"w": value, "n": np.int32(5)})
    data = (tmp_path / "c.ckpt").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0
    header = json.loads(data[8 : 8 + length])
    assert header["['w']"]["dtype"] == "BF16" and header["['w']"]["shape"] == [1, 2]
    begin, end = header["['w']"]["data_offsets"]
    assert data[8 + length + begin : 8 + length + end] == bits(value)
    assert header["['n']"]["dtype"] == "I32" and header["['n']"]["shape"] == []
    assert header["__metadata__"]["format"] == "dtypepolicy.checkpoint"
    assert all(isinstance(v, str) for v in header["__metadata__"].values())  # safetensors wants str -> str


# --- like= -------------------------------------------------------------------------------


class Slots(NamedTuple):
    count: np.ndarray
    mu: dict


def test_like_restores_namedtuples_and_checks_shapes_with_shape_dtype_structs(tmp_path):
    state = Slots(np.int32(4), {"w": np.ones((2, 3), np.float32)})
    save_checkpoint(tmp_path / "c.ckpt", state)
    with pytest.raises(ValueError, match=r"holds a .*Slots at <root>.*pass like="):
        restore_checkpoint(tmp_path / "c.ckpt")
    like = Slots(jax.ShapeDtypeStruct((), jnp.int32), {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)})
    restored = restore_checkpoint(tmp_path / "c.ckpt", like=like)
    assert type(restored) is Slots
    assert_same_bits(restored.count, np.int32(4))
    assert_same_bits(restored.mu["w"], np.ones((2, 3), np.float32))


def test_like_mismatches_name_the_key_path_and_both_sides(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match=r"\['a'\]: the checkpoint holds float32\[2,3\], like= expects float32\[3,2\]"):
        restore_checkpoint(tmp_path / "c.ckpt", like={"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.int32)})
    with pytest.raises(
        ValueError, match=r"\['a'\]: the checkpoint holds float32\[2,3\], like= expects bfloat16\[2,3\]"
    ):
        restore_checkpoint(tmp_path / "c.ckpt", like={"a": jnp.zeros((2, 3), jnp.bfloat16), "b": np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match=r"\['c'\]: like= has float32\[1\], the checkpoint has no such entry"):
        restore_checkpoint(
            tmp_path / "c.ckpt",
            like={"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.int32), "c": np.zeros(1, np.float32)},
        )
    with pytest.raises(ValueError, match=r"\['b'\]: the checkpoint holds int32\[4\], like= has no such entry"):
        restore_checkpoint(tmp_path / "c.ckpt", like={"a": np.zeros((2, 3), np.float32)})


def test_like_accepts_variables_and_python_numbers(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"w": np.full((2,), 3.0, np.float32), "lr": 0.1})
    restored = restore_checkpoint(tmp_path / "c.ckpt", like={"w": dp.Variable(np.zeros(2, np.float32)), "lr": 0.0})
    assert_same_bits(restored["w"], np.full((2,), 3.0, np.float32))
    assert_same_bits(restored["lr"], np.asarray(0.1))


# --- bad input and damaged files -----------------------------------------------------------


def test_missing_and_damaged_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt' does not exist"):
        restore_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        restore_checkpoint(tmp_path)
    (tmp_path / "junk").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match=r"is not a dtypepolicy\.checkpoint file"):
        restore_checkpoint(tmp_path / "junk")
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="shorter than its header"):
        restore_checkpoint(tmp_path / "short")

    save_checkpoint(tmp_path / "c.ckpt", {"w": np.arange(64, dtype=np.float32)})
    data = (tmp_path / "c.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"is truncated: the bytes of \['w'\]"):
        restore_checkpoint(tmp_path / "cut.ckpt")
    (tmp_path / "cut_header.ckpt").write_bytes(data[:20])
    with pytest.raises(ValueError, match="truncated or not a checkpoint"):
        restore_checkpoint(tmp_path / "cut_header.ckpt")
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    (tmp_path / "flip.ckpt").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"is corrupt: the bytes of \['w'\] do not match their CRC-32"):
        restore_checkpoint(tmp_path / "flip.ckpt")


def test_bad_save_input_raises_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match=r"leaf at \['s'\] has dtype <U3"):
        save_checkpoint(tmp_path / "c.ckpt", {"s": np.array(["abc"])})
    with pytest.raises(TypeError, match=r"leaf at \['o'\] has dtype object, which has no raw numeric form"):
        save_checkpoint(tmp_path / "c.ckpt", {"o": object()})
    with pytest.raises(
        TypeError, match=r"metadata must be JSON-serializable, received \{'f': <built-in function print>\}"
    ):
        save_checkpoint(tmp_path / "c.ckpt", {"x": np.zeros(1)}, metadata={"f": print})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "no_dir" / "c.ckpt", {"x": np.zeros(1)})
    with pytest.raises(ValueError, match="is a directory; expected a file name"):
        save_checkpoint(tmp_path, {"x": np.zeros(1)})
    assert os.listdir(tmp_path) == []


def test_saving_a_traced_value_is_a_clear_error(tmp_path):
    @jax.jit
    def inside(x):
        save_checkpoint(tmp_path / "c.ckpt", {"x": x})
        return x

    with pytest.raises(TypeError, match=r"leaf at \['x'\] is a value traced by JAX"):
        inside(jnp.zeros(2))
    assert os.listdir(tmp_path) == []


# --- atomicity -----------------------------------------------------------------------------


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    old = {"w": all_bit_patterns("bfloat16", (4, 4), seed=1)}
    save_checkpoint(path, old)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"w": np.zeros((4, 4), ml_dtypes.bfloat16), "extra": np.ones(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.ckpt"]  # the temporary file is gone too
    assert_same_bits(restore_checkpoint(path)["w"], old["w"])


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.ckpt"
    old = {"w": all_bit_patterns("float16", (8,), seed=2)}
    save_checkpoint(path, old)
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from layers.training import _checkpoint
        _checkpoint.os.fsync = lambda fd: os._exit(3)  # dies after writing, before the rename
        _checkpoint.save_checkpoint({str(path)!r}, {{"w": np.zeros(8, np.float16)}})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert_same_bits(restore_checkpoint(path)["w"], old["w"])
    leftovers = [name for name in os.listdir(tmp_path) if name != "c.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".c.ckpt.") and leftovers[0].endswith(".tmp")


def test_the_file_gets_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.ckpt", {"a": np.zeros(3)})
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "c.ckpt").st_mode & 0o777 == 0o644


def test_overwriting_replaces_the_whole_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"a": np.zeros(3), "b": np.ones(2)})
    save_checkpoint(tmp_path / "c.ckpt", {"a": np.ones(3)})
    restored = restore_checkpoint(tmp_path / "c.ckpt")
    assert list(restored) == ["a"]
    assert_same_bits(restored["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["c.ckpt"]


# --- layers --------------------------------------------------------------------------------


def make_model(policy: str, width: int = 8) -> layers.Sequential:
    return layers.Sequential(
        [
            layers.Dense(width, name="dense"),
            layers.BatchNormalization(name="norm"),
            layers.Dropout(0.5, seed=5, name="drop"),
        ],
        dtype=policy,
        name="model",
    )


def storage_bits(model) -> dict:
    return {v.path: (v.dtype, v.shape, bits(v._read_storage())) for v in model.variables}


def perturb(model, seed: int = 99):
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if variable.dtype == "uint32":
            variable.assign(rng.integers(0, 2**32, size=variable.shape, dtype=np.uint32))
        else:
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_restored_layer_equals_the_saved_one_and_its_next_call_is_bit_identical(tmp_path, policy):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32))
    model = make_model(policy)
    model(x, training=True)  # moves the BatchNormalization statistics and the Dropout seed off their initial values
    saved = storage_bits(model)
    assert {path.rsplit("/", 1)[1] for path in saved} >= {"moving_mean", "moving_variance", "seed_generator_state"}
    save_layer(tmp_path / "m.ckpt", model)

    reference = model(x, training=True)  # the call an uninterrupted run makes next
    after_reference = storage_bits(model)
    perturb(model)
    assert storage_bits(model) != saved
    restore_layer(tmp_path / "m.ckpt", model)
    assert storage_bits(model) == saved
    assert reference.dtype == jnp.dtype(policy.split("_")[1])
    assert bits(model(x, training=True)) == bits(reference)
    assert storage_bits(model) == after_reference


def test_restore_layer_in_a_fresh_process_is_bit_identical(tmp_path):
    """Saved here, restored into a model built the same way in a new interpreter; its next call matches."""
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    tree = {dtype: all_bit_patterns(dtype, (3, 2), seed=7) for dtype in DTYPES} | {"nan": nan_payloads()}
    save_checkpoint(tmp_path / "t.ckpt", tree)
    model = make_model("mixed_bfloat16")
    model(jnp.asarray(x), training=True)
    save_layer(tmp_path / "m.ckpt", model)
    expected = bits(model(jnp.asarray(x), training=True))
    script = textwrap.dedent(
        f"""
        import json, numpy as np, jax.numpy as jnp, layers
        from layers.training import restore_checkpoint, restore_layer
        flat = lambda a: np.asarray(a).reshape(-1).view(np.uint8).tobytes().hex() if np.asarray(a).size else ""
        tree = restore_checkpoint({str(tmp_path / "t.ckpt")!r})
        leaves = {{k: [str(v.dtype), list(v.shape), flat(v)] for k, v in tree.items() if k != "nan"}}
        leaves |= {{"nan/" + k: [str(v.dtype), list(v.shape), flat(v)] for k, v in tree["nan"].items()}}
        model = layers.Sequential(
            [layers.Dense(8, name="dense"), layers.BatchNormalization(name="norm"),
             layers.Dropout(0.5, seed=5, name="drop")],
            dtype="mixed_bfloat16", name="model")
        x = jnp.asarray(np.frombuffer(bytes.fromhex({x.tobytes().hex()!r}), np.float32).reshape({x.shape}))
        model(x)  # builds; inference leaves the state alone, restore_layer then overwrites all of it
        restore_layer({str(tmp_path / "m.ckpt")!r}, model)
        print(json.dumps({{"leaves": leaves, "call": flat(model(x, training=True))}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    mine = {k: [str(v.dtype), list(v.shape), bits(v).hex()] for k, v in tree.items() if k != "nan"}
    mine |= {"nan/" + k: [str(v.dtype), list(v.shape), bits(v).hex()] for k, v in tree["nan"].items()}
    assert report["leaves"] == mine
    assert report["call"] == expected.hex()


def test_restore_layer_mismatches_name_the_path_and_change_nothing(tmp_path):
    x = jnp.ones((2, 5))
    model = make_model("mixed_bfloat16")
    model(x)
    save_layer(tmp_path / "m.ckpt", model)

    wider = make_model("mixed_bfloat16", width=6)
    wider(x)
    untouched = storage_bits(wider)
    with pytest.raises(
        ValueError,
        match=r"\['model/dense/kernel'\]: the checkpoint holds float32\[5,8\], layer 'model' expects float32\[5,6\]",
    ):
        restore_layer(tmp_path / "m.ckpt", wider)
    assert storage_bits(wider) == untouched

    bigger = layers.Sequential([*make_model("mixed_bfloat16").layers, layers.Dense(3, name="head")], name="model")
    bigger(x)
    untouched = storage_bits(bigger)
    with pytest.raises(
        ValueError, match=r"\['model/head/kernel'\]: layer 'model' has float32\[8,3\], the checkpoint has no such entry"
    ):
        restore_layer(tmp_path / "m.ckpt", bigger)
    assert storage_bits(bigger) == untouched

    smaller = layers.Sequential([layers.Dense(8, name="dense")], name="model")
    smaller(x)
    untouched = storage_bits(smaller)
    with pytest.raises(
        ValueError,
        match=r"\['model/norm/moving_mean'\]: the checkpoint holds float32\[8\], layer 'model' has no such entry",
    ):
        restore_layer(tmp_path / "m.ckpt", smaller)
    assert storage_bits(smaller) == untouched

    renamed = layers.Sequential(make_model("mixed_bfloat16").layers, name="other")
    renamed(x)
    with pytest.raises(
        ValueError, match=r"\['other/dense/kernel'\]: layer 'other' has float32\[5,8\], the checkpoint has no such"
    ):
        restore_layer(tmp_path / "m.ckpt", renamed)


def test_layer_helpers_reject_unbuilt_layers_and_non_layers(tmp_path):
    with pytest.raises(ValueError, match=r"layer 'lazy' is not built.*call it once"):
        save_layer(tmp_path / "m.ckpt", layers.Dense(2, name="lazy"))
    with pytest.raises(ValueError, match=r"restore_layer: layer 'lazy' is not built"):
        restore_layer(tmp_path / "m.ckpt", layers.Dense(2, name="lazy"))
    with pytest.raises(TypeError, match=r"save_layer: expected a layers.Layer, received \{\} of type dict"):
        save_layer(tmp_path / "m.ckpt", {})
    assert os.listdir(tmp_path) == []


def test_save_layer_keeps_bool_and_bfloat16_state_exact(tmp_path):
    """State of any storage dtype added with add_state (here bool and bfloat16) restores exactly."""

    class Stateful(layers.Layer):
        def build(self, input_shape):
            self.flag = self.add_state(initializer="zeros", shape=(3,), dtype="bool", name="flag")
            self.scale = self.add_state(initializer="ones", shape=(2,), dtype="bfloat16", name="scale")

        def call(self, x):
            return x

    layer = Stateful(name="stateful")
    layer(jnp.ones((1, 2)))
    layer.flag.assign(np.array([True, False, True]))
    layer.scale.assign(nan_payloads()["bf16"][:2])
    saved = storage_bits(layer)
    save_layer(tmp_path / "s.ckpt", layer)
    layer.flag.assign(np.zeros(3, bool))
    layer.scale.assign(np.zeros(2, ml_dtypes.bfloat16))
    restore_layer(tmp_path / "s.ckpt", layer)
    assert storage_bits(layer) == saved
