"""The process-wide seed generator and the host (NumPy) samplers behind the random initializers."""

import threading

import jax
import numpy as np
import pytest

from layers import _random


def _data(key):
    return np.asarray(jax.random.key_data(key)).tobytes()


def test_keys_are_distinct():
    generator = _random.SeedGenerator(0)
    keys = [_data(generator.next_key()) for _ in range(50)]
    assert len(set(keys)) == 50


def test_reset_replays_the_same_keys():
    generator = _random.SeedGenerator(5)
    first = [_data(generator.next_key()) for _ in range(4)]
    generator.reset(5)
    assert [_data(generator.next_key()) for _ in range(4)] == first
    generator.reset(6)
    assert _data(generator.next_key()) not in first


def test_keys_are_fold_ins_of_the_seed():
    generator = _random.SeedGenerator(9)
    generator.next_key()
    assert _data(generator.next_key()) == _data(jax.random.fold_in(jax.random.key(9), 1))


def test_keys_are_distinct_across_threads():
    generator, results, errors = _random.SeedGenerator(1), [], []

    def draw():
        try:
            for _ in range(25):
                results.append(_data(generator.next_key()))
        except Exception as error:  # surfaced below; a thread swallowing it would hide a failure
            errors.append(error)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 100
    generator.reset(1)
    assert set(results) == {_data(generator.next_key()) for _ in range(100)}


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1, np.int64(3), np.uint32(4)])
def test_check_seed_accepts_ints_in_range(seed):
    checked = _random.check_seed(seed, "seed")
    assert checked == int(seed)
    assert type(checked) is int


def test_check_seed_passes_none_through():
    assert _random.check_seed(None, "seed") is None


ERRORS = [
    ("negative", -1, ValueError, r"^Thing\(seed\) must be in \[0, 2\*\*32\), received -1\.$"),
    ("too_large", 2**32, ValueError, r"^Thing\(seed\) must be in \[0, 2\*\*32\), received 4294967296\.$"),
    ("float", 1.0, TypeError, r"^Thing\(seed\) must be an int or None, received 1\.0 of type float\.$"),
    ("bool", True, TypeError, r"^Thing\(seed\) must be an int or None, received True of type bool\.$"),
    ("string", "3", TypeError, r"received '3' of type str"),
]


@pytest.mark.parametrize(("seed", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_check_seed_errors_name_the_bad_value(seed, error, match):
    with pytest.raises(error, match=match):
        _random.check_seed(seed, "Thing(seed)")


SHAPE = (64, 32)


@pytest.mark.parametrize(
    "sample",
    [
        lambda rng: _random.normal(rng, 0.0, 1.0, shape=SHAPE),
        lambda rng: _random.truncated_normal(rng, 0.0, 1.0, shape=SHAPE),
        lambda rng: _random.uniform(rng, -1.0, 1.0, shape=SHAPE),
        lambda rng: _random.orthogonal(rng, 1.0, shape=SHAPE),
    ],
    ids=["normal", "truncated_normal", "uniform", "orthogonal"],
)
def test_samplers_draw_float32_of_the_shape_reproducibly(sample):
    values = sample(_random.seeded_rng(0))
    assert values.shape == SHAPE
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, sample(_random.seeded_rng(0)))
    assert not np.array_equal(values, sample(_random.seeded_rng(1)))


def test_truncated_normal_stays_within_two_stddev_and_the_constant_restores_the_variance():
    values = np.asarray(_random.truncated_normal(_random.seeded_rng(0), 1.0, 0.5, shape=(100_000,)))
    assert np.all(np.abs(values - 1.0) <= 1.0)
    assert np.std(values) / 0.5 == pytest.approx(_random.TRUNCATED_STDDEV, rel=0.02)


def test_orthogonal_wide_shape_has_orthonormal_rows():
    q = np.asarray(_random.orthogonal(_random.seeded_rng(0), 2.0, shape=(3, 5)), np.float64)
    np.testing.assert_allclose(q @ q.T, 4.0 * np.eye(3), atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (2, 0, 3)], ids=str)
def test_orthogonal_of_an_empty_shape_is_empty(shape):
    assert _random.orthogonal(_random.seeded_rng(0), 1.0, shape=shape).shape == shape


def _first_draws(rng):
    return rng.random(4).tolist()


def test_generators_replay_after_reset_and_share_the_counter_with_keys():
    generator = _random.SeedGenerator(5)
    first = [_first_draws(generator.next_rng()) for _ in range(3)]
    generator.reset(5)
    generator.next_key()  # uses up draw 0
    assert [_first_draws(generator.next_rng()) for _ in range(2)] == first[1:]


def test_an_int_seed_and_the_process_generator_with_that_seed_draw_different_streams():
    # The stream tag keeps them apart (SeedSequence([5]) and SeedSequence([5, 0]) would collide).
    generator = _random.SeedGenerator(5)
    streams = {tuple(_first_draws(_random.seeded_rng(5)))}
    streams |= {tuple(_first_draws(generator.next_rng())) for _ in range(3)}
    assert len(streams) == 4
