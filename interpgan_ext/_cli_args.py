"""Argument types for the command line that check a value's range as it is parsed.

`--pairs 0` or `--images 0` used to end in a traceback from deep inside a verb (an empty quantile, a division by
zero). With these types argparse rejects such a value at once, naming the option:
    interpgan swap: error: argument --pairs: expected an integer >= 1, got 0
"""
import argparse
import math


def at_least(lowest: int):
    """An integer >= lowest."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lowest}, got {value}")
        return value

    return parse


def real_in(low: float, high: float = math.inf, low_open: bool = False):
    """A number in [low, high], or in (low, high] with low_open (high = inf: no upper bound)."""
    if high == math.inf:
        where = f"{'>' if low_open else '>='} {low:g}"
    else:
        where = f"in {'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {where}, got {text!r}") from None
        if not ((value > low if low_open else value >= low) and value <= high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a number {where}, got {text}")
        return value

    return parse


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)
POSITIVE_REAL = real_in(0.0, low_open=True)
FRACTION = real_in(0.0, 1.0)
