"""layers: a Keras-style Layer API on top of the dtypepolicy engine.

The Layer base class and built-in layers arrive with the "Layer base class" and
"Built-in layers" issues; this package is shipped now so the distribution layout is final.
"""

__all__: list[str] = []
