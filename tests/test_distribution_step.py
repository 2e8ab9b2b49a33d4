"""Sharded train steps on 8 host devices (layers/distribution/_step.py), against the one-device step.

JAX fixes its device count when it starts, so the scenarios run once in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=8` (tests/_sharded_scenarios.py) and print
their measurements as JSON; the rest of the suite keeps one device.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests._tolerances import tolerance

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The layouts written out by hand, in the order of the TransformerBlock's trainable variables.
PATHS = [
    "m/block/attention_norm/gamma",
    "m/block/attention_norm/beta",
    "m/block/attention/query/kernel",
    "m/block/attention/query/bias",
    "m/block/attention/key/kernel",
    "m/block/attention/key/bias",
    "m/block/attention/value/kernel",
    "m/block/attention/value/bias",
    "m/block/attention/attention_output/kernel",
    "m/block/attention/attention_output/bias",
    "m/block/mlp_norm/gamma",
    "m/block/mlp_norm/beta",
    "m/block/mlp_in/kernel",
    "m/block/mlp_in/bias",
    "m/block/mlp_out/kernel",
    "m/block/mlp_out/bias",
]
REPLICATED = [[]] * len(PATHS)
# FSDP, min_weight_size=64, 8 devices: each weight of >= 64 elements along its largest dimension 8 divides.
FSDP_SPECS = [[], [], ["batch"], [], ["batch"], [], ["batch"], [], [None, None, "batch"], [], [], []]
FSDP_SPECS += [[None, "batch"], [], ["batch"], []]
# The Megatron-style layout map of the scenario (heads and the MLP's hidden units over "model").
MODEL_SPECS = [[], [], [None, "model"], ["model"], [None, "model"], ["model"], [None, "model"], ["model"]]
MODEL_SPECS += [["model"], [], [], [], [None, "model"], ["model"], ["model"], []]
# FSDP over "batch" on top of that map: each weight of >= 64 elements gains "batch" on its largest unsplit dimension.
FSDP_MODEL_SPECS = [[], [], ["batch", "model"], ["model"], ["batch", "model"], ["model"], ["batch", "model"]]
FSDP_MODEL_SPECS += [
    ["model"],
    ["model", None, "batch"],
    [],
    [],
    [],
    ["batch", "model"],
    ["model"],
    ["model", "batch"],
    [],
]
SHARDED_KERNELS = {"bf16[16,4,4]": 3, "bf16[4,4,16]": 1, "bf16[16,32]": 1, "bf16[32,16]": 1}


@pytest.fixture(scope="module")
def scenarios():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "tests._sharded_scenarios"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("run", "specs"),
    [
        ("data_parallel", REPLICATED),
        ("fsdp", FSDP_SPECS),
        ("data_model_parallel", MODEL_SPECS),
        ("fsdp_model_parallel", FSDP_MODEL_SPECS),
    ],
)
def test_sharded_transformer_step_matches_one_device(scenarios, run, specs):
    transformer = scenarios["transformer"]
    assert scenarios["devices"] == 8 and transformer["paths"] == PATHS
    result = transformer[run]
    rtol, _ = tolerance("bfloat16")
    assert result["losses"] == pytest.approx(transformer["reference_losses"], rel=rtol)
    # Much closer in fact: only the order of the float32 gradient sums differs, and the dropout
    # masks are the one-device ones (other masks would move the loss by far more than this).
    assert result["losses"] == pytest.approx(transformer["reference_losses"], rel=1e-5)
    assert result["max_relative_weight_difference"] < rtol
    assert result["device_count"] == 8
    assert result["variable_specs"] == specs
    # The momentum slots mirror their variables; the counters are replicated.
    assert result["slot_specs"] == specs
    assert result["iterations_spec"] == []


def test_sharded_evaluation_matches_one_device(scenarios):
    transformer = scenarios["transformer"]
    rtol, _ = tolerance("bfloat16")
    assert transformer["data_parallel"]["eval_loss"] == pytest.approx(transformer["reference_eval_loss"], rel=rtol)


def test_fsdp_shards_hold_a_slice(scenarios):
    shapes = scenarios["transformer"]["fsdp"]["shard_shapes"]
    assert shapes[PATHS.index("m/block/mlp_in/kernel")] == [16, 4]  # (16, 32) over 8 devices on its second axis
    assert shapes[PATHS.index("m/block/attention/query/kernel")] == [2, 4, 4]
    assert shapes[PATHS.index("m/block/mlp_in/bias")] == [32]  # 32 elements: under min_weight_size


def test_fsdp_gathers_weights_in_bfloat16_after_the_cast_on_each_shard(scenarios):
    fsdp = scenarios["transformer"]["fsdp"]
    gathers = fsdp["partitioned_all_gathers"]
    # Every sharded kernel is gathered in bfloat16 for its products, and no weight is gathered in float32.
    for shape, count in SHARDED_KERNELS.items():
        assert gathers.count(shape) >= count, gathers
    float32_weights = {"f32" + shape[4:] for shape in SHARDED_KERNELS}
    assert not [g for g in gathers if g in float32_weights], gathers
    # On this CPU, XLA's float normalization then widens the bf16 collectives (its CPU collectives
    # have no bf16): the compiled program gathers the same bf16-rounded values as float32.
    assert all(g.startswith("f32") for g in fsdp["compiled_all_gathers"] if g[3:] in {s[4:] for s in SHARDED_KERNELS})


def test_model_parallel_shards_hold_a_slice(scenarios):
    shapes = scenarios["transformer"]["data_model_parallel"]["shard_shapes"]
    assert shapes[PATHS.index("m/block/attention/query/kernel")] == [16, 1, 4]  # 4 heads over 4 "model" devices
    assert shapes[PATHS.index("m/block/mlp_out/kernel")] == [8, 16]


def test_checkpoint_saved_on_2x4_restores_on_4x2(scenarios):
    checkpoint = scenarios["transformer"]["checkpoint"]
    assert checkpoint["saved_mesh"] == {"batch": 2, "model": 4}
    assert checkpoint["restored_mesh"] == {"batch": 4, "model": 2}
    assert checkpoint["bit_equal"] and checkpoint["leaves"] > 2 * len(PATHS)
    assert checkpoint["restored_specs"] == MODEL_SPECS
    assert checkpoint["restored_slot_specs"] == MODEL_SPECS
    # On 2 "model" devices each holds half of the heads.
    assert checkpoint["restored_shard_shapes"][PATHS.index("m/block/attention/query/kernel")] == [16, 2, 4]


@pytest.mark.parametrize("run", ["data_parallel", "fsdp"])
def test_float8_sharded_scales_are_global_and_identical_on_every_device(scenarios, run):
    float8 = scenarios["float8"]
    # Only device 6's rows hold the 40: a global max sees it, a mean of per-shard maxima would not.
    assert float8["input_amax"] == 40.0 and sorted(float8["shard_input_amaxes"])[-2] < 3.0
    state = float8["state"][run]
    assert len(state) == 12
    for name, entry in state.items():
        assert entry["spec"] == [] and entry["shards"] == 8 and entry["shards_identical"], name
        assert entry["sharded"] == pytest.approx(entry["single"], rel=1e-5), name
    history = state["f8/up/inputs_amax_history"]["sharded"]
    assert history[0] == 40.0 and history[2:] == [40.0, 40.0]  # three steps, newest at index 0
    assert state["f8/up/inputs_scale"]["sharded"] == pytest.approx(40.0 / 448.0)


def test_batch_normalization_statistics_are_those_of_the_global_batch(scenarios):
    statistics = scenarios["batch_statistics"]
    # moving mean and variance, and the dropout-free model's RNG-less state: replicated, as on one device
    assert statistics["count"] >= 2 and statistics["specs"] == [[]] * statistics["count"]
    assert statistics["max_relative_difference"] < 1e-5


def test_fit_with_a_distribution_trains_as_on_one_device(scenarios):
    fit = scenarios["fit"]
    np.testing.assert_allclose(fit["losses"], fit["single_losses"], rtol=1e-5)
    assert fit["losses"][-1] < fit["losses"][0]  # it trained
    assert fit["max_weight_difference"] < 1e-5
    assert fit["devices_per_weight"] == [8]  # the final state lives on the whole mesh, replicated
    # After a fit under DataParallel, the same model trains under FSDP: its first kernel (8 x 16)
    # is split over the batch axis along its larger dimension.
    assert fit["refit_kernel_spec"] == [None, "batch"]


def test_overflow_in_one_gradient_shard_skips_the_step_on_every_device(scenarios):
    loss_scale = scenarios["loss_scale"]
    finite = loss_scale["kernel_gradient_shards_finite"]
    # The overflow lives on the devices holding kernel column block 0 (model index 0: devices 0 and 4).
    assert {d for d, ok in finite.items() if not ok} == {"0", "4"}
    assert all(loss_scale["kernel_shards_unchanged_after_overflow"].values())
    assert loss_scale["bias_unchanged_after_overflow"]
    halved = loss_scale["initial_scale"] / 2
    assert loss_scale["loss_scale_per_device_after_overflow"] == [halved] * 8
    assert loss_scale["iterations_per_device_after_overflow"] == [0] * 8
    # The next, finite step updates every shard.
    assert all(loss_scale["kernel_shards_changed_after_finite_step"].values())
    assert loss_scale["iterations_after_finite_step"] == 1


def test_bad_sharded_input_names_the_value(scenarios):
    errors = scenarios["bad_input"]
    assert errors["indivisible_variable"].startswith(
        "ValueError: variable 'bad/odd/kernel': dimension 1 of shape (3, 6)"
    )
    assert "'model' (4 devices) does not divide" in errors["indivisible_variable"]
    assert errors["indivisible_batch"].startswith("ValueError: DataParallel: a batch of shape (5, 3) has 5 samples")
    assert "multiple of 2" in errors["indivisible_batch"]
    assert errors["wrong_device_count"].startswith("ValueError: DeviceMesh shape (3, 2) holds 6 devices, but 8")
    # fit checks array data before its first step: 20 samples in batches of 8 leave a batch of 4.
    assert errors["uneven_fit"].startswith(
        "ValueError: fit: the batch axis of DataParallel spans 8 devices, so every batch must divide by 8; "
        "20 samples in batches of 8 give the last batch of 4 samples."
    )
    assert errors["uneven_fit_left_the_kernel"]


# --- one device: what the step refuses or redoes (these need no second device) -----------------------


def _one_device_step(dist):
    import layers
    from layers import optimizers, training

    model = layers.Dense(8, name="d")
    model(np.ones((1, 6), np.float32))
    return training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=dist)


BATCH = (np.ones((4, 6), np.float32), np.zeros((4, 8), np.float32))


def test_a_donated_state_passed_again_is_refused_not_a_crash():
    from layers import distribution

    step = _one_device_step(distribution.DataParallel(distribution.DeviceMesh((1,), ("batch",))))
    old = step.init_state()
    new, _ = step.jitted(old, BATCH)
    with pytest.raises(ValueError, match=r"donated to an earlier step call.*pass the state that call returned"):
        step.jitted(old, BATCH)
    step.jitted(new, BATCH)  # the returned state still works


def test_an_edit_of_the_layout_map_reaches_the_jitted_step():
    from jax.sharding import PartitionSpec as P

    from layers import distribution

    layout = distribution.LayoutMap(distribution.DeviceMesh((1, 1), ("batch", "model")))
    layout["d/kernel"] = (None, "model")
    step = _one_device_step(distribution.ModelParallel(layout, batch_dim_name="batch"))
    state, _ = step.jitted(step.init_state(), BATCH)
    assert state.trainable[0].sharding.spec == P(None, "model")
    layout["d/kernel"] = ("model", None)
    state, _ = step.jitted(step.init_state(), BATCH)
    assert state.trainable[0].sharding.spec == P("model", None)  # not the layout the step first compiled
