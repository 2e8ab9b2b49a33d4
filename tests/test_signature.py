"""Call and build signature facts."""

from layers._signature import build_parameters, call_signature


def test_call_signature_facts():
    def call(self, inputs, training=True, mask=None):
        return inputs

    facts = call_signature(call)
    assert facts.accepts_training and facts.training_default is True and facts.accepts_mask
    assert not facts.accepts_var_keyword
    assert facts.bind((1,), {"mask": 2}) == {"inputs": 1, "mask": 2}

    def plain(self, x, **kwargs):
        return x

    facts = call_signature(plain)
    assert not facts.accepts_training and facts.training_default is None and facts.accepts_var_keyword


def test_build_parameters():
    def build(self, x_shape, y_shape=None, *rest, flag=False):
        pass

    assert build_parameters(build) == ("x_shape", "y_shape")
