"""LayoutMap (layers/distribution/_layout_map.py): regex keys to PartitionSpecs, checked when set."""

import pytest
from jax.sharding import PartitionSpec as P

from layers.distribution import DeviceMesh, LayoutMap


@pytest.fixture
def layout_map():
    return LayoutMap(DeviceMesh((1, 1), ("batch", "model")))


def test_exact_path_then_full_match_regex_then_none(layout_map):
    layout_map[".*dense.*/kernel"] = (None, "model")
    layout_map["model/dense_1/kernel"] = P("model", None)
    assert layout_map["model/dense_1/kernel"] == P("model", None)  # the exact key wins over the regex
    assert layout_map["model/dense/kernel"] == P(None, "model")
    assert layout_map["model/dense/bias"] is None  # no match: replicated
    # fullmatch, as DTypePolicyMap: "dense/kernel" alone does not match a longer path.
    layout_map["dense/kernel"] = ("model",)
    assert layout_map["encoder/dense/kernel"] == P(None, "model")


def test_two_matching_regexes_name_both(layout_map):
    layout_map[".*/kernel"] = (None, "model")
    layout_map["model/.*"] = ("model",)
    with pytest.raises(
        ValueError, match=r"'model/dense/kernel' matches more than one key: '\.\*/kernel' and 'model/\.\*'"
    ):
        layout_map["model/dense/kernel"]


def test_mapping_protocol(layout_map):
    layout_map["a/kernel"] = (None, "model")
    layout_map["b/.*"] = P("batch")
    assert len(layout_map) == 2 and list(layout_map) == ["a/kernel", "b/.*"]
    assert "a/kernel" in layout_map and "b/kernel" not in layout_map  # membership is by key, not by match
    assert layout_map.matching_keys("b/kernel") == ["b/.*"]
    assert layout_map.unmatched_keys(["a/kernel", "c/bias"]) == ["b/.*"]
    del layout_map["b/.*"]
    assert layout_map["b/kernel"] is None and len(layout_map) == 1
    assert "a/kernel" in repr(layout_map) and "strict=True" in repr(layout_map)


@pytest.mark.parametrize(
    ("key", "layout", "error", "message"),
    [
        (
            ".*/kernel",
            (None, "tensor"),
            ValueError,
            r"LayoutMap\['\.\*/kernel'\]: the layout \(None, 'tensor'\) names mesh axis 'tensor'",
        ),
        ("dense(/kernel", (None,), ValueError, r"LayoutMap key 'dense\(/kernel' is not a valid regex"),
        ("", (None,), TypeError, r"LayoutMap keys are variable paths or regexes \(non-empty str\), received ''"),
        (3, (None,), TypeError, r"received 3"),
        ("k", "model", TypeError, r"LayoutMap\['k'\]: a layout is a jax.sharding.PartitionSpec .* received 'model'"),
    ],
)
def test_bad_entries_are_refused_and_change_nothing(layout_map, key, layout, error, message):
    layout_map["kept"] = ("model",)
    with pytest.raises(error, match=message):
        layout_map[key] = layout
    assert list(layout_map) == ["kept"]


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match=r"LayoutMap expects a jax.sharding.Mesh .* received \(2, 4\) of type tuple"):
        LayoutMap((2, 4))
    with pytest.raises(TypeError, match=r"LayoutMap strict must be a bool, received 'yes'"):
        LayoutMap(DeviceMesh((1,), ("batch",)), strict="yes")
