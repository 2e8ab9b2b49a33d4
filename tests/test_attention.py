"""MultiHeadAttention against a float64 NumPy reference; masks; dtypes; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers._base._masking import attach_mask
from layers._builtin._attention import MultiHeadAttention
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16"]


def reference(query, value, weights, num_heads, key_dim, mask=None):
    """Multi-head attention in float64 from the layer's float32 weights."""
    qk, qb, kk, kb, vk, vb, ok, ob = weights
    q = np.einsum("btc,chd->bthd", query, qk) + qb
    k = np.einsum("btc,chd->bthd", value, kk) + kb
    v = np.einsum("btc,chd->bthd", value, vk) + vb
    scores = np.einsum("bshd,bthd->bhts", k, q / np.sqrt(key_dim))
    if mask is not None:
        scores = np.where(mask[:, None], scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    probabilities = np.exp(scores)
    probabilities /= probabilities.sum(-1, keepdims=True)
    context = np.einsum("bhts,bshd->bthd", probabilities, v)
    return np.einsum("bthd,hdo->bto", context, ok) + ob, probabilities


def inputs(seed=0, shape=(2, 6, 8)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("policy", POLICIES)
def test_matches_float64_reference(policy, jit):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype=policy)
    query, value = inputs()
    layer(query, value)
    compute = layer.compute_dtype
    if jit:
        non_trainable = [v._read_storage() for v in layer.non_trainable_variables]
        call = jax.jit(lambda trainable, q, v: layer.stateless_call(trainable, non_trainable, q, v)[0])
        out = call([v.value for v in layer.trainable_variables], query, value)
    else:
        out = layer(query, value)
    assert out.dtype == jnp.dtype(compute) and out.shape == (2, 6, 8)
    seen = [np.asarray(jnp.asarray(a).astype(compute).astype(jnp.float32), np.float64) for a in (query, value)]
    weights = [np.asarray(w, np.float64) for w in layer.get_weights() if w.dtype == np.float32]
    expected, _ = reference(*seen, weights, 2, 4)
    assert_close(out, expected, compute)


def test_variables_are_float32_and_named_by_path():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16", name="mha")
    layer(*inputs())
    paths = [v.path for v in layer.trainable_weights]
    assert paths[:2] == ["mha/query/kernel", "mha/query/bias"] and paths[-1] == "mha/attention_output/bias"
    assert all(v.dtype == "float32" for v in layer.trainable_weights)
    assert layer.query_dense.kernel.shape == (8, 2, 4)


@pytest.mark.parametrize("policy", [*POLICIES, "float16"])
def test_masking_produces_no_inf_or_nan_and_zero_probability(policy):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype=policy)
    query, value = inputs(1)
    query, value = query * 300, value * 300  # large logits: a float16 softmax would overflow
    mask = np.ones((2, 6, 6), bool)
    mask[0, :, 3:] = False
    mask[1, 2, :] = False  # a fully masked row
    out, probabilities = layer(query, value, attention_mask=mask, return_attention_scores=True)
    assert np.isfinite(np.asarray(out, np.float64)).all()
    probabilities = np.asarray(probabilities, np.float64)
    assert np.isfinite(probabilities).all()
    assert (probabilities[0, :, :, 3:] == 0).all() and (probabilities[1, :, 2, :] == 0).all()
    np.testing.assert_allclose(probabilities[0].sum(-1), 1.0, atol=2e-2)


def test_padding_masks_causal_mask_and_attached_masks_agree_with_the_reference():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = inputs(2)
    value_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    out = layer(query, value, value_mask=value_mask, use_causal_mask=True)
    causal = np.tril(np.ones((6, 6), bool))
    combined = causal[None] & value_mask[:, None, :]
    weights = [np.asarray(w, np.float64) for w in layer.get_weights() if w.dtype == np.float32]
    expected, _ = reference(query.astype(np.float64), value.astype(np.float64), weights, 2, 4, combined)
    assert_close(out, expected, "float32")
    value_array = jnp.asarray(value)
    attach_mask(value_array, jnp.asarray(value_mask))  # as an Embedding(mask_zero=True) would
    attached = layer(query, value_array, use_causal_mask=True)
    np.testing.assert_array_equal(np.asarray(attached), np.asarray(out))


