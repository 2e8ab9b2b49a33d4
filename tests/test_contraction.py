"""Contraction: the projection as an einsum, and which input/kernel axes it sums over.

Expected axes are read off each equation by hand: a letter is summed when it is in an operand
but not in the output; with an ellipsis, letters after it count from the end of the rank.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from dtypepolicy.quantization import DENSE, Contraction

# equation, input rank, summed input axes, kernel rank, summed kernel axes
AXES_CASES = [
    ("...i,io->...o", 2, (1,), 2, (0,)),
    ("...i,io->...o", 4, (3,), 2, (0,)),
    ("ab,bc->ac", 2, (1,), 2, (0,)),
    ("abc,cd->abd", 3, (2,), 2, (0,)),
    ("abc,cde->abde", 3, (2,), 3, (0,)),
    ("abcd,cde->abe", 4, (2, 3), 3, (0, 1)),  # two summed letters (attention's output projection)
    ("btnh,nhd->btd", 4, (2, 3), 3, (0, 1)),
    ("abc,dc->abd", 3, (2,), 2, (1,)),  # the summed letter last in the kernel
    ("a...b,bc->a...c", 4, (3,), 2, (0,)),  # ellipsis in the middle
    ("...ab,bc->...ac", 5, (4,), 2, (0,)),
    ("b...c,cd->b...d", 2, (1,), 2, (0,)),  # the ellipsis standing for no axes
    ("abc,cd->ad", 3, (1, 2), 2, (0,)),  # b is summed too, though only the input has it
    ("ab,bcd->ad", 2, (1,), 3, (0, 1)),  # c is summed too, though only the kernel has it
    (" abc , cd -> abd ", 3, (2,), 2, (0,)),  # spaces are ignored
]


@pytest.mark.parametrize("equation, x_rank, x_axes, k_rank, k_axes", AXES_CASES)
def test_summed_axes_of_input_and_kernel(equation, x_rank, x_axes, k_rank, k_axes):
    contraction = Contraction(equation)
    assert contraction.input_axes(x_rank) == x_axes
    assert contraction.kernel_axes(k_rank) == k_axes


def test_dense_is_the_matmul_equation():
    assert Contraction("...i,io->...o") == DENSE
    x = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    kernel = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    np.testing.assert_array_equal(DENSE(x, kernel, "float32"), np.asarray(x) @ np.asarray(kernel))


def test_call_accumulates_in_the_requested_type():
    x = jnp.full((2, 3), 100, jnp.int8)
    kernel = jnp.full((3, 2), 100, jnp.int8)
    out = Contraction("ab,bc->ac")(x, kernel, "int32")
    assert out.dtype == jnp.int32
    assert out.tolist() == [[30000, 30000], [30000, 30000]]  # past int8 and int16: no wrap-around
    bf16 = Contraction("ab,bc->ac")(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), "float32")
    assert bf16.dtype == jnp.float32 and float(bf16[0, 0]) == 30000.0


def test_contractions_are_hashable_values():
    assert hash(Contraction("ab,bc->ac")) == hash(Contraction("ab,bc->ac"))
    assert Contraction("ab,bc->ac") != Contraction("ab,cb->ac")


@pytest.mark.parametrize("bad", ["ab,bc", "ab->b", "ab,bc,cd->ad", "ab,bc->ac->a", "", "abbc->ac"])
def test_a_malformed_equation_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=r"einsum equation 'input,kernel->output'.*received " + re.escape(repr(bad))):
        Contraction(bad)


@pytest.mark.parametrize("bad", [None, 3, b"ab,bc->ac"])
def test_a_non_string_equation_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=r"received " + re.escape(repr(bad))):
        Contraction(bad)


@pytest.mark.parametrize("equation, rank", [("abc,cd->abd", 2), ("abc,cd->abd", 4), ("a...b,bc->a...c", 1)])
def test_an_input_rank_that_does_not_fit_the_equation_is_a_value_error(equation, rank):
    contraction = Contraction(equation)
    with pytest.raises(ValueError, match=rf"rank {rank}.*{re.escape(repr(equation.split(',')[0]))}"):
        contraction.input_axes(rank)


def test_a_kernel_rank_that_does_not_fit_the_equation_is_a_value_error():
    with pytest.raises(ValueError, match=r"rank 3.*'cd'"):
        Contraction("abc,cd->abd").kernel_axes(3)
