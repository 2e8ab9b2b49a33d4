"""DTypePolicyMap: lookup order, ambiguity, immutability, configs."""

import pytest

import dtypepolicy as dp

BF16, F32, F16 = dp.DTypePolicy("bfloat16"), dp.DTypePolicy("float32"), dp.DTypePolicy("float16")


def make_map(default="mixed_bfloat16"):
    return dp.DTypePolicyMap(
        default,
        {"encoder/block_0/norm": "bfloat16", "encoder/.*/norm": "float32", "decoder/dense(_\\d+)?": F16},
    )


def test_exact_key_wins_over_regex():
    assert make_map()["encoder/block_0/norm"] == BF16


def test_regex_keys_fullmatch():
    policy_map = make_map()
    assert policy_map["encoder/block_7/norm"] == F32
    assert policy_map["decoder/dense_3"] == F16
    assert policy_map["decoder/dense"] == F16
    # fullmatch, not search: a prefix or suffix is not enough
    assert policy_map["decoder/dense_3/kernel"] == dp.DTypePolicy("mixed_bfloat16")
    assert policy_map["x/encoder/block_1/norm"] == dp.DTypePolicy("mixed_bfloat16")


def test_no_match_falls_back_to_default():
    assert make_map()["head"] == dp.DTypePolicy("mixed_bfloat16")


def test_none_default_is_resolved_at_lookup_time():
    policy_map = make_map(default=None)
    assert policy_map["head"] == F32
    with dp.policy_scope("mixed_float16"):
        assert policy_map["head"].name == "mixed_float16"
        assert policy_map.default_policy.name == "mixed_float16"
    dp.set_dtype_policy("bfloat16")
    assert policy_map["head"] == BF16


def test_two_regex_matches_is_an_error_naming_both_keys():
    policy_map = dp.DTypePolicyMap(None, {"enc/.*": "float32", ".*/norm": "bfloat16"})
    with pytest.raises(ValueError, match="'enc/norm' matches more than one") as info:
        policy_map["enc/norm"]
    assert "'enc/.*'" in str(info.value) and "'.*/norm'" in str(info.value)
    assert policy_map["enc/dense"] == F32


def test_mapping_protocol():
    policy_map = make_map()
    assert len(policy_map) == 3
    assert list(policy_map) == ["encoder/block_0/norm", "encoder/.*/norm", "decoder/dense(_\\d+)?"]
    assert "encoder/block_0/norm" in policy_map
    assert "encoder/block_9/norm" not in policy_map  # membership is exact; lookup uses regexes
    assert policy_map.policy_map["encoder/.*/norm"] == F32


def test_immutable_and_or_builds_a_new_map():
    policy_map = make_map()
    with pytest.raises(TypeError, match="immutable; cannot set 'head'"):
        policy_map["head"] = "float32"
    with pytest.raises(TypeError, match=r"immutable; cannot delete 'encoder/\.\*/norm'"):
        del policy_map["encoder/.*/norm"]
    extended = policy_map | {"head": "float16"}
    assert extended["head"] == F16 and policy_map["head"] != F16
    assert len(policy_map) == 3 and len(extended) == 4


def test_equality_and_hash():
    assert make_map() == make_map() and hash(make_map()) == hash(make_map())
    assert make_map() != make_map(default="float32")
    assert make_map(default=None) != make_map(default="float32")
    assert dp.DTypePolicyMap(None, {"a": "p=f32,c=bf16"}) == dp.DTypePolicyMap(None, {"a": "mixed_bfloat16"})


def test_get_config_does_not_mutate_and_round_trips():
    policy_map = make_map()
    first = policy_map.get_config()
    first["policy_map"].clear()
    assert len(policy_map) == 3
    assert dp.DTypePolicyMap.from_config(policy_map.get_config()) == policy_map


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (("float32", ["a"]), TypeError, "received \\['a'\\]"),
        (("float32", {"a": 3}), TypeError, "received 3"),
        (("float32", {"a": None}), TypeError, "policy_map\\['a'\\] must be a dtype policy"),
        (("float32", {3: "float32"}), TypeError, "received 3"),
        (("float32", {"": "float32"}), TypeError, "received ''"),
        (("float32", {"dense[": "float32"}), ValueError, "'dense\\['"),
        (("float33", {}), ValueError, "'float33'"),
        ((dp.DTypePolicyMap(), {}), TypeError, "default_policy must be a dtype policy"),
        (("float32", {"a": dp.DTypePolicyMap()}), TypeError, "policy_map\\['a'\\]"),
    ],
)
def test_constructor_errors(args, error, fragment):
    with pytest.raises(error, match=fragment):
        dp.DTypePolicyMap(*args)


def test_lookup_key_must_be_a_string():
    with pytest.raises(TypeError, match="received 3"):
        make_map()[3]


def test_from_config_errors():
    with pytest.raises(ValueError, match="Invalid DTypePolicyMap config"):
        dp.DTypePolicyMap.from_config({"default": None})
    with pytest.raises(ValueError, match="'policy_map' must be a dict"):
        dp.DTypePolicyMap.from_config({"default_policy": None, "policy_map": ["a"]})


# --- regressions (issue 7) ---------------------------------------------------------------------


@pytest.mark.parametrize("serialized", [True, False], ids=["serialized", "object"])
def test_a_map_nested_in_a_map_is_refused(serialized):
    inner = dp.DTypePolicyMap("float16", {"x": "bfloat16"})
    value = dp.serialize(inner) if serialized else inner
    with pytest.raises(TypeError, match=r"policy_map\['a'\] must be a dtype policy .*maps do not nest"):
        dp.DTypePolicyMap("float32", {"a": value})
    with pytest.raises(TypeError, match=r"default_policy must be a dtype policy .*maps do not nest"):
        dp.DTypePolicyMap(value, {})
    config = {"default_policy": None, "policy_map": {"a": dp.serialize(inner)}}
    with pytest.raises(TypeError, match="maps do not nest"):
        dp.DTypePolicyMap.from_config(config)
    with pytest.raises(TypeError, match="maps do not nest"):
        dp.DTypePolicyMap("float32", {}) | {"a": value}
