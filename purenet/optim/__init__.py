"""Optimizers as pure state-update functions, in the shape of optax's: transforms, aliases, schedules.

`purenet.optim.adam(1e-3)` and every other name work from here; the modules group them by role. Each
public name is written once, in its import below; `__all__` is every name imported here.
"""

from types import ModuleType as _ModuleType

from purenet.optim import schedules
from purenet.optim.aliases import adagrad, adam, adamw, lion, rmsprop, sgd
from purenet.optim.loss_scaling import (LossScaleState, adjust_scale, all_finite, dynamic_loss_scale, loss_scale,
                                        static_loss_scale, unscale)
from purenet.optim.transforms import (AccumulateState, CountState, EmptyState, MaskedState, Optimizer,
                                      ScaleByAdamState, ScaleByLionState, ScaleByRmsState, ScaleByRssState,
                                      ScaleByStddevState, TraceState, accumulate_gradients, add_decayed_weights,
                                      apply_updates, chain, clip, clip_by_global_norm, decay_mask,
                                      decay_mask_except, global_norm, identity, masked, path_mask, scale,
                                      scale_by_adam, scale_by_learning_rate, scale_by_lion, scale_by_rms,
                                      scale_by_rss, scale_by_schedule, scale_by_stddev, trace)

__all__ = ["schedules", *sorted(name for name, value in globals().items()
                                if not name.startswith("_") and not isinstance(value, _ModuleType))]
