"""Command-line values out of range are refused as they are parsed, naming the option (interpgan_ext/_cli_args.py),
instead of ending in a traceback from inside a verb."""
import argparse
import math
import re

import pytest
import torch

from interpgan_ext._cli_args import at_least, real_in
from interpgan_ext.cli import main as cli_main


def test_at_least_takes_integers_from_its_bound():
    parse = at_least(1)
    assert parse("1") == 1 and parse("12") == 12
    for bad, says in (("0", "got 0"), ("-3", "got -3"), ("2.5", "got '2.5'"), ("x", "got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected an integer >= 1, {says}"):
            parse(bad)


def test_real_in_takes_finite_numbers_in_its_interval():
    share = real_in(0, 0.5, low_open=True)
    assert share("0.5") == 0.5 and share("1e-3") == 1e-3
    for bad in ("0", "0.51", "nan", "-inf", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number in \(0, 0.5\]"):
            share(bad)
    positive = real_in(0, low_open=True)
    assert positive("3") == 3.0
    for bad in ("0", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number > 0"):
            positive(bad)
    assert real_in(0)("0") == 0.0 and not math.isnan(real_in(0)("1"))


# Each of these used to end in a traceback (an empty quantile, a division by zero, an unbound variable) or to run
# with a meaningless value. No run directory is needed: argparse refuses them before a verb starts.
@pytest.mark.parametrize("argv, says", [
    (["swap", "RUN", "--group", "1", "--pairs", "0"], "argument --pairs: expected an integer >= 1, got 0"),
    (["swap", "RUN", "--group", "1", "--refine", "-1"], "argument --refine: expected an integer >= 0, got -1"),
    (["swap", "RUN", "--group", "1", "--step-size", "-1"], "argument --step-size: expected a number > 0, got -1"),
    (["visualize", "RUN", "--images", "0"], "argument --images: expected an integer >= 1"),
    (["visualize", "RUN", "--filters", "0"], "argument --filters: expected an integer >= 1"),
    (["eval", "RUN", "--images", "1"], "argument --images: expected an integer >= 2, got 1"),
    (["eval", "RUN", "--min-seg-miou", "1.5"], r"argument --min-seg-miou: expected a number in \[0, 1\]"),
    (["latent-shift", "RUN", "--samples", "0"], "argument --samples: expected an integer >= 1"),
    (["ace", "RUN", "--part", "hair", "--samples", "0"], "argument --samples: expected an integer >= 1"),
    (["learn-directions", "RUN", "--k", "0"], "argument --k: expected an integer >= 1"),
    (["learn-directions", "RUN", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["steer", "RUN", "--edit", "zoom", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["dissect", "RUN", "--images", "0"], "argument --images: expected an integer >= 1"),
    (["compare", "RUN", "BASE", "--images", "0"], "argument --images: expected an integer >= 1"),
    (["boundaries", "RUN", "--share", "0"], r"argument --share: expected a number in \(0, 0.5\]"),
    (["train", "--width", "0"], "argument --width: expected an integer >= 1, got 0"),
    (["train", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    (["train", "--size", "5"], "argument --size: expected an integer >= 8, got 5"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
    (["train", "--lr-g", "0"], "argument --lr-g: expected a number > 0"),
    (["train", "--lambda0", "-1"], "argument --lambda0: expected a number >= 0"),
])
def test_the_cli_refuses_a_value_out_of_range_naming_the_option(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(says, err), err


def test_ganspace_needs_as_many_latents_as_directions():
    from interpgan_ext.analysis.directions import ganspace

    with pytest.raises(ValueError, match="5 directions need at least as many latents, got 3"):
        ganspace(torch.randn(3, 4), n_components=5)