def test_dropout_on_probabilities_only_in_training():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=3)
    query, value = inputs(3)
    inference = [np.asarray(layer(query, value)) for _ in range(2)]
    np.testing.assert_array_equal(*inference)
    trained = [np.asarray(layer(query, value, training=True)) for _ in range(2)]
    assert not np.array_equal(trained[0], trained[1]) and not np.array_equal(trained[0], inference[0])


def test_gradients_reach_every_projection():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16")
    query, value = inputs(4)
    layer(query, value)
    non_trainable = [v._read_storage() for v in layer.non_trainable_variables]

    def loss(trainable):
        out, _ = layer.stateless_call(trainable, non_trainable, query, value)
        return jnp.sum(out.astype(jnp.float32) ** 2)

    grads = jax.grad(loss)([v.value for v in layer.trainable_variables])
    assert all(g.dtype == jnp.float32 and bool(jnp.any(g != 0)) for g in grads)


def test_config_round_trip():
    layer = MultiHeadAttention(4, 8, value_dim=6, dropout=0.1, use_bias=False, output_shape=12, seed=1)
    clone = MultiHeadAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    out = clone(*inputs())
    assert out.shape == (2, 6, 12) and clone.value_dense.kernel.shape == (8, 4, 6)
    assert not hasattr(clone.query_dense, "bias") or clone.query_dense.bias is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads must be a positive int, received 0"),
        ({"num_heads": 2, "key_dim": 2.5}, "key_dim must be a positive int, received 2.5"),
        ({"num_heads": 2, "key_dim": 4, "value_dim": -1}, "value_dim must be a positive int, received -1"),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.5}, "1.5"),
    ],
)
def test_argument_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MultiHeadAttention(**kwargs)


def test_rank_errors_name_the_shape():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match=r"rank-3 \(batch, time, features\) query, received \(6, 8\)"):
        layer(jnp.ones((6, 8)), jnp.ones((6, 8)))
    assert dp.dtype_policy().name == "float32"


# ---------------------------------------------------------------- masks of any dtype: non-zero attends


def _float32_weights(layer):
    return [np.asarray(w, np.float64) for w in layer.get_weights() if w.dtype == np.float32]


def test_integer_mask_of_twos_attends_everywhere():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = inputs(5)
    out = layer(query, value, attention_mask=np.full((2, 6, 6), 2, np.int32))
    expected, _ = reference(query.astype(np.float64), value.astype(np.float64), _float32_weights(layer), 2, 4)
    assert_close(out, expected, "float32")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int8, np.uint8, np.bool_])
def test_masks_of_every_numeric_dtype_mean_nonzero_attends(dtype):
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = inputs(6)
    causal = np.tril(np.ones((6, 6)))
    scale = 1 if dtype is np.bool_ else 3  # any non-zero value attends, not just 1
    attention_mask = np.broadcast_to(causal * scale, (2, 6, 6)).astype(dtype)
    value_mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]).astype(dtype)
    out = layer(query, value, attention_mask=attention_mask, value_mask=value_mask)
    combined = (causal != 0)[None] & (value_mask != 0)[:, None, :]
    expected, _ = reference(query.astype(np.float64), value.astype(np.float64), _float32_weights(layer), 2, 4, combined)
    assert_close(out, expected, "float32")


def test_float_mask_combines_with_the_causal_mask_under_jit():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = inputs(7)
    layer(query, value)
    band = np.triu(np.ones((2, 6, 6), np.float32), -2)  # attend to the last three positions (and the future)
    non_trainable = [v._read_storage() for v in layer.non_trainable_variables]
    call = jax.jit(
        lambda trainable, m: layer.stateless_call(
            trainable, non_trainable, query, value, attention_mask=m, use_causal_mask=True
        )[0]
    )
    out = call([v.value for v in layer.trainable_variables], band)
    combined = (band != 0) & np.tril(np.ones((6, 6), bool))[None]
    expected, _ = reference(query.astype(np.float64), value.astype(np.float64), _float32_weights(layer), 2, 4, combined)
    assert_close(out, expected, "float32")


def test_a_two_dimensional_mask_broadcasts_over_the_batch():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = inputs(8)
    causal = np.tril(np.ones((6, 6), np.int32))
    out = layer(query, value, attention_mask=causal)
    expected, _ = reference(
        query.astype(np.float64),
        value.astype(np.float64),
        _float32_weights(layer),
        2,
        4,
        np.broadcast_to(causal != 0, (2, 6, 6)),
    )
    assert_close(out, expected, "float32")


