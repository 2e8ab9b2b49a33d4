"""Default layer names."""

import pytest

from layers._base._names import check_name, snake_case, unique_name


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [("Dense", "dense"), ("MultiHeadAttention", "multi_head_attention"), ("RMSNormalization", "rms_normalization")],
)
def test_snake_case(class_name, expected):
    assert snake_case(class_name) == expected


def test_unique_names_count_up_per_base():
    assert [unique_name("zz_test_base") for _ in range(3)] == ["zz_test_base", "zz_test_base_1", "zz_test_base_2"]
    assert unique_name("zz_other_base") == "zz_other_base"


@pytest.mark.parametrize("bad", ["a/b", "", 3, None])
def test_bad_names(bad):
    with pytest.raises(ValueError, match=f"received {bad!r}"):
        check_name(bad)
