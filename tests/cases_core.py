"""Registry rows: the combinators, over plain and structured inputs (tuples and dicts of arrays, with
integer leaves that get no cotangent), with positional and named children; `at`, `residual(at=...)`
and a routed `parallel` on structured inputs."""

from purenet.combinators import at, identity, parallel, residual, select, serial
from purenet.core import stateless
from purenet.layers import Dense, Embedding, Tanh
from tests.registry import Case


def _with_ids(vocab_size, *paths):
    """make_x: standard-normal floats, random ids in [0, vocab_size) at the given top-level parts."""

    def make(rng, in_shape):
        parts = dict(enumerate(in_shape)) if isinstance(in_shape, tuple) else dict(in_shape)
        made = {p: rng.integers(0, vocab_size, s) if p in paths else rng.standard_normal(s)
                for p, s in parts.items()}
        return tuple(made[i] for i in range(len(made))) if isinstance(in_shape, tuple) else made

    return make


def _token_and_feature_sum():  # (features (N, T, F), ids (N, T)) -> (N, T, 4)
    return serial(parallel(serial(select(1), Embedding(6, 3)), select(0), merge="sum"), Dense(4))


def _image_and_text_towers():  # {"image": (N, 4), "text": (N, T) ids} -> {"image": (N, 3), "text": (N, T, 2)}
    return parallel(image=serial(select("image"), Dense(3)), text=serial(select("text"), Embedding(7, 2)),
                    merge=None)


def _features_read_with_ids():  # (features (N, T, 3), ids (N, T)) -> (N, T, 3): reads both parts
    return serial(parallel(select(0), serial(select(1), Embedding(6, 3)), merge="sum"), Dense(3))


def _swap_router():  # (a, b) -> {"first": b, "second": a}; dx = (d second, d first)
    def init(key, in_shape):
        del key
        return {"first": in_shape[1], "second": in_shape[0]}, {}

    def vjp(params, x):
        del params
        return {"first": x[1], "second": x[0]}, lambda dy: ({}, (dy["second"], dy["first"]))

    return stateless("Swap", init, lambda params, x: vjp(params, x)[0], vjp)


CASES = [
    Case("identity", identity, {}, (2, 3)),
    Case("serial", lambda: serial(Dense(7), Dense(3)), {}, (3, 5)),
    Case("serial-named", lambda: serial(hidden=Dense(7), act=Tanh(), head=Dense(3)), {}, (3, 5)),
    Case("parallel-concat", lambda: parallel(Dense(2), Dense(3)), {}, (2, 5)),
    Case("parallel-sum", lambda: parallel(Dense(3), identity(), merge="sum"), {}, (2, 3)),
    Case("parallel-named-structure", lambda: parallel(a=Dense(2), b=Tanh(), merge=None), {}, (2, 3)),
    Case("parallel-two-embeddings-sum", lambda: parallel(Embedding(5, 4), Embedding(5, 4), merge="sum"), {},
         (2, 6), make_x=lambda rng, shape: rng.integers(0, 5, shape)),
    Case("residual", lambda: residual(serial(Dense(6), Dense(4))), {}, (1, 4)),
    Case("select-tuple-with-ids", _token_and_feature_sum, {}, ((2, 5, 3), (2, 5)), make_x=_with_ids(6, 1)),
    Case("select-dict-two-towers", _image_and_text_towers, {}, {"image": (2, 4), "text": (2, 3)},
         make_x=_with_ids(7, "text")),
    Case("select-nested-float", lambda: serial(select(1, "b"), Dense(2)), {}, ((2, 3), {"a": (2, 1), "b": (2, 4)})),
    Case("parallel-mean", lambda: parallel(Dense(3), Tanh(), merge="mean"), {}, (2, 3)),
    Case("parallel-mul", lambda: parallel(Dense(3), Tanh(), Dense(3), merge="mul"), {}, (2, 3)),
    Case("parallel-routed", lambda: parallel(first=Dense(2), second=Dense(3), route=_swap_router()), {},
         ((2, 4), (2, 5))),
    Case("at-tuple-with-ids", lambda: serial(at(0, Dense(3)), _features_read_with_ids()), {}, ((2, 5, 3), (2, 5)),
         make_x=_with_ids(6, 1)),
    Case("at-nested-dict", lambda: at((1, "b"), Tanh()), {}, ((2, 3), {"a": (2, 1), "b": (2, 4)})),
    Case("residual-at-reads-the-whole-input", lambda: residual(_features_read_with_ids(), at=0), {},
         ((2, 5, 3), (2, 5)), make_x=_with_ids(6, 1)),
]
