"""Registry rows: Flatten and Reshape."""

from purenet.layers.reshape import Flatten, Reshape
from tests.registry import Case

CASES = [
    Case("flatten", Flatten, {}, (2, 3, 4, 5)),
    Case("reshape", Reshape, {}, (2, 3, 4), args=((2, -1, 3),)),
]
