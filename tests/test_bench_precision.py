"""The precision benchmark: its one-rounding floor, its gate, its baseline files and its arguments.

Never timings. The models are tiny (one Dense) so every test takes seconds.
"""

import argparse
import json

import numpy as np
import pytest

import layers
from benchmarks import _device, precision
from benchmarks.__main__ import parser

STORED = precision.BASELINES / "cpu.json"
CPU = _device.Device(platform="cpu", kind="cpu", count=1, host="test")


def _tiny(policy):
    return layers.Dense(4, dtype=policy)


def _tiny_inputs():
    return np.random.default_rng(3).normal(size=(8, 16)).astype(np.float32)


def _cli(tmp_path, *arguments):
    options = parser().parse_args(["precision", "--out", str(tmp_path / "out"), *arguments])
    return precision.main(options)


# --- the one-rounding floor on hand cases ----------------------------------------------------------


def test_round_to_rounds_to_nearest_even_in_each_type():
    # bfloat16 keeps 8 significant bits: 1 + 2**-8 is a tie (to 1, even), 1 + 3 * 2**-8 rounds up to 1 + 2**-6.
    assert precision.round_to(1 + 2.0**-8, "bfloat16")[()] == 1.0
    assert precision.round_to(1 + 3 * 2.0**-8, "bfloat16")[()] == 1 + 2.0**-6
    assert precision.round_to(1 + 2.0**-12, "float16")[()] == 1.0  # below half an ulp (2**-11) of float16
    assert precision.round_to(1 + 2.0**-30, "float32")[()] == 1.0
    with pytest.raises(ValueError, match=r"cannot round to 'tf64'"):
        precision.round_to(1.0, "tf64")


def test_a_one_element_product_has_the_floor_worked_out_by_hand():
    """x = 1 + 2**-9 rounds to 1 in bfloat16, the kernel 3 is exact: the product 3 is exact on the rounded
    input, so the floor is the input rounding alone, 2**-9 / (1 + 2**-9), and a one-rounding Dense hits it."""
    x = np.array([[1 + 2.0**-9]], np.float32)
    seed = next(s for s in range(100) if precision._cotangent((1, 1), s + 1)[0, 0] != 0)  # a non-zero cotangent
    result = precision.check(
        lambda p: layers.Dense(1, use_bias=False, dtype=p), x, ["mixed_bfloat16"], weights=[np.array([[3.0]])],
        bounded=precision.QUANTITIES, seed=seed,
    )  # fmt: skip
    rows = {row["quantity"]: row for row in result.rows}
    expected = 2.0**-9 / (1 + 2.0**-9)
    assert rows["output"]["floor"] == pytest.approx(expected, rel=1e-12)
    assert rows["output"]["error"] == pytest.approx(expected, rel=1e-12)
    # d kernel = cotangent * x: rounded x again (the cotangent, a multiple of 1/4, is exact);
    # d x = cotangent * 3: exact.
    assert rows["grad weights"]["floor"] == pytest.approx(expected, rel=1e-12)
    assert rows["grad inputs"]["floor"] == 0 and rows["grad inputs"]["error"] == 0
    assert rows["output"]["bound"] == pytest.approx(expected + precision.FLOAT32_ALLOWANCE)
    assert result.ok


def test_one_rounding_floor_of_a_value_rounded_once():
    # 3.03 in bfloat16: the neighbours are 3.015625 and 3.03125; the nearer is 3.03125.
    assert precision.one_rounding_floor([3.03], [3.03], "bfloat16") == pytest.approx((3.03125 - 3.03) / 3.03)
    assert precision.relative_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert precision.relative_error([0.0, 3.0], [0.0, 0.0]) == 3.0  # zero exact values: the absolute norm


@pytest.mark.parametrize("name", ["MultiHeadAttention", "LayerNormalization"])
def test_the_float64_formula_and_the_model_under_float64_agree(name):
    """The two oracles: the benchmark's own formula for a built-in layer, and the layer under the float64 policy
    (what `check` uses for a user's model). Normalization parameters are float32 under every policy, so the
    float64 model's gradients of them are float32-accurate only: that row is left out."""
    case = next(c for c in precision.cases("quick") if c.name == name)
    common = dict(weights=None, call_kwargs={}, bounded=(), quantizable=False, round_inputs=case.round_inputs,
                  forward_only=(), seed=5, group="t")  # fmt: skip
    formula = precision._rows_for(name, case.build, case.inputs, ["mixed_bfloat16"], reference=case.reference,
                                  **common)  # fmt: skip
    model = precision._rows_for(name, case.build, case.inputs, ["mixed_bfloat16"], reference=None, **common)
    assert [a["quantity"] for a in formula] == [b["quantity"] for b in model] == list(precision.QUANTITIES)
    for a, b in zip(formula, model, strict=True):
        if name == "LayerNormalization" and a["quantity"] == "grad weights":
            continue
        assert a["error"] == pytest.approx(b["error"], rel=1e-8)
        assert a["floor"] == pytest.approx(b["floor"], rel=1e-8)


