"""Registry rows: BatchNorm (train and eval), LayerNorm, RMSNorm and L2Normalize."""

from tests.registry import Case

from purenet.layers.norm import BatchNorm, L2Normalize, LayerNorm, RMSNorm


CASES = [
    # Batch 2 with default eps maps each channel to about +-1 whatever x is: dx is O(eps), all rounding
    # noise in float32. A larger eps keeps the row well conditioned.
    Case("batchnorm-train-rank2", BatchNorm, {"eps": 0.5}, (2, 3), train=True),
    Case("batchnorm-train-rank3", BatchNorm, {"momentum": 0.5}, (3, 5, 2), train=True),
    Case("batchnorm-train-unbiased-running-var", BatchNorm, {"unbiased_running_var": True}, (2, 3, 3, 4),
         train=True),
    Case("batchnorm-eval-rank4", BatchNorm, {}, (2, 3, 5, 4)),
    Case("batchnorm-train-no-affine", BatchNorm, {"use_scale": False, "use_bias": False}, (2, 3, 3), train=True),
    Case("layernorm-rank3", LayerNorm, {}, (2, 3, 5)),
    Case("layernorm-no-bias", LayerNorm, {"use_bias": False}, (2, 3, 4)),
    Case("rmsnorm-rank3", RMSNorm, {"eps": 1e-3}, (2, 3, 5)),
    Case("rmsnorm-no-scale", RMSNorm, {"use_scale": False}, (2, 3, 4)),
    Case("l2normalize", L2Normalize, {}, (2, 3, 4)),
]
