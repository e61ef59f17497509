"""Kinds of rule for config keys (an integer in a range, a choice, a flag, a list of ...), used by the tables of
prunelab/validate.py.  `Rule.check(key, value)` raises a `UserError` of one line that names the key, the value
and what the key takes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prunelab.errors import UserError, choose
from prunelab.methods.channel import parse_rates


def show(value: Any) -> str:
    """A value as the command line writes it (null, true, [1,64])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def _number(bound: float | None) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}" if bound is not None else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One key's rule: `check(key, value)` raises a `UserError` naming the key, or returns."""

    null: bool = field(default=False, kw_only=True)  # null is allowed (it then means what `help` says)
    help: str = field(default="", kw_only=True)  # what the key (or its null) means, added to the message

    def check(self, key: str, value: Any) -> None:
        if value is None and self.null:
            return
        problem = self.problem(key, value)
        if problem:
            raise UserError(f"{key}={show(value)} {problem}" + (f" ({self.help})" if self.help else ""))

    def problem(self, key: str, value: Any) -> str | None:
        """What is wrong with a non-null `value` ("must be ..."), or None."""
        raise NotImplementedError

    def _or_null(self, text: str) -> str:
        return f"null or {text}" if self.null else text


@dataclass(frozen=True)
class Range(Rule):
    """A number (`Real`) or an integer (`Int`) between optional bounds."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    integer = False

    def bounds(self) -> str:
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return ""

    def describe(self) -> str:
        noun = "an integer" if self.integer else "a number"
        return self._or_null(f"{noun} {self.bounds()}".strip())

    def problem(self, key: str, value: Any) -> str | None:
        if not (_is_int(value) if self.integer else _is_number(value)):
            return f"is not {'an integer' if self.integer else 'a number'}: give {self.describe()}"
        if not math.isfinite(value):
            return f"is not finite: give {self.describe()}"
        below = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        above = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        return f"must be {self.bounds()}" if below or above else None


@dataclass(frozen=True)
class Real(Range):
    pass


@dataclass(frozen=True)
class Int(Range):
    integer = True


@dataclass(frozen=True)
class Flag(Rule):
    def problem(self, key: str, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"is not {self._or_null('true or false')}"


@dataclass(frozen=True)
class OneOf(Rule):
    """One of `options` (a tuple, or a registry whose keys are the options)."""

    options: Sequence[str] | Mapping[str, Any] = ()

    def problem(self, key: str, value: Any) -> str | None:
        choose(key, str(value) if isinstance(value, str) else show(value), list(self.options))
        return None


@dataclass(frozen=True)
class Text(Rule):
    """Free text: a name, a path, a tag."""

    def problem(self, key: str, value: Any) -> str | None:
        return None if isinstance(value, (str, int, float)) and not isinstance(value, bool) else \
            f"is not {self._or_null('text')}"


@dataclass(frozen=True)
class Free(Rule):
    """Anything: a lookup table an experiment interpolates into keys that have rules (e.g. `rates`)."""

    def problem(self, key: str, value: Any) -> str | None:
        return None


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items each follow `item` (reported as key[i]), of `length` items or at least `min_len`."""

    item: Rule = field(default_factory=Free)
    length: int | None = None
    min_len: int = 0
    example: str = "[1,2]"

    def problem(self, key: str, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"is not a list: give {self._or_null('a list')}, e.g. {key}={self.example}"
        if self.length is not None and len(value) != self.length:
            return f"has {len(value)} items: give {self.length}, e.g. {key}={self.example}"
        if len(value) < self.min_len:
            return f"has {len(value)} items: give at least {self.min_len}, e.g. {key}={self.example}"
        for i, item in enumerate(value):
            self.item.check(f"{key}[{i}]", item)
        return None


@dataclass(frozen=True)
class AnyOf(Rule):
    """A value that one of `rules` accepts, described by `says` when none does."""

    rules: tuple[Rule, ...] = ()
    says: str = ""

    def problem(self, key: str, value: Any) -> str | None:
        for rule in self.rules:
            try:
                rule.check(key, value)
                return None
            except UserError:
                pass
        return f"is not {self._or_null(self.says)}"


@dataclass(frozen=True)
class Regex(Rule):
    def problem(self, key: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return "is not text: give a regular expression of module names"
        try:
            re.compile(value)
        except re.error as err:
            return f"is not a regular expression ({err})"
        return None


@dataclass(frozen=True)
class Rates(Rule):
    """Per-layer pruning rates: a list, or HRankPlus's string such as "[0.]+[0.15]*2+[0.4]*27"."""

    def problem(self, key: str, value: Any) -> str | None:
        if not isinstance(value, (str, list, tuple)):
            return "is not a list of rates or a string like '[0.]+[0.4]*29'"
        parse_rates(value, key)
        return None


@dataclass(frozen=True)
class Off(Rule):
    """A section that is on by default (its keys) and turned off by false or null."""

    on: str = ""

    def problem(self, key: str, value: Any) -> str | None:
        return None if value is False else f"is not false: give {key}=false (or null) to turn it off, or set its keys, " \
            f"e.g. {self.on}"
