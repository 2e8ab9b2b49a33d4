"""Sequential: a stack of layers, each called on the previous one's output."""

from __future__ import annotations

from typing import Any

from layers._base._layer import Layer
from layers._base._layer_serialization import deserialize, serialize


class Sequential(Layer):
    """Calls its layers in order; `training` and masks flow through the call pipeline.

    Sublayers made without their own `dtype` follow the Sequential's policy when it has an
    explicit one (a `DTypePolicyMap` is looked up with each sublayer's path). Layers taken from
    another model (`Sequential(old.layers)`) are shared and re-parented: they get this
    Sequential's paths and policy, and `old` reports the new paths too, so checkpoints keyed by
    path come from the model that owns the layers (see "Paths" in docs/layer.md).

    Args:
      layers: the layers, in call order.
      **kwargs: `name`, `dtype`, `trainable`, ... as for every layer.

    Example:
      >>> from layers import Layer, Sequential
      >>> class AddOne(Layer):
      ...     def call(self, x):
      ...         return x + 1
      >>> model = Sequential([AddOne(), AddOne()], dtype="mixed_bfloat16")
      >>> out = model(np.zeros((2,)))
      >>> out.dtype, out.tolist()
      (dtype(bfloat16), [2.0, 2.0])
    """

    def __init__(self, layers: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._layers = []
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        """The layers, in call order."""
        return list(self._layers)

    def add(self, layer: Layer) -> None:
        """Appends a layer; a built Sequential builds the new layer on its next call."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, received {layer!r} of type {type(layer).__name__}.")
        with self._unlocked():
            self._layers.append(layer)

    def pop(self) -> Layer:
        """Removes and returns the last layer."""
        if not self._layers:
            raise IndexError(f"Sequential {self.name!r} has no layers to pop.")
        return self._layers.pop()  # tracking follows the list: the layer and its weights leave

    def build(self, input_shape: Any = None) -> None:
        """Builds every layer in turn from the previous layer's output shape."""
        shape = input_shape
        for layer in self._layers:
            if shape is None:
                return  # unknown: the layers build on the first call instead
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs: Any, mask: Any = None) -> Any:
        """Runs the layers in order."""
        outputs = inputs
        for index, layer in enumerate(self._layers):
            outputs = layer(outputs, mask=mask) if index == 0 and mask is not None else layer(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        """The config of the stack: every layer's serialized config, in order."""
        base = {key: value for key, value in super().get_config().items() if key != "layers"}
        return {**base, "layers": [serialize(layer) for layer in self._layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, type] | None = None) -> Sequential:
        """Rebuilds the stack; `custom_objects` maps class names to classes for custom layers."""
        config = dict(config)
        layers = [deserialize(entry, custom_objects) for entry in config.pop("layers", [])]
        return cls(layers, **config)
