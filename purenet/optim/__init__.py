"""Optimizers as pure state-update functions, in the shape of optax's: transforms, aliases, schedules.

`purenet.optim.adam(1e-3)` and every other name work from here; the modules group them by role.
"""

from purenet.optim import schedules
from purenet.optim.aliases import adagrad, adam, adamw, lion, rmsprop, sgd
from purenet.optim.transforms import (AccumulateState, CountState, EmptyState, MaskedState, Optimizer,
                                      ScaleByAdamState, ScaleByLionState, ScaleByRmsState, ScaleByRssState,
                                      ScaleByStddevState, TraceState, accumulate_gradients, add_decayed_weights,
                                      apply_updates, chain, clip, clip_by_global_norm, decay_mask,
                                      decay_mask_except, global_norm, identity, leaf_path, masked, path_mask,
                                      scale, scale_by_adam, scale_by_learning_rate, scale_by_lion, scale_by_rms,
                                      scale_by_rss, scale_by_schedule, scale_by_stddev, trace)

__all__ = [
    "AccumulateState", "CountState", "EmptyState", "MaskedState", "Optimizer", "ScaleByAdamState",
    "ScaleByLionState", "ScaleByRmsState", "ScaleByRssState", "ScaleByStddevState", "TraceState",
    "accumulate_gradients", "adagrad", "adam", "adamw", "add_decayed_weights", "apply_updates", "chain", "clip",
    "clip_by_global_norm", "decay_mask", "decay_mask_except", "global_norm", "identity", "leaf_path", "lion",
    "masked", "path_mask", "rmsprop", "scale", "scale_by_adam", "scale_by_learning_rate", "scale_by_lion",
    "scale_by_rms", "scale_by_rss", "scale_by_schedule", "scale_by_stddev", "schedules", "sgd", "trace",
]
