"""Tests for ibstudy.cli_values: the one command-line value parser of train, measure, sweep and run
(known values, bad input naming the parameter, the round trip with option_text, no import circle)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from ibstudy.__main__ import main
from ibstudy.cli_values import (
    grid_help,
    grid_value,
    option_text,
    option_type,
    parse_bool,
    parse_floats,
    parse_ints,
    parse_literal,
    parse_optional_int,
    parse_plus_tuple,
)
from ibstudy.config import TrainConfig


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("No", False), ("0", False)],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected


def test_simple_parsers() -> None:
    assert parse_ints("5,10") == (5, 10)
    assert parse_ints(" 3 , 4 ") == (3, 4) and parse_ints("5,,10") == (5, 10)
    assert parse_ints("") == ()
    assert parse_floats("0.125,0.5") == (0.125, 0.5)
    assert parse_plus_tuple("20+30") == (20, 30) and parse_plus_tuple("None") == ()
    assert parse_plus_tuple("0.25+0.5", float) == (0.25, 0.5)
    assert parse_optional_int("none") is None and parse_optional_int("100") == 100


def test_bad_text_says_what_was_expected() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false, got 'maybe'"):
        parse_bool("maybe")
    with pytest.raises(argparse.ArgumentTypeError, match="integers such as 5,10, got 'a,b'"):
        parse_ints("a,b")
    with pytest.raises(argparse.ArgumentTypeError, match="numbers such as 0.125,0.5, got 'x'"):
        parse_floats("x")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("augment", "true", True),
        ("milestones", "20+30", (20, 30)),
        ("milestones", "none", ()),
        ("record_fractions", "0.25+0.5", (0.25, 0.5)),
        ("train_size", "None", None),
        ("train_size", "256", 256),
        ("epochs", " 3 ", 3),
        ("lr", "1e-3", 1e-3),
        ("method", "layerwise", "layerwise"),
    ],
)
def test_grid_value(name: str, text: str, expected: object) -> None:
    assert grid_value(name, getattr(TrainConfig(), name), text) == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("augment", "maybe", "augment: expected true or false, got 'maybe'"),
        ("milestones", "20+x", "milestones: expected integers joined by '+' such as 20+30"),
        ("record_fractions", "a", "record_fractions: expected numbers joined by '+'"),
        ("train_size", "all", "train_size: expected an integer or none, got 'all'"),
        ("epochs", "1.5", "epochs: expected an integer, got '1.5'"),
        ("lr", "fast", "lr: expected a number, got 'fast'"),
    ],
)
def test_bad_grid_value_names_the_field(name: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        grid_value(name, getattr(TrainConfig(), name), text)


def test_option_type_and_text_round_trip() -> None:
    cfg = TrainConfig(augment=True, milestones=(20, 30), record_fractions=(0.125, 0.5), lr=1e-3)
    for name in ("augment", "milestones", "record_fractions", "lr", "epochs", "method"):
        parse, _ = option_type(name, getattr(TrainConfig(), name))
        assert parse(option_text(getattr(cfg, name))) == getattr(cfg, name)
    assert option_type("augment", False) == (parse_bool, "true|false")
    assert option_type("train_size", None) == (int, None)  # argparse's own "invalid int value"
    assert option_type("lr", 5e-4) == (float, None)
    assert grid_help("milestones", ()) == (
        "N+N,...", "comma list of tuples: integers joined by '+', none = empty",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", 3), ("1e-3", 1e-3), ("(1, 2)", [1, 2]), ("None", None), ("cifar10", "cifar10")],
)
def test_parse_literal(text: str, expected: object) -> None:
    assert parse_literal(text) == expected


def test_every_command_names_the_bad_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--augment", "maybe"])
    assert exit_.value.code == 2
    assert (
        "error: argument --augment: expected true or false, got 'maybe'" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["train", "--milestones", "a,b"])
    assert "argument --milestones: expected comma-separated integers" in capsys.readouterr().err
    assert main(["sweep", "--dry-run", "--augment", "true,maybe"]) == 2
    assert capsys.readouterr().err == "error: augment: expected true or false, got 'maybe'\n"


def test_no_import_circle() -> None:
    """ibstudy.sweep does not import ibstudy.__main__; ibstudy.cli_values imports no other module."""
    code = (
        "import sys, ibstudy.sweep\n"
        "assert 'ibstudy.__main__' not in sys.modules, 'sweep imports __main__'\n"
        "import ibstudy.__main__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys, ibstudy.cli_values; print(sorted(m for m in sys.modules if 'ibstudy.' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "['ibstudy.cli_values']"
