"""MultiHeadAttention against a float64 NumPy reference; masks; dtypes; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers._attention import MultiHeadAttention
from layers._masking import attach_mask
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
