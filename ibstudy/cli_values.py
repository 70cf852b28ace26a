"""Command-line text -> config values, for ``train``, ``measure``, ``sweep`` and ``run`` alike.

One place says how a config field's value is written on the command line. ``train`` and
``measure`` take one value per ``--field`` (``option_type``): booleans ``true``/``false`` (also
1/0, yes/no), tuple fields as comma lists (``--milestones 20,30``), ``record_fractions`` as numbers
(``0.125,0.5``), everything else with the field's own type. ``sweep`` takes a comma list of such
values per field (``grid_value`` parses one of them): tuples are then joined by ``+`` (``20+30``)
with ``none`` for the empty tuple, and ``--train-size`` also takes ``none``. ``run`` passes notebook
parameters as Python literals (``parse_literal``); ``option_text`` writes a value for ``train``.

Errors name what was expected: argparse's ``ArgumentTypeError`` for option types (argparse prefixes
the option), ``ValueError`` naming the field for grid values. Only the standard library here.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from typing import Any

__all__ = [
    "comma_list",
    "grid_help",
    "grid_value",
    "option_text",
    "option_type",
    "parse_bool",
    "parse_floats",
    "parse_ints",
    "parse_literal",
    "parse_optional_int",
    "parse_plus_tuple",
]

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")
_LITERAL_TYPES = (bool, int, float, str, list, tuple, dict, type(None))
#: how a grid value of each kind is described in error messages
_GRID_KINDS = {
    "bool": "true or false",
    "floats": "numbers joined by '+' such as 0.25+0.5, or none for the empty tuple",
    "ints": "integers joined by '+' such as 20+30, or none for the empty tuple",
    "optional_int": "an integer or none",
    "int": "an integer",
    "float": "a number",
}


def parse_bool(text: str) -> bool:
    """``true``/``1``/``yes`` -> True, ``false``/``0``/``no`` -> False (any case); else
    ArgumentTypeError."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def comma_list(cast: Callable[[str], Any], what: str, example: str) -> Callable[[str], tuple]:
    """An argparse type: comma-separated values of ``cast`` as a tuple (blank entries skipped);
    a bad entry raises ArgumentTypeError naming ``what`` with ``example``."""

    def parse(text: str) -> tuple:
        try:
            return tuple(cast(t) for t in text.split(",") if t.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} such as {example}, got {text!r}"
            ) from None

    return parse


#: comma-separated integers (``5,10`` -> (5, 10)): the type of tuple options (``--milestones``)
parse_ints = comma_list(int, "integers", "5,10")
#: comma-separated numbers (``0.125,0.5``); the type of ``--record-fractions``
parse_floats = comma_list(float, "numbers", "0.125,0.5")


def parse_plus_tuple(text: str, cast: Callable[[str], Any] = int) -> tuple:
    """One sweep tuple value: ``20+30`` -> (20, 30) with ``cast``; ``none`` (any case) -> ()."""
    return () if text.lower() == "none" else tuple(cast(t) for t in text.split("+"))


def parse_optional_int(text: str) -> int | None:
    """``none`` (any case) -> None, else ``int(text)`` (ValueError for other text)."""
    return None if text.lower() == "none" else int(text)


def _kind(name: str, default: Any) -> str:
    """How field ``name`` (this default) is written: bool, floats, ints, optional_int or a type."""
    if isinstance(default, bool):
        return "bool"
    if name == "record_fractions":
        return "floats"
    if isinstance(default, tuple):
        return "ints"
    if name == "train_size":
        return "optional_int"
    return type(default).__name__


def option_type(name: str, default: Any) -> tuple[Callable[[str], Any], str | None]:
    """(argparse type, metavar) of the ``--field`` option of ``train`` / ``measure`` for a config
    field with this default (``train_size``: int; plain types keep argparse's own messages)."""
    kind = _kind(name, default)
    if kind == "bool":
        return parse_bool, "true|false"
    if kind == "floats":
        return parse_floats, "F,F,..."
    if kind == "ints":
        return parse_ints, "N,N,..."
    if kind == "optional_int":
        return int, None
    return type(default), None


def grid_value(name: str, default: Any, text: str) -> Any:
    """One sweep-grid value of field ``name`` (this default) from its text; ValueError naming the
    field and what it expects."""
    kind = _kind(name, default)
    parse: Callable[[str], Any] = {
        "bool": parse_bool,
        "floats": lambda t: parse_plus_tuple(t, float),
        "ints": parse_plus_tuple,
        "optional_int": parse_optional_int,
    }.get(kind, type(default))
    try:
        return parse(text.strip())
    except (ValueError, argparse.ArgumentTypeError):
        expected = _GRID_KINDS.get(kind, "a string")
        raise ValueError(f"{name}: expected {expected}, got {text.strip()!r}") from None


def grid_help(name: str, default: Any) -> tuple[str, str]:
    """(metavar, help) of field ``name``'s comma-list option of ``sweep``."""
    kind = _kind(name, default)
    if kind == "bool":
        return "B,...", "comma list of true|false"
    if kind in ("floats", "ints"):
        return "N+N,...", "comma list of tuples: integers joined by '+', none = empty"
    if kind == "optional_int":
        return "N,...", "comma list of integers or none (all images)"
    return {"int": "N,...", "float": "X,..."}.get(kind, "S,..."), "comma list"


def option_text(value: Any) -> str:
    """A config value as ``train``'s option text (the inverse of ``option_type``'s parsing)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def parse_literal(text: str) -> Any:
    """A ``run -p NAME VALUE`` value as a Python literal (int, float, bool, None, list, dict), else
    the text itself: "3" -> 3, "1e-3" -> 0.001, "(1, 2)" -> [1, 2], "cifar10" -> "cifar10"."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if not isinstance(value, _LITERAL_TYPES):
        return text
    return list(value) if isinstance(value, tuple) else value
