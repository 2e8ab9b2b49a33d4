"""The public face of `layers`: what `import layers` costs and what it exposes."""

import subprocess
import sys

import pytest

import layers


def test_importing_layers_does_not_import_the_training_extra():
    code = "import sys, layers; assert 'optax' not in sys.modules and 'rich' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_training_families_are_listed_and_an_unknown_name_is_a_clear_attribute_error():
    assert {"losses", "optimizers", "training"} <= set(dir(layers))
    with pytest.raises(AttributeError, match="module 'layers' has no attribute 'optimiser'"):
        _ = layers.optimiser
