"""Small layers the Layer tests share."""

from layers import Layer, ops


class Linear(Layer):
    """y = x @ kernel + bias, recording what it saw inside call."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        self.seen = {"input": inputs.dtype, "kernel": self.kernel.value.dtype}
        return ops.matmul(inputs, self.kernel) + self.bias


class Recorder(Layer):
    """Returns its input and records the training flag it received."""

    def call(self, inputs, training=None):
        self.training_seen = training
        return inputs


class TrainingDefaultTrue(Layer):
    def call(self, inputs, training=True):
        self.training_seen = training
        return inputs


class NoTrainingArg(Layer):
    """A middle layer whose call has no training argument."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs):
        return self.inner(inputs)


class Outer(Layer):
    """Runs two sublayers; the first one with an explicit training=False."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = Recorder()
        self.second = Recorder()

    def call(self, inputs, training=None):
        self.first(inputs, training=False)
        return self.second(inputs)
