"""Optimizer aliases: `chain`s of the transforms in `purenet.optim.transforms`, as optax's `alias.py`.

Each alias checks its own hyperparameters first, so an error names the function the user called
(`adam: b1 must be in [0, 1), got b1=1.5`), not the transform inside it.
"""

from __future__ import annotations

from purenet._checks import fail
from purenet.optim.transforms import (Mask, Optimizer, ScalarOrSchedule, _learning_rate, _non_negative,
                                      _positive, _unit, add_decayed_weights, chain, decay_mask, identity,
                                      scale_by_adam, scale_by_learning_rate, scale_by_lion, scale_by_rms,
                                      scale_by_rss, scale_by_stddev, trace)



def sgd(learning_rate: ScalarOrSchedule, *, momentum: float | None = None,
        nesterov: bool = False) -> Optimizer:
    """Stochastic gradient descent, with optional (Nesterov) momentum: chain(trace, -learning_rate)."""
    _learning_rate("sgd", learning_rate)
    if momentum is None:
        if nesterov:
            fail("sgd", "nesterov=True needs a momentum, got momentum=None")
        return chain(identity(), scale_by_learning_rate(learning_rate))
    _unit("sgd", "momentum", momentum)
    return chain(trace(momentum, nesterov=nesterov), scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: ScalarOrSchedule, *, decay: float = 0.9, eps: float = 1e-8,
            centered: bool = False, momentum: float | None = None, nesterov: bool = False) -> Optimizer:
    """RMSProp (centered: divide by the running standard deviation instead of the RMS), with optional
    momentum applied after the learning rate, as optax does."""
    _learning_rate("rmsprop", learning_rate)
    _unit("rmsprop", "decay", decay)
    _positive("rmsprop", "eps", eps)
    if momentum is None:
        if nesterov:
            fail("rmsprop", "nesterov=True needs a momentum, got momentum=None")
    else:
        _unit("rmsprop", "momentum", momentum)
    scaling = (scale_by_stddev if centered else scale_by_rms)(decay=decay, eps=eps)
    accelerate = identity() if momentum is None else trace(momentum, nesterov=nesterov)
    return chain(scaling, scale_by_learning_rate(learning_rate), accelerate)


def adagrad(learning_rate: ScalarOrSchedule, *, initial_accumulator_value: float = 0.1,
            eps: float = 1e-7) -> Optimizer:
    """Adagrad: chain(scale_by_rss, -learning_rate)."""
    _learning_rate("adagrad", learning_rate)
    _non_negative("adagrad", "initial_accumulator_value", initial_accumulator_value)
    _positive("adagrad", "eps", eps)
    return chain(scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate))


def _check_betas(opt: str, b1: float, b2: float) -> None:
    _unit(opt, "b1", b1)
    _unit(opt, "b2", b2)


def adam(learning_rate: ScalarOrSchedule, *, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> Optimizer:
    """Adam: chain(scale_by_adam, -learning_rate)."""
    _learning_rate("adam", learning_rate)
    _check_betas("adam", b1, b2)
    _positive("adam", "eps", eps)
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamw(learning_rate: ScalarOrSchedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-4, mask: Mask | None = decay_mask) -> Optimizer:
    """Adam with decoupled weight decay: chain(scale_by_adam, add_decayed_weights, -learning_rate).

    By default only leaves with ndim >= 2 decay (`decay_mask`: biases and norm scales do not);
    `mask=None` decays every leaf; a tree of bools or a callable params -> tree of bools also works."""
    _learning_rate("adamw", learning_rate)
    _check_betas("adamw", b1, b2)
    _positive("adamw", "eps", eps)
    _non_negative("adamw", "weight_decay", weight_decay)
    return chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def lion(learning_rate: ScalarOrSchedule, *, b1: float = 0.9, b2: float = 0.99, weight_decay: float = 0.0,
         mask: Mask | None = decay_mask) -> Optimizer:
    """Lion: chain(scale_by_lion, add_decayed_weights, -learning_rate); `mask` as in `adamw`."""
    _learning_rate("lion", learning_rate)
    _check_betas("lion", b1, b2)
    _non_negative("lion", "weight_decay", weight_decay)
    return chain(scale_by_lion(b1, b2), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))
