"""Registry rows: ClassToken, TokenAt (the ViT's class token and its read-out), RandomShift (training)."""

from purenet.layers.augment import RandomShift
from purenet.layers.tokens import ClassToken, TokenAt
from tests.registry import Case

CASES = [
    Case("class-token-t4", ClassToken, {}, (3, 4, 5)),
    Case("token-at-last", TokenAt, {}, (3, 4, 5), args=(-1,)),
    Case("random-shift-train", RandomShift, {}, (3, 5, 6, 2), train=True, args=(2,)),
]
