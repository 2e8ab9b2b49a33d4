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


# --- explain and unmatched_keys (issue 7) ------------------------------------------------------


class FakeLayer:
    """Duck-typed like a layers.Layer: a path and sublayers() (all descendants, self excluded)."""

    def __init__(self, path, children=()):
        self.path, self._children = path, list(children)

    def sublayers(self):
        return [d for child in self._children for d in (child, *child.sublayers())]


class LegacyLayer:
    """Only the older `_flatten_layers()` (self included), as layers.Layer had before sublayers()."""

    def __init__(self, path, children=()):
        self.path, self._children = path, list(children)

    def _flatten_layers(self):
        return [self, *(d for child in self._children for d in child._flatten_layers())]


def fake_model(cls=FakeLayer):
    blocks = [cls(f"enc/block_{i}", [cls(f"enc/block_{i}/norm"), cls(f"enc/block_{i}/dense")]) for i in range(2)]
    return cls("enc", [*blocks, cls("enc/head")])


EXPECTED_EXPLAIN = {  # path -> (policy name, matching key), written out from the lookup rules
    "enc": ("mixed_bfloat16", None),
    "enc/block_0": ("mixed_bfloat16", None),
    "enc/block_0/norm": ("bfloat16", "enc/block_0/norm"),  # exact key beats the regex
    "enc/block_0/dense": ("mixed_bfloat16", None),
    "enc/block_1": ("mixed_bfloat16", None),
    "enc/block_1/norm": ("float32", "enc/.*/norm"),
    "enc/block_1/dense": ("mixed_bfloat16", None),
    "enc/head": ("float16", "enc/head"),
}


@pytest.mark.parametrize("cls", [FakeLayer, LegacyLayer])
def test_explain_gives_each_layer_its_policy_and_the_matching_key(cls):
    policy_map = dp.DTypePolicyMap(
        "mixed_bfloat16",
        {"enc/block_0/norm": "bfloat16", "enc/.*/norm": "float32", "enc/head": "float16", "enc/haed": "float16"},
    )
    explained = policy_map.explain(fake_model(cls))
    assert list(explained) == list(EXPECTED_EXPLAIN)  # the model first, then depth first
    assert {path: (row.policy.name, row.key) for path, row in explained.items()} == EXPECTED_EXPLAIN
    policy, key = explained["enc/head"]  # rows unpack as (policy, key)
    assert policy == F16 and key == "enc/head"


def test_explain_rows_are_the_exported_policy_match_type():
    # Before: explain returned PolicyMatch rows, but the name was not exported from dtypepolicy.
    assert "PolicyMatch" in dp.__all__
    rows = dp.DTypePolicyMap("float32", {"enc/head": "float16"}).explain(fake_model())
    assert all(type(row) is dp.PolicyMatch for row in rows.values())
    assert dp.PolicyMatch._fields == ("policy", "key")
    assert rows["enc/head"] == dp.PolicyMatch(F16, "enc/head") and rows["enc"] == dp.PolicyMatch(F32, None)


def test_explain_with_a_none_default_reports_the_default_current_now():
    policy_map = dp.DTypePolicyMap(None, {"enc/head": "float16"})
    with dp.policy_scope("bfloat16"):
        assert policy_map.explain(fake_model())["enc"] == (BF16, None)


def test_explain_lists_a_shared_layer_once():
    shared = FakeLayer("enc/shared")
    model = FakeLayer("enc", [shared])
    model.sublayers = lambda: [shared, shared, model]
    assert list(dp.DTypePolicyMap().explain(model)) == ["enc", "enc/shared"]


def test_explain_with_an_ambiguous_path_names_both_keys():
    policy_map = dp.DTypePolicyMap(None, {"enc/.*": "float32", ".*/head": "bfloat16"})
    with pytest.raises(ValueError, match="'enc/head' matches more than one"):
        policy_map.explain(fake_model())


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (object(), "an object with .path and sublayers"),
        ("enc/head", "received 'enc/head'"),
        (FakeLayer(3), "path must be a string, received 3"),
    ],
    ids=["object", "string", "bad-path"],
)
def test_explain_rejects_what_is_not_a_layer(model, fragment):
    with pytest.raises(TypeError, match=fragment):
        dp.DTypePolicyMap().explain(model)


def test_unmatched_keys_finds_typos_in_map_order():
    policy_map = dp.DTypePolicyMap(
        None, {"enc/haed": "float16", "enc/.*/norm": "float32", "enc/head": "float16", "dec/.*": "bfloat16"}
    )
    paths = ["enc", "enc/block_0/norm", "enc/head"]
    assert policy_map.unmatched_keys(paths) == ["enc/haed", "dec/.*"]
    assert policy_map.unmatched_keys(iter(paths)) == ["enc/haed", "dec/.*"]  # any iterable
    assert policy_map.unmatched_keys([]) == list(policy_map)
    assert dp.DTypePolicyMap().unmatched_keys(paths) == []
    # A regex counts only when it fullmatches: "enc/.*/norm" does not match "enc/block_0/norm/scale" alone.
    assert policy_map.unmatched_keys(["enc/block_0/norm/scale"]) == list(policy_map)


@pytest.mark.parametrize(("paths", "fragment"), [("enc/head", "not a single string"), (["enc", 3], "received 3")])
def test_unmatched_keys_rejects_bad_paths(paths, fragment):
    with pytest.raises(TypeError, match=fragment):
        dp.DTypePolicyMap(None, {"enc": "float32"}).unmatched_keys(paths)
