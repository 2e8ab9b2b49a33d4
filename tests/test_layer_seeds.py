"""The two examples of the Layer reference pages, as written there but for the imports."""

import numpy as np

import dtypepolicy as dp
from layers import Layer, ops


class SimpleDense(Layer):
    def __init__(self, units=32):
        super().__init__()
        self.units = units

    # Create the state of the layer (weights)
    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer="glorot_uniform",
            trainable=True,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.units,),
            initializer="zeros",
            trainable=True,
            name="bias",
        )

    # Defines the computation
    def call(self, inputs):
        return ops.matmul(inputs, self.kernel) + self.bias


class ComputeSum(Layer):
    def __init__(self, input_dim):
        super(ComputeSum, self).__init__()  # noqa: UP008 - as written on the reference page
        # Create a non-trainable weight.
        self.total = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="total",
        )

    def call(self, inputs):
        self.total.assign(self.total + ops.sum(inputs))
        return self.total


def test_simple_dense_seed():
    # Instantiates the layer.
    linear_layer = SimpleDense(4)

    # This will also call `build(input_shape)` and create the weights.
    y = linear_layer(ops.ones((2, 2)))
    assert len(linear_layer.weights) == 2

    # These weights are trainable, so they're listed in `trainable_weights`:
    assert len(linear_layer.trainable_weights) == 2

    kernel, bias = (np.asarray(w, np.float64) for w in linear_layer.get_weights())
    np.testing.assert_allclose(np.asarray(y), np.ones((2, 2)) @ kernel + bias, rtol=1e-6)
    assert y.shape == (2, 4) and linear_layer.kernel.path.endswith("/kernel")


def test_compute_sum_seed():
    my_sum = ComputeSum(2)
    x = ops.ones((2, 2))
    y = my_sum(x)

    assert my_sum.weights == [my_sum.total]
    assert my_sum.non_trainable_weights == [my_sum.total]
    assert my_sum.trainable_weights == []

    assert float(y) == 4.0
    assert float(my_sum(x)) == 8.0  # the running sum persists between calls


def test_compute_sum_tf_variant_with_assign_add():
    class ComputeSumAxis(Layer):
        def __init__(self, input_dim):
            super().__init__()
            self.total = dp.Variable(initializer=ops.zeros((input_dim,)), trainable=False)

        def call(self, inputs):
            self.total.assign_add(ops.sum(inputs, axis=0))
            return self.total

    my_sum = ComputeSumAxis(2)
    x = ops.ones((2, 2))
    np.testing.assert_array_equal(my_sum(x), [2.0, 2.0])
    np.testing.assert_array_equal(my_sum(x), [4.0, 4.0])
    assert my_sum.weights == [my_sum.total]
    assert my_sum.non_trainable_weights == [my_sum.total]
    assert my_sum.trainable_weights == []


def test_variable_examples_from_the_reference_page():
    from layers.initializers import Ones

    initial_array = np.ones((3, 3))
    variable_from_array = dp.Variable(initializer=initial_array)
    variable_from_initializer = dp.Variable(initializer=Ones(), shape=(3, 3), dtype="float32")
    new_value = np.zeros((3, 3), dtype="float32")
    variable_from_array.assign(new_value)
    non_trainable_variable = dp.Variable(initializer=np.ones((3, 3), dtype="float32"), trainable=False)

    np.testing.assert_array_equal(variable_from_array.numpy(), np.zeros((3, 3)))
    np.testing.assert_array_equal(variable_from_initializer.numpy(), np.ones((3, 3)))
    assert non_trainable_variable.trainable is False
    for variable in (variable_from_array, variable_from_initializer, non_trainable_variable):
        assert (variable.shape, variable.ndim, variable.dtype) == ((3, 3), 2, "float32")
        assert variable.autocast is True and variable.aggregation == "none"
        assert variable.name == "variable" and variable.path == "variable"
        assert variable.value.shape == (3, 3)