# --- the gate --------------------------------------------------------------------------------------


def _row(error, floor, bounded=True, key="k"):
    bound = floor + precision.FLOAT32_ALLOWANCE if bounded else None
    return {"model": "m", "policy": "mixed_bfloat16", "quantity": "output", "error": error, "floor": floor,
            "bound": bound, "key": key}  # fmt: skip


def test_an_error_past_1_1_times_its_bound_fails_and_is_listed():
    floor = 2.0e-3
    bound = floor + precision.FLOAT32_ALLOWANCE
    rows = [_row(1.09 * bound, floor, key="a"), _row(1.11 * bound, floor, key="b"), _row(0.5, floor, False, "c")]
    precision._gate(rows, None)
    assert [row["status"] for row in rows] == ["ok (new)", "FAIL bound", "new"]
    result = precision.Result(rows)
    assert not result.ok and result.exit_code == 1 and result.failures == [rows[1]]
    text = result.render()
    assert text.splitlines()[-1].endswith("FAIL bound") and "1 failing row(s):" in text


def test_report_hooks_give_the_exit_code_and_name_the_failing_rows():
    floor = 2.0e-3
    rows = [_row(floor, floor, key="fine"), _row(2 * floor, floor, key="Dense | mixed_bfloat16 | output")]
    precision._gate(rows, None)
    result = {"rows": rows, "baseline_found": False}
    assert precision.exit_code(result) == 1
    assert precision.summary_lines(result)[0] == "Precision gate: 1 of 2 rows fail (Dense | mixed_bfloat16 | output)."
    assert "at 1.00-2.00x their floor" in precision.summary_lines(result)[1]
    result = {"rows": rows[:1], "baseline_found": False}
    assert precision.exit_code(result) == 0 and "no baseline for this device" in precision.summary_lines(result)[0]


def test_a_regression_past_the_baseline_fails_with_its_slack():
    baseline = {"a": 1e-3, "b": 1e-3, "c": 0.0, "d": 0.0}
    allowed = precision.BASELINE_FACTOR * 1e-3 + precision.BASELINE_FLOOR
    floor = precision.BASELINE_FLOOR
    rows = [_row(allowed * 0.999, 0, False, "a"), _row(allowed * 1.001, 0, False, "b"),
            _row(floor, 0, False, "c"), _row(2 * floor, 0, False, "d")]  # fmt: skip
    precision._gate(rows, baseline)
    assert [row["status"] for row in rows] == ["ok", "FAIL baseline", "ok", "FAIL baseline"]


def test_check_on_a_tiny_model_passes_its_own_baseline_and_fails_a_tighter_one(tmp_path):
    policies = ["float32", "mixed_bfloat16"]
    first = precision.check(_tiny, _tiny_inputs(), policies, bounded=precision.QUANTITIES, name="tiny")
    assert first.ok and {row["status"] for row in first.rows} == {"ok (new)"}
    path = precision.write_baseline(first.rows, tmp_path / "tiny.json")
    again = precision.check(_tiny, _tiny_inputs(), policies, baseline=path, name="tiny")
    assert again.exit_code == 0 and {row["status"] for row in again.rows} == {"ok"}
    tighter = {key: value / 2 for key, value in precision.load_baseline(path).items()}
    failed = precision.check(_tiny, _tiny_inputs(), policies, baseline=tighter, name="tiny")
    assert failed.exit_code == 1
    # The bf16 errors fail; float32 ones (~1e-7) may pass on the absolute floor of the slack.
    assert {row["policy"] for row in failed.failures} >= {"mixed_bfloat16"}