def test_non_numeric_mask_is_refused():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    query, value = inputs()
    with pytest.raises(
        TypeError, match=r"MultiHeadAttention 'mha': attention_mask must be .*numeric or bool.*received"
    ):
        layer(query, value, attention_mask=[["x"] * 6] * 6)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        (
            {"attention_mask": np.ones((2, 6, 5))},
            r"attention_mask of shape \(2, 6, 5\).*\(batch, T_query, T_key\) = \(2, 6, 6\)",
        ),
        ({"attention_mask": np.ones((3, 6, 6))}, r"attention_mask of shape \(3, 6, 6\)"),
        ({"attention_mask": np.ones((1, 2, 6, 6))}, r"attention_mask of shape \(1, 2, 6, 6\)"),
        ({"query_mask": np.ones((2, 5))}, r"query_mask of shape \(2, 5\).*\(batch, T_query\) = \(2, 6\)"),
        ({"value_mask": np.ones((2, 6, 1))}, r"value_mask of shape \(2, 6, 1\).*\(batch, T_key\) = \(2, 6\)"),
        ({"key_mask": np.ones((6,))}, r"key_mask of shape \(6,\)"),
    ],
)
def test_wrong_mask_shapes_name_the_layer_and_the_shapes(masks, match):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    query, value = inputs()
    layer(query, value)
    before = [np.asarray(w) for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'mha': " + match):
        layer(query, value, **masks)
    for old, new in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"query": (2, 3, 8), "value": (3, 5, 8)}, r"query \(2, 3, 8\) and value \(3, 5, 8\).*batch"),
        (
            {"query": (2, 3, 8), "value": (2, 5, 8), "key": (2, 4, 8)},
            r"value \(2, 5, 8\) and key \(2, 4, 8\).*same batch and time",
        ),
        (
            {"query": (2, 3, 8), "value": (2, 5, 8), "key": (2, 5)},
            r"rank-3 \(batch, time, features\) key, received \(2, 5\)",
        ),
    ],
)
def test_mismatched_query_key_value_shapes_raise_before_building(shapes, match):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    arrays = {name: jnp.ones(shape) for name, shape in shapes.items()}
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'mha'.*" + match):
        layer(**arrays)
    assert not layer.built and layer.weights == []


def test_feature_sizes_that_differ_from_the_built_ones_name_the_layer():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    layer(jnp.ones((2, 3, 8)), jnp.ones((2, 5, 6)))
    with pytest.raises(
        ValueError,
        match=r"MultiHeadAttention 'mha' was built for value features 6, received value of shape \(2, 5, 7\)",
    ):
        layer(jnp.ones((2, 3, 8)), jnp.ones((2, 5, 7)))


# ---------------------------------------------------------------- compute_output_shape without building


@pytest.mark.parametrize(
    ("kwargs", "shapes", "expected"),
    [
        ({}, ((None, 3, 8),), (None, 3, 8)),
        ({}, ((None, 3, 8), (None, 5, 6)), (None, 3, 8)),
        ({}, ((4, 3, 8), (4, 5, 6), (4, 5, 2)), (4, 3, 8)),
        ({"output_shape": 12}, ((None, None, 8), (None, 5, 6)), (None, None, 12)),
    ],
)
def test_compute_output_shape_follows_keras_and_changes_nothing(kwargs, shapes, expected):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, **kwargs)
    assert layer.compute_output_shape(*shapes) == expected
    assert not layer.built and layer.weights == []


def test_compute_output_shape_refuses_value_and_key_that_disagree():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    with pytest.raises(ValueError, match=r"MultiHeadAttention 'mha'.*value \(None, 5, 6\) and key \(None, 4, 6\)"):
        layer.compute_output_shape((None, 3, 8), (None, 5, 6), (None, 4, 6))
    assert not layer.built


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "p=f32,c=bf16,o=f32"])
def test_compute_output_signature_uses_compute_output_shape_without_tracing(policy):
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype=policy)
    signature = layer.compute_output_signature(jax.ShapeDtypeStruct((2, 3, 8), jnp.float32))
    expected_dtype = layer.dtype_policy.output_dtype or layer.compute_dtype
    assert signature == jax.ShapeDtypeStruct((2, 3, 8), jnp.dtype(expected_dtype))
    assert not layer.built


def test_training_that_is_not_a_bool_is_refused():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=0, name="mha")
    query, value = inputs()
    with pytest.raises(
        TypeError, match=r"MultiHeadAttention 'mha': training must be a Python bool or None, received 'false'"
    ):
        layer(query, value, training="false")
