"""The max-combining dtype behind float8 state: cotangents of a held value combine by max, zero is -inf.

Each test builds its own "gradient" with a tiny custom_vjp, `report(state, new)`, whose backward
hands `new` to `state` as its cotangent, the way the float8 product returns new scales and
histories. The expected values are written out by hand (element-wise max, -inf), never computed
by the module under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import dtypepolicy as dp
from dtypepolicy.quantization import _max_combine as mc
from dtypepolicy.quantization import keep_unless_updated

NEG_INF = -np.inf

# Two "new values" of one 3-element state whose element-wise max differs from their sum and from
# either one alone, so a sum, a last-wins or a first-wins combination each fail.
A = np.array([1.0, -5.0, 3.0], np.float32)
B = np.array([2.0, -7.0, -1.0], np.float32)
MAX_AB = np.array([2.0, -5.0, 3.0], np.float32)


@jax.custom_vjp
def report(state, new):
    """A zero scalar whose backward gives `state` the cotangent `new` (a float8 product's new state)."""
    del state, new
    return jnp.zeros((), jnp.float32)


report.defvjp(
    lambda state, new: (jnp.zeros((), jnp.float32), new),
    lambda new, _: (new, jnp.zeros_like(new)),
)


def used_twice(state, a, b):
    held = mc.to_max_combined(state)
    return report(mc.from_max_combined(held), a) + report(mc.from_max_combined(held), b)


def test_the_extended_dtype_hooks_exist_on_the_installed_jax():
    # A pin: a JAX upgrade that removes or renames the internals the dtype is built on turns
    # AVAILABLE false (state would then sum across uses); this fails loudly instead.
    assert mc.AVAILABLE is True
    assert mc.MAX_COMBINED is not None
    assert jax.eval_shape(mc.to_max_combined, jnp.zeros(3)).dtype == mc.MAX_COMBINED


def test_plain_float32_cotangents_would_sum():
    # The control: without the dtype, JAX adds the two cotangents (this is what the dtype fixes).
    def plain(state, a, b):
        return report(state, a) + report(state, b)

    np.testing.assert_array_equal(jax.grad(plain)(jnp.zeros(3), A, B), A + B)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_two_uses_combine_by_max(transform):
    # Breaks if the dtype's add rule sums (jit) or the eager adder table entry is missing or sums.
    grad = transform(jax.grad(used_twice))(jnp.zeros(3), A, B)
    assert grad.dtype == jnp.float32
    np.testing.assert_array_equal(grad, MAX_AB)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_vmap_of_grad_takes_the_max_per_example(transform):
    # Breaks if batching the conversions loses the dtype (each row would be a + b).
    states = jnp.zeros((2, 3))
    grads = transform(jax.vmap(jax.grad(used_twice)))(states, jnp.stack([A, B]), jnp.stack([B, -A]))
    np.testing.assert_array_equal(grads, np.stack([MAX_AB, np.maximum(B, -A)]))
    # An unbatched state with batched new values: each example still combines its own two by max.
    grads = transform(jax.vmap(jax.grad(used_twice), in_axes=(None, 0, None)))(jnp.zeros(3), jnp.stack([A, B]), -B)
    np.testing.assert_array_equal(grads, np.stack([np.maximum(A, -B), np.maximum(B, -B)]))


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_scan_over_a_held_value_takes_the_max_over_iterations(transform):
    # A closed-over value's cotangent accumulates through the scan's carry: that accumulation must
    # start at -inf and use max (a sum gives [7, -21, 2] here).
    news = np.array([[1.0, -5.0, 3.0], [4.0, -9.0, 0.0], [2.0, -7.0, -1.0]], np.float32)

    def scanned(state, news):
        held = mc.to_max_combined(state)

        def body(carry, new):
            return carry + report(mc.from_max_combined(held), new), None

        return lax.scan(body, jnp.zeros((), jnp.float32), news)[0]

    np.testing.assert_array_equal(transform(jax.grad(scanned))(jnp.zeros(3), news), [4.0, -5.0, 3.0])


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_an_untaken_cond_branch_gives_minus_inf(transform):
    # The untaken branch's zero cotangent must be the dtype's zero (-inf, "not updated"), not 0.0,
    # which an optimizer would assign as a new scale.
    def branch(state, pred):
        held = mc.to_max_combined(state)
        return lax.cond(pred, lambda: report(mc.from_max_combined(held), A), lambda: jnp.zeros((), jnp.float32))

    grad = transform(jax.grad(branch))
    np.testing.assert_array_equal(grad(jnp.zeros(3), True), A)
    np.testing.assert_array_equal(grad(jnp.zeros(3), False), np.full(3, NEG_INF))


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_cond_with_a_use_in_each_branch_gives_the_taken_branchs_value(transform):
    def branch(state, pred):
        held = mc.to_max_combined(state)
        return lax.cond(
            pred, lambda: report(mc.from_max_combined(held), A), lambda: report(mc.from_max_combined(held), B)
        )

    grad = transform(jax.grad(branch))
    np.testing.assert_array_equal(grad(jnp.zeros(3), True), A)
    np.testing.assert_array_equal(grad(jnp.zeros(3), False), B)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_touch_gives_an_unread_value_minus_inf_and_leaves_the_output_alone(transform):
    # Without touch an unread input's gradient is JAX's 0.0; touch routes -inf to it through the output.
    def touched(state, x):
        held = mc.to_max_combined(state)
        return jnp.sum(mc.touch(x * 2.0, [held]) ** 2)

    x = jnp.array([1.0, -3.0])
    state_grad, x_grad = transform(jax.grad(touched, argnums=(0, 1)))(jnp.zeros((2, 2)), x)
    np.testing.assert_array_equal(state_grad, np.full((2, 2), NEG_INF))
    np.testing.assert_array_equal(x_grad, 8.0 * np.asarray(x))  # d/dx (2x)^2 = 8x: touch is the identity
    np.testing.assert_array_equal(transform(touched)(jnp.zeros((2, 2)), x), 40.0)


def test_touch_and_a_real_use_give_the_real_value():
    # max(-inf, new) = new: touching a value that was also read changes nothing.
    def both(state):
        held = mc.to_max_combined(state)
        return mc.touch(report(mc.from_max_combined(held), A), [held])

    np.testing.assert_array_equal(jax.jit(jax.grad(both))(jnp.zeros(3)), A)


def test_touch_without_held_values_returns_the_output_itself():
    x = jnp.ones(2)
    assert mc.touch(x, []) is x
    assert mc.touch(x, [jnp.zeros(3)]) is x  # a float32 value is not held: nothing to route


def test_conversion_round_trip_keeps_every_bit():
    # Reads see exactly the stored value, including the special ones.
    values = np.array([0.0, -0.0, 1e-45, 3.4e38, np.inf, NEG_INF, 18.0 / 448.0], np.float32)

    def round_trip(v):
        return mc.from_max_combined(mc.to_max_combined(v))

    for transform in (lambda f: f, jax.jit):
        out = np.asarray(transform(round_trip)(jnp.asarray(values)))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.view(np.uint32), values.view(np.uint32))