def test_the_command_passes_the_stored_baseline_and_fails_a_tighter_one(tmp_path):
    """The issue's gate test: the same run exits 0 against benchmarks/baselines/cpu.json and 1 against a
    baseline whose every entry is halved."""
    run = ("--quick", "--layers", "Dense", "--policies", "float32,mixed_bfloat16,float8_current_from_mixed_bfloat16")
    assert _cli(tmp_path, *run, "--baseline", str(STORED)) == 0
    stored = json.loads(STORED.read_text())
    stored["errors"] = {key: value / 2 for key, value in stored["errors"].items()}
    tighter = tmp_path / "tighter.json"
    tighter.write_text(json.dumps(stored))
    assert _cli(tmp_path, *run, "--baseline", str(tighter)) == 1
    written = json.loads((tmp_path / "out" / "precision.json").read_text())
    failing = [row for row in written["rows"] if row["status"] == "FAIL baseline"]
    assert {row["policy"] for row in failing} >= {"mixed_bfloat16", "float8_current_from_mixed_bfloat16"}
    assert (tmp_path / "out" / "precision.png").stat().st_size > 0
    assert written["device"]["slug"] and written["rows"][0]["key"].startswith("quick | Dense | float32")


def test_the_stored_baseline_covers_every_row_of_both_runs():
    errors = precision.load_baseline(STORED)
    for sizes in ("quick", "full"):
        names = [c.name for c in precision.cases(sizes)]
        if sizes == "quick":
            names = [n for n in names if n.split(" ")[0] in precision.QUICK_LAYERS or n in precision.QUICK_LAYERS]
        for name in names:
            for policy in precision.POLICIES:
                key = f"{sizes} | {name} | {policy} | output"
                quantized = policy.startswith(("float8", "int8"))
                unquantizable = name in ("LayerNormalization", "BatchNormalization", "Embedding", "Softmax")
                assert (key in errors) != (quantized and unquantizable), key


# --- baseline files --------------------------------------------------------------------------------


def test_baseline_round_trip_keeps_other_entries(tmp_path):
    path = tmp_path / "sub" / "b.json"
    precision.write_baseline([{"key": "x | a", "error": 1.5e-3}], path, "cpu")
    precision.write_baseline([{"key": "x | b", "error": 2.0e-7}, {"key": "x | a", "error": 1.25e-3}], path, "cpu")
    assert precision.load_baseline(path) == {"x | a": 1.25e-3, "x | b": 2.0e-7}
    assert json.loads(path.read_text())["device"] == "cpu"


def test_update_baseline_writes_the_file_and_the_run_passes_it(tmp_path):
    path = tmp_path / "new.json"
    run = ("--quick", "--layers", "Softmax", "--policies", "mixed_float16")
    assert _cli(tmp_path, *run, "--baseline", str(path), "--update-baseline") == 0
    assert set(precision.load_baseline(path)) == {
        "quick | Softmax | mixed_float16 | output", "quick | Softmax | mixed_float16 | grad inputs",
    }  # fmt: skip
    assert _cli(tmp_path, *run, "--baseline", str(path)) == 0


# --- bad arguments ---------------------------------------------------------------------------------


def test_an_unknown_policy_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"unknown policy 'mixed_bfloat61'"):
        precision.check(_tiny, _tiny_inputs(), ["float32", "mixed_bfloat61"])
    with pytest.raises(ValueError, match=r"unknown policy 'fp8'"):
        precision.run(None, policies="float32,fp8")
    with pytest.raises(ValueError, match=r"at least one policy, received \[\]"):
        precision.check(_tiny, _tiny_inputs(), [])


def test_a_missing_baseline_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match=rf"baseline file '{missing}' does not exist.*--update-baseline"):
        precision.check(_tiny, _tiny_inputs(), ["float32"], baseline=missing)
    options = argparse.Namespace(quick=True, policies="float32", layers="Dense", baseline=missing,
                                 update_baseline=False, seed=0, out=tmp_path)  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        precision.main(options)


def test_a_file_that_is_not_a_baseline_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"rows": []}')
    with pytest.raises(ValueError, match=r"other.json' is not a precision baseline"):
        precision.load_baseline(path)


