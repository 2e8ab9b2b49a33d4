"""The mask side table."""

import gc

import jax.numpy as jnp

from layers._base._masking import _masks, attach_mask, attach_masks, get_mask, mask_of


def test_attach_and_read():
    x, mask = jnp.ones(3), jnp.array([True, False, True])
    attach_mask(x, mask)
    assert get_mask(x) is mask and mask_of(x) is mask
    attach_mask(x, None)
    assert get_mask(x) is None


def test_structures():
    a, b = jnp.ones(2), jnp.ones(2)
    attach_masks([a, b], [jnp.array([True, True]), None])
    masks = mask_of([a, b])
    assert masks[0].tolist() == [True, True] and masks[1] is None
    attach_masks((a, b), jnp.array([False, False]))
    assert get_mask(b).tolist() == [False, False]
    assert mask_of([]) is None and mask_of(3.0) is None


def test_entries_die_with_their_arrays():
    x = jnp.ones(4)
    attach_mask(x, jnp.ones(4, bool))
    key = id(x)
    del x
    gc.collect()
    assert key not in _masks


def test_carry_mask_gives_a_converted_copy_the_mask_of_its_source():
    from layers._base._masking import carry_mask

    x, mask = jnp.ones(3), jnp.array([True, False, True])
    attach_mask(x, mask)
    copy = x.astype(jnp.bfloat16)
    assert carry_mask(x, copy) is copy and get_mask(copy) is mask
    plain = jnp.ones(2)
    other = plain.astype(jnp.float16)
    assert carry_mask(plain, other) is other and get_mask(other) is None
    assert carry_mask(x, x) is x
