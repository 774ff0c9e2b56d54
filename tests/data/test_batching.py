"""purenet.data.batching: seeded minibatches."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purenet.data import batches, num_batches


def arrays(n):
    return {"x": np.arange(n * 2).reshape(n, 2), "y": np.arange(n)}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 12), drop=st.booleans(),
       shuffle=st.booleans())
def test_batches_cover_every_sample_once(n, batch_size, drop, shuffle):
    out = list(batches(arrays(n), batch_size, seed=5, shuffle=shuffle, drop_remainder=drop))
    assert len(out) == num_batches(n, batch_size, drop_remainder=drop)
    sizes = [len(b["y"]) for b in out]
    assert all(s == batch_size for s in sizes[:-1]) and (not out or 0 < sizes[-1] <= batch_size)
    seen = np.concatenate([b["y"] for b in out]) if out else np.zeros(0, int)
    for b in out:
        np.testing.assert_array_equal(b["x"][:, 0], 2 * b["y"])  # rows stay aligned across keys
    if drop:
        assert len(seen) == n - n % batch_size and len(set(seen.tolist())) == len(seen)
    else:
        assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_batches_remainder():
    assert [len(b["y"]) for b in batches(arrays(10), 4)] == [4, 4, 2]
    assert [len(b["y"]) for b in batches(arrays(10), 4, drop_remainder=True)] == [4, 4]
    assert list(batches(arrays(3), 4, drop_remainder=True)) == []


def test_batches_seeded_per_epoch():
    def order(**kwargs):
        return np.concatenate([b["y"] for b in batches(arrays(50), 7, **kwargs)])

    np.testing.assert_array_equal(order(seed=1, epoch=2), order(seed=1, epoch=2))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=3))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=2, epoch=2))
    assert not np.array_equal(order(seed=1), np.arange(50))


def test_batches_accept_jax_arrays():
    (first, second) = batches({"x": jnp.arange(8.0).reshape(4, 2), "y": jnp.arange(4)}, 2, seed=0)
    np.testing.assert_array_equal(np.asarray(first["x"])[:, 0], 2 * np.asarray(first["y"]))
    assert sorted(np.concatenate([first["y"], second["y"]]).tolist()) == [0, 1, 2, 3]


def test_batches_validate():
    with pytest.raises(ValueError, match="batches: arrays must share their leading length"):
        batches({"x": np.zeros((3, 2)), "y": np.zeros(4)}, 2)  # raises when called, not when iterated
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got batch_size=0"):
        batches(arrays(4), 0)
    with pytest.raises(ValueError, match="non-empty dict"):
        batches({}, 2)