def test_other_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"unknown layer 'Dens'"):
        precision.run(None, layers=["Dens"])
    with pytest.raises(ValueError, match=r"unknown quantity 'gradient'"):
        precision.check(_tiny, _tiny_inputs(), ["float32"], bounded=["gradient"])
    with pytest.raises(TypeError, match=r"build\(policy\) -> layers.Layer, received 3"):
        precision.check(3, _tiny_inputs(), ["float32"])
    with pytest.raises(TypeError, match=r"must return a layers.Layer for policy 'float32', received None"):
        precision.check(lambda policy: None, _tiny_inputs(), ["float32"])
    with pytest.raises(ValueError, match=r"2 float trainable weights, received 1 values"):
        precision.check(_tiny, _tiny_inputs(), ["float32"], weights=[np.ones((16, 4))])


def test_the_docstring_examples_run():
    import doctest

    assert doctest.testmod(precision).failed == 0


@pytest.mark.parametrize("algorithm", ["TF32_TF32_F32", "BF16_BF16_F32"])
def test_a_float32_policy_whose_products_are_not_float32_fails_its_bound(algorithm):
    """The float32 bound's allowance covers float32 accumulation only: TF32 or bf16 operands fail it widely."""
    result = precision.check(_tiny, _tiny_inputs(), ["float32", f"p=f32,dot={algorithm}"], bounded=precision.QUANTITIES)
    statuses = {(row["policy"], row["status"]) for row in result.rows}
    assert statuses == {("float32", "ok (new)"), (f"p=f32,dot={algorithm}", "FAIL bound")}
    assert min(row["error"] / row["bound"] for row in result.failures) > 10


# --- what a CI gate must not accept (review findings) ----------------------------------------------


def test_a_layer_measures_the_same_weights_alone_as_in_the_whole_run(tmp_path):
    # Seeds follow the case's name: a baseline of the whole run holds for a run of some layers.
    def rows(selected):
        result = precision.run(
            CPU, policies=("mixed_bfloat16",), layers=selected, baseline=tmp_path / f"{len(selected)}.json",
            create_baseline=True, workers=1,
        )  # fmt: skip
        return {row["key"]: row["error"] for row in result["rows"] if "Softmax" in row["key"]}

    assert rows(["Softmax"]) == rows(["Dense", "Softmax"])


def test_check_refuses_a_factory_that_ignores_its_policy():
    # The float64 oracle's build is the first to notice.
    with pytest.raises(ValueError, match=r"ignored its policy: build\('float64'\) returned a layer whose "
                       r"policy is 'float32'\. Pass the policy on"):  # fmt: skip
        precision.check(lambda policy: layers.Dense(4), _tiny_inputs(), ["float32", "mixed_bfloat16"])


def test_check_refuses_a_model_whose_output_is_random():
    def build(policy):
        return layers.Sequential([layers.Dense(8), layers.Dropout(0.5), layers.Dense(2)], dtype=policy)

    with pytest.raises(ValueError, match=r"deterministic model.*call_kwargs=\{'training': True\}"):
        precision.check(build, _tiny_inputs(), ["float32"], call_kwargs={"training": True})
    assert precision.check(build, _tiny_inputs(), ["float32"], call_kwargs={"training": False}).ok


def test_a_baseline_holding_none_of_the_rows_is_an_error(tmp_path):
    path = precision.write_baseline(precision.check(_tiny, _tiny_inputs(), ["float32"], name="tiny").rows,
                                    tmp_path / "b.json")  # fmt: skip
    with pytest.raises(ValueError, match=r"holds none of the 3 rows of model 'renamed'.*'check \| tiny \| float32"):
        precision.check(_tiny, _tiny_inputs(), ["float32"], baseline=path, name="renamed")


def test_check_takes_a_list_of_inputs_and_one_bounded_name():
    class Add(layers.Layer):
        def call(self, a, b):
            return a + b

    x = _tiny_inputs()
    result = precision.check(lambda policy: Add(dtype=policy), [x, 2 * x], ["float32"], bounded="output")
    assert result.ok and {row["quantity"] for row in result.rows} == {"output", "grad inputs"}


@pytest.mark.parametrize(
    ("model", "what"), [(layers.Dense(4), "a Dense layer"), (layers.Dense, "the layer class Dense")]
)
def test_check_refuses_a_layer_where_a_factory_is_expected(model, what):
    with pytest.raises(TypeError, match=rf"build\(policy\) -> layers.Layer .*received {what}; pass e.g."):
        precision.check(model, _tiny_inputs(), ["float32"])


def test_summary_gives_one_figure_when_every_ratio_is_the_same():
    assert precision._span([1.0, 1.001, 0.999]) == "1.00x"
    assert precision._span([1.17, 1.42, 1.3]) == "1.17-1.42x"
