"""Walking a model: sublayers(), summary(), and the warning for policy-map keys matching no layer."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers import Layer, UnmatchedPolicyKeyWarning
from layers._base._summary import summary_rows, summary_text
from tests._layers_for_tests import Linear


class Block(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = Linear(4, name="dense")
        self.norm = Linear(4, name="norm", dtype="float32")

    def call(self, x):
        return self.norm(self.dense(x))


class Model(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [Block(name="block_0"), Block(name="block_1")]
        self.head = Linear(2, name="head")
        self.tied = self.blocks[0].dense  # a second reference: listed once, where first met

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_sublayers_are_every_descendant_once_depth_first_in_tracking_order():
    model = Model(name="model")
    assert [layer.path for layer in model.sublayers()] == [
        "model/block_0",
        "model/block_0/dense",
        "model/block_0/norm",
        "model/block_1",
        "model/block_1/dense",
        "model/block_1/norm",
        "model/head",
    ]
    assert model.blocks[0].sublayers() == [model.blocks[0].dense, model.blocks[0].norm]
    assert Linear(2).sublayers() == []


def test_summary_lists_paths_classes_policies_params_and_outputs():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/head": "float32"})
    model = Model(name="model", dtype=policy_map)
    printed = []
    assert model.summary(print_fn=printed.append) is None
    text = "\n".join(printed)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:-2]}
    assert list(rows)[:2] == ["model", "model/block_0"] and len(rows) == 8
    assert rows["model/head"][1:5] == ["Linear", "float32", "float32/float32/float32", "0"]
    assert rows["model/head"][5:] == ["(unbuilt)", "-"]
    model(np.ones((3, 5), np.float32))
    text = summary_text(model)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:-2]}
    dense, norm, head = 5 * 4 + 4, 4 * 4 + 4, 4 * 2 + 2  # block_1's dense sees 4 features
    block_1 = (4 * 4 + 4) + norm
    assert rows["model/block_0/dense"][1:5] == ["Linear", "mixed_bfloat16", "float32/bfloat16/bfloat16", f"{dense}"]
    assert rows["model/block_0/dense"][5:] == ["(3,", "4)", "bfloat16"]
    assert rows["model/block_0"][4] == f"{dense + norm}"
    assert rows["model/block_1/norm"][5:] == ["(3,", "4)", "float32"]
    assert rows["model"][4] == f"{dense + norm + block_1 + head:,}"
    assert rows["model/head"][5:] == ["(3,", "2)", "float32"]
    total = dense + norm + block_1 + head
    assert text.splitlines()[-1] == f"Total params: {total:,} (trainable: {total:,}, non-trainable: 0)"
    assert text.splitlines()[0].split() == ["Path", "Class", "Policy", "Variable/compute/output", "Params", "Output"]


def test_summary_rows_are_plain_values_and_count_non_trainable_weights():
    model = layers.Sequential([Linear(2, name="lin"), layers.BatchNormalization(name="bn")], name="seq")
    model(jnp.ones((4, 3)))
    model.layers[1].trainable = False
    rows = summary_rows(model)
    assert [(row["path"], row["class"], row["params"]) for row in rows] == [
        ("seq", "Sequential", 8 + 8),
        ("seq/lin", "Linear", 8),
        ("seq/bn", "BatchNormalization", 8),
    ]
    assert rows[1]["output"] == (((4, 2), jnp.float32),)
    assert summary_text(model).splitlines()[-1] == "Total params: 16 (trainable: 8, non-trainable: 8)"


def test_summary_describes_several_outputs():
    class Pair(Layer):
        def call(self, x):
            return x, {"half": x[:1].astype(jnp.int32)}

    pair = Pair(name="pair")
    pair(jnp.ones((2, 3)))
    last = summary_text(pair).splitlines()[2]
    assert last.endswith("(2, 3) float32, (1, 3) int32")


def test_summary_calls_print_fn_once_per_line_and_prints_when_it_is_none(capsys):
    model = layers.Sequential([Linear(2, name="lin")], name="seq")
    model(jnp.ones((1, 3)))
    calls = []
    assert model.summary(print_fn=calls.append) is None  # as Keras: nothing returned to echo in a REPL
    assert len(calls) == 6 and all("\n" not in line for line in calls)  # header, rule, 2 rows, rule, totals
    assert calls[0].split() == ["Path", "Class", "Policy", "Variable/compute/output", "Params", "Output"]
    assert calls[2].split()[:2] == ["seq", "Sequential"] and calls[3].split()[:2] == ["seq/lin", "Linear"]
    assert calls[-1] == "Total params: 8 (trainable: 8, non-trainable: 0)"
    capsys.readouterr()
    assert model.summary(print_fn=None) is None
    assert capsys.readouterr().out == "\n".join(calls) + "\n"  # None means print, line by line
    model.summary()
    assert capsys.readouterr().out == "\n".join(calls) + "\n"


# ---------------------------------------------------------------- unmatched policy-map keys


def test_a_key_matching_no_layer_warns_once_and_names_the_closest_path():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/haed": "float32", "model/block_0/norm": "float32"})
    model = Model(name="model", dtype=policy_map)
    with pytest.warns(UnmatchedPolicyKeyWarning, match=r"'model/haed' \(did you mean 'model/head'\?\)") as record:
        model(np.ones((1, 5), np.float32))
    assert len(record) == 1
    assert "first called: 'model/haed' (did you mean 'model/head'?). Layers" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(np.ones((1, 5), np.float32))  # once only
    assert issubclass(UnmatchedPolicyKeyWarning, UserWarning)


def test_regex_keys_that_match_nothing_warn_and_matching_ones_do_not():
    model = Model(name="model", dtype=dp.DTypePolicyMap("mixed_bfloat16", {".*/norm": "float32"}))
    model(np.ones((1, 5), np.float32))  # matches: pytest turns any warning into an error
    unmatched = Model(name="model", dtype=dp.DTypePolicyMap("mixed_bfloat16", {".*/nrom": "float32"}))
    with pytest.warns(UnmatchedPolicyKeyWarning, match=r"'\.\*/nrom'"):
        unmatched(np.ones((1, 5), np.float32))


def test_policy_map_explain_walks_a_real_model():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/head": "float32"})
    model = Model(name="model", dtype=policy_map)
    explained = policy_map.explain(model)
    assert list(explained) == [model.path, *(layer.path for layer in model.sublayers())]
    assert explained["model/head"].key == "model/head" and explained["model/block_1"].key is None


def test_the_map_key_check_has_its_own_module_and_keeps_its_old_import_paths():
    from layers._base import _policy_key_check, _summary

    assert layers.UnmatchedPolicyKeyWarning is _policy_key_check.UnmatchedPolicyKeyWarning
    assert _summary.UnmatchedPolicyKeyWarning is _policy_key_check.UnmatchedPolicyKeyWarning
    assert _summary.warn_unmatched_keys is _policy_key_check.warn_unmatched_keys


def test_summary_with_a_print_fn_that_is_not_callable_is_a_type_error_naming_it():
    model = layers.Sequential([Linear(2, name="lin")], name="seq")
    with pytest.raises(TypeError, match=r"print_fn must be a callable \(called with each line\) or None, received 3"):
        model.summary(print_fn=3)