def test_from_max_combined_passes_other_values_through():
    x = jnp.ones(2, jnp.bfloat16)
    assert mc.from_max_combined(x) is x
    assert not mc.is_max_combined(x) and not mc.is_max_combined(1.0)


def test_stateless_scope_holds_traced_float_values_and_reads_them_as_float32():
    # What stateless_call relies on: a held variable read twice by a float8-like product gets the
    # max; a concrete value (no trace) and an integer value are not held.
    state = dp.Variable(jnp.zeros(3), overwrite_with_gradient=True, autocast=False)
    counter = dp.Variable(jnp.zeros((), jnp.int32), trainable=False)

    def objective(value, a, b):
        with dp.StatelessScope([(state, value), (counter, jnp.zeros((), jnp.int32))]) as scope:
            held = scope.combine_gradients_by_max([state, counter])
            assert len(held) == 1 and mc.is_max_combined(held[0])
            assert state.value.dtype == jnp.float32
            return report(state.value, a) + report(state.value, b)

    np.testing.assert_array_equal(jax.jit(jax.grad(objective))(jnp.zeros(3), A, B), MAX_AB)
    with dp.StatelessScope([(state, jnp.zeros(3))]) as scope:
        assert scope.combine_gradients_by_max([state]) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([1.0, 2.0, 3.0], [NEG_INF, 5.0, NEG_INF], [1.0, 5.0, 3.0]),  # -inf: not updated, keep the old
        ([1.0, 2.0], [np.inf, 0.0], [np.inf, 0.0]),  # +inf and 0 are real new values (an inf amax)
        ([1.0, 2.0], [np.nan, -3.0], [np.nan, -3.0]),  # NaN is a value, not "not updated"
        ([4.0], [NEG_INF], [4.0]),
    ],
)
def test_keep_unless_updated_keeps_the_old_value_only_where_new_is_minus_inf(old, new, expected):
    for transform in (keep_unless_updated, jax.jit(keep_unless_updated)):
        out = transform(jnp.asarray(old, jnp.float32), jnp.asarray(new, jnp.float32))
        assert out.dtype == jnp.float32
        np.testing.assert_array_equal(out, np.asarray(expected, np.float32))


def test_keep_unless_updated_takes_the_new_values_dtype_and_passes_integers_through():
    out = keep_unless_updated(jnp.array([1.0, 2.0], jnp.float32), jnp.array([NEG_INF, 1.5], jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32), [1.0, 1.5])
    counts = jnp.array([3, -5], jnp.int32)
    np.testing.assert_array_equal(keep_unless_updated(jnp.array([1, 2], jnp.int32), counts), [3, -5])
