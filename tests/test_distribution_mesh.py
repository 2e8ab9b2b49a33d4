"""DeviceMesh and the PartitionSpec checks (layers/distribution/_mesh.py), on this process's one device."""

import jax
import pytest
from jax.sharding import AbstractMesh, Mesh
from jax.sharding import PartitionSpec as P

from layers.distribution import DeviceMesh
from layers.distribution._mesh import check_spec_fits, partition_spec

# Only the axis sizes matter to the checks: an abstract 2x4 mesh needs no devices.
MESH_2X4 = AbstractMesh((2, 4), ("batch", "model"))


def test_device_mesh_is_jax_mesh_with_auto_axes():
    mesh = DeviceMesh((1, 1), ("batch", "model"))
    assert isinstance(mesh, Mesh)
    assert mesh.axis_names == ("batch", "model") and dict(mesh.shape) == {"batch": 1, "model": 1}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2  # GSPMD: XLA's partitioner communicates
    assert list(mesh.devices.flat) == jax.devices()[:1]


@pytest.mark.parametrize(
    ("shape", "names", "error", "message"),
    [
        ((2,), ("batch",), ValueError, r"DeviceMesh shape \(2,\) holds 2 devices, but 1 devices were given"),
        ((1,), ("batch", "model"), ValueError, r"shape \(1,\) must have one positive size per axis name"),
        ((1, 1), ("batch", "batch"), ValueError, r"axis_names must be distinct, received \('batch', 'batch'\)"),
        ((1,), (3,), TypeError, r"axis_names must be non-empty strings, received \(3,\)"),
        ("x", ("batch",), TypeError, r"shape must be a sequence of ints, received 'x'"),
        ((0,), ("batch",), ValueError, r"shape \(0,\) must have one positive size"),
    ],
)
def test_device_mesh_bad_input(shape, names, error, message):
    with pytest.raises(error, match=message):
        DeviceMesh(shape, names)


def test_partition_spec_accepts_specs_tuples_and_none():
    assert partition_spec(P(None, "model"), MESH_2X4, "x") == P(None, "model")
    assert partition_spec((("batch", "model"), None), MESH_2X4, "x") == P(("batch", "model"), None)
    assert partition_spec(["batch"], MESH_2X4, "x") == P("batch")
    assert partition_spec(None, MESH_2X4, "x") == P()


@pytest.mark.parametrize(
    ("layout", "error", "message"),
    [
        ((None, "tensor"), ValueError, r"names mesh axis 'tensor', which is not an axis of the mesh"),
        (("model", "model"), ValueError, r"uses mesh axis 'model' twice"),
        ((("batch", "model"), "batch"), ValueError, r"uses mesh axis 'batch' twice"),
        ((None, 3), TypeError, r"each entry of a layout is None, a mesh axis name or a tuple of them, received 3"),
        ("model", TypeError, r"a layout is a jax.sharding.PartitionSpec or a tuple .* received 'model' of type str"),
    ],
)
def test_partition_spec_bad_input_names_the_value(layout, error, message):
    with pytest.raises(error, match=message):
        partition_spec(layout, MESH_2X4, "LayoutMap['k']")


def test_spec_must_divide_the_shape():
    check_spec_fits(P(None, "model"), (3, 8), MESH_2X4, "variable 'k'")
    check_spec_fits(P(("batch", "model")), (16,), MESH_2X4, "variable 'k'")
    with pytest.raises(ValueError, match=r"variable 'k': dimension 1 of shape \(3, 6\) has size 6, which mesh axis"):
        check_spec_fits(P(None, "model"), (3, 6), MESH_2X4, "variable 'k'")
    with pytest.raises(ValueError, match=r"\('batch', 'model'\) \(8 devices\) does not divide"):
        check_spec_fits(P(("batch", "model")), (12,), MESH_2X4, "variable 'k'")
    with pytest.raises(ValueError, match=r"has 2 entries, more than the 1 dimensions of its shape \(8,\)"):
        check_spec_fits(P(None, "model"), (8,), MESH_2X4, "variable 'k'")


def test_a_mesh_with_explicit_axes_is_refused_with_the_fix():
    from layers.distribution import DataParallel

    explicit = jax.make_mesh((1,), ("batch",), axis_types=(jax.sharding.AxisType.Explicit,))
    with pytest.raises(
        ValueError, match=r"DataParallel: the mesh's axes \['batch'\] are not AxisType.Auto .*DeviceMesh"
    ):
        DataParallel(explicit)
