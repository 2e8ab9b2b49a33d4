"""DataParallel, FSDP and ModelParallel layouts (layers/distribution/_distributions.py), on one device.

On one device every mesh axis has size 1, which divides every dimension: the rules still choose
the same specs as on 8 devices (tests/test_distribution_step.py runs those).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import dtypepolicy as dp
import layers
from layers import optimizers, training
from layers.distribution import FSDP, DataParallel, DeviceMesh, LayoutMap, ModelParallel


def _variable(shape, **kwargs):
    return dp.Variable(jnp.zeros(shape), name="v", **kwargs)


def test_data_parallel_defaults_to_a_batch_axis_over_every_device():
    distribution = DataParallel()
    assert distribution.device_mesh.axis_names == ("batch",)
    assert distribution.device_mesh.size == len(jax.devices())
    assert distribution.batch_dim_name == "batch" and distribution.batch_size_multiple == 1
    assert distribution.get_data_layout((4, 3)).spec == P("batch")
    assert distribution.get_variable_layout(_variable((8, 8))).spec == P()
    assert repr(distribution) == "DataParallel(mesh={'batch': 1}, batch_dim_name='batch')"


def test_batch_dim_name_defaults_to_the_first_axis_and_is_checked():
    mesh = DeviceMesh((1, 1), ("data", "model"))
    assert DataParallel(mesh).batch_dim_name == "data"
    assert DataParallel(mesh, batch_dim_name=("data", "model")).get_data_layout((2,)).spec == P(("data", "model"))
    with pytest.raises(ValueError, match=r"DataParallel: batch_dim_name 'batch' is not an axis of the mesh"):
        DataParallel(mesh, batch_dim_name="batch")
    with pytest.raises(TypeError, match=r"batch_dim_name must be a mesh axis name or a tuple of them, received 3"):
        DataParallel(mesh, batch_dim_name=3)
    with pytest.raises(ValueError, match=r"DataParallel: pass device_mesh or devices, not both"):
        DataParallel(mesh, devices=jax.devices())
    with pytest.raises(TypeError, match=r"DataParallel expects a jax.sharding.Mesh .* received 'mesh'"):
        DataParallel("mesh")
    with pytest.raises(
        TypeError, match=r"FSDP: devices must be a list of jax devices \(jax.devices\(\)\), received 64"
    ):
        FSDP(devices=64)


def test_a_batch_array_needs_a_batch_dimension():
    with pytest.raises(ValueError, match=r"DataParallel: a batch array must have a batch dimension .* \(shape \(\)\)"):
        DataParallel().get_data_layout(())


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((3, 64), {}, P(None, "batch")),  # the largest dimension
        ((8, 8), {}, P("batch")),  # a tie: the first
        ((4, 4, 16), {}, P(None, None, "batch")),
        ((15,), {}, P()),  # under min_weight_size
        ((8, 8), {"trainable": False}, P()),  # statistics stay replicated
        ((8, 8), {"overwrite_with_gradient": True}, P()),  # float8 state stays replicated
    ],
)
def test_fsdp_shards_large_trainable_weights_along_their_largest_dimension(shape, kwargs, expected):
    distribution = FSDP(min_weight_size=16)
    assert distribution.get_variable_layout(_variable(shape, **kwargs)).spec == expected


def test_fsdp_leaves_integer_state_and_bad_minimum():
    seeds = dp.Variable(np.zeros((64,), np.uint32), name="seed", trainable=False)
    assert FSDP(min_weight_size=1).get_variable_layout(seeds).spec == P()
    with pytest.raises(ValueError, match=r"FSDP min_weight_size must be a non-negative int, received -1"):
        FSDP(min_weight_size=-1)


def _model():
    model = layers.Sequential([layers.Dense(8, name="dense"), layers.Dense(2, name="head")], name="m")
    model(np.ones((1, 3), np.float32))
    return model


def _layout_map(strict=True):
    layout_map = LayoutMap(DeviceMesh((1, 1), ("batch", "model")), strict=strict)
    layout_map[".*dense/kernel"] = (None, "model")
    return layout_map


def test_model_parallel_applies_the_map_and_replicates_the_rest():
    model = _model()
    layouts = ModelParallel(_layout_map()).variable_layouts(model.trainable_variables)
    assert [s.spec for s in layouts] == [P(None, "model"), P(), P(), P()]


def test_strict_layout_map_refuses_a_key_that_matches_nothing():
    layout_map = _layout_map()
    layout_map[".*dense/kernal"] = (None, "model")  # a typo
    model = _model()
    with pytest.raises(ValueError, match=r"LayoutMap keys \['\.\*dense/kernal'\] match no variable of the model"):
        ModelParallel(layout_map).variable_layouts(model.trainable_variables)
    # The same through make_train_step: init_state fails, nothing was placed.
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=ModelParallel(layout_map))
    with pytest.raises(ValueError, match=r"'m/dense/kernel'"):
        step.init_state()

    relaxed = _layout_map(strict=False)
    relaxed[".*dense/kernal"] = (None, "model")
    assert len(ModelParallel(relaxed).variable_layouts(model.trainable_variables)) == 4


def test_a_keras_style_key_is_told_that_keys_match_whole_paths():
    # Keras before 3.14 matched with re.search, so "dense/kernel" found "m/dense/kernel" there.
    layout_map = _layout_map()
    layout_map["dense/kernel"] = (None, "model")
    with pytest.raises(
        ValueError, match=r"a key must match a whole path \(re.fullmatch: 'dense/kernel' needs a leading"
    ):
        ModelParallel(layout_map).variable_layouts(_model().trainable_variables)


def test_float8_state_cannot_be_sharded_by_a_layout():
    model = layers.Dense(4, dtype="float8_from_float32", name="f8")
    model(np.ones((1, 4), np.float32))
    layout_map = LayoutMap(DeviceMesh((1, 1), ("batch", "model")))
    layout_map["f8/.*history"] = ("model",)
    with pytest.raises(
        ValueError, match=r"variable 'f8/inputs_amax_history' is overwrite-with-gradient state .* stays replicated"
    ):
        ModelParallel(layout_map).variable_layouts(model.trainable_variables)


def test_bad_arguments_name_the_value():
    with pytest.raises(
        TypeError, match=r"ModelParallel expects a layers.distribution.LayoutMap, received \{\} of type dict"
    ):
        ModelParallel({})
    with pytest.raises(TypeError, match=r"get_variable_layout expects a dtypepolicy Variable, received 3"):
        DataParallel().get_variable_layout(3)
    with pytest.raises(TypeError, match=r"distribution must be a layers.distribution.Distribution .* received 'dp'"):
        training.make_train_step(_model(), "mse", optimizers.SGD(0.1), distribution="dp")


def test_fsdp_on_top_of_a_layout_map_adds_the_batch_axis_to_an_unsplit_dimension():
    layout_map = LayoutMap(DeviceMesh((1, 1), ("batch", "model")))
    layout_map[".*wide"] = (None, "model")
    layout_map[".*small"] = ("model",)
    layout_map[".*taken"] = ("batch", None)
    distribution = FSDP(layout_map=layout_map, min_weight_size=16)
    assert distribution.device_mesh is layout_map.device_mesh and distribution.batch_dim_name == "batch"

    def spec(shape, name):
        return distribution.get_variable_layout(dp.Variable(jnp.zeros(shape), name=name)).spec

    assert spec((3, 64), "wide") == P("batch", "model")  # the map's axis kept, "batch" on the other dimension
    assert spec((8,), "small") == P("model")  # under min_weight_size: the map's layout alone
    assert spec((8, 8), "taken") == P("batch", None)  # the map already splits it over "batch"
    assert spec((8, 32), "other") == P(None, "batch")  # unmatched: FSDP alone


def test_fsdp_layout_map_arguments_are_checked():
    layout_map = LayoutMap(DeviceMesh((1, 1), ("batch", "model")))
    layout_map[".*kernal"] = (None, "model")
    with pytest.raises(ValueError, match=r"LayoutMap keys \['\.\*kernal'\] match no variable"):
        FSDP(layout_map=layout_map).variable_layouts(_model().trainable_variables)
    with pytest.raises(ValueError, match=r"FSDP: device_mesh \{'batch': 1\} is not the layout map's mesh"):
        FSDP(DeviceMesh((1,), ("batch",)), layout_map=layout_map)
    with pytest.raises(TypeError, match=r"FSDP layout_map must be a layers.distribution.LayoutMap, received \{\}"):
        FSDP(layout_map={})
