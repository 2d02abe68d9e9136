"""Many literal needles at once, whatever their number: IOC lists of 100k+ entries in ``has_any``,
``in~``/``contains`` groups and the prefilter.

RE2 (one set, or one alternation) is the fastest search while it compiles within its memory bound; a
list past ``_RE2_MAX_NEEDLES`` needles or ``_RE2_MAX_BYTES`` bytes, or one RE2 refuses, goes to an
Aho-Corasick automaton (pyahocorasick, BSD-3-Clause), which is linear in the text and takes any number
of needles. Both report the same needles; only the speed differs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ahocorasick
import re2

_RE2_MAX_NEEDLES = 5_000
_RE2_MAX_BYTES = 256 << 10
_RE2_MAX_MEM = 256 << 20


def _fits_re2(needles: Sequence[str]) -> bool:
    return len(needles) <= _RE2_MAX_NEEDLES and sum(len(n) for n in needles) <= _RE2_MAX_BYTES


def _automaton(needles: Iterable[str]) -> Any:
    automaton = ahocorasick.Automaton()
    for index, needle in enumerate(needles):
        if needle:
            automaton.add_word(needle, (index, len(needle)))
    if len(automaton):
        automaton.make_automaton()
    return automaton


def needle_search(needles: Sequence[str]) -> Callable[[str], Iterable[int]]:
    """``text -> indexes of the needles occurring in it`` (each at least once; order unspecified).

    Give needles with non-ASCII characters (Sigma's homoglyph and emoji lists) a search of their own,
    used only on texts that are not ASCII: in one automaton with the ASCII needles they would widen
    every state that all the ASCII text goes through.
    """
    return _one_search(needles)


# A large RE2 set builds its DFA while it searches: ~250M instructions for the 3,000 ASCII needles of
# the process table's Sigma rules before it runs at a quarter of the automaton's cost per text. So a
# set of this many needles starts as an automaton and becomes an RE2 set after this many searches,
# once the saving can repay the warm-up (short replays never pay it).
_WARM_NEEDLES = 1_000
_RE2_AFTER = 2_000


def _one_search(needles: Sequence[str]) -> Callable[[str], Iterable[int]]:
    if _fits_re2(needles) and len(needles) >= _WARM_NEEDLES:
        return _warming_search(needles)
    if _fits_re2(needles):
        try:
            return _re2_set(needles)
        except (re2.error, RuntimeError, MemoryError):  # "failed to compile Set": too big for its memory
            pass
    automaton = _automaton(needles)
    if not len(automaton):
        return lambda _text: ()
    found = automaton.iter
    return lambda text: {index for _end, (index, _n) in found(text)}


def _warming_search(needles: Sequence[str]) -> Callable[[str], Iterable[int]]:
    """The automaton for the first ``_RE2_AFTER`` texts, then an RE2 set (the same needles found)."""
    automaton = _automaton(needles)
    if not len(automaton):
        return lambda _text: ()
    found = automaton.iter
    state: list[Any] = [0, None]  # searches so far, the RE2 set once built

    def search(text: str) -> Iterable[int]:
        fast = state[1]
        if fast is not None:
            return fast(text)  # type: ignore[no-any-return]
        state[0] += 1
        if state[0] == _RE2_AFTER:
            with contextlib.suppress(re2.error, RuntimeError, MemoryError):  # else the automaton stays
                state[1] = _re2_set(needles)
        return {index for _end, (index, _n) in found(text)}

    return search


def _re2_set(needles: Sequence[str]) -> Callable[[str], Iterable[int]]:
    opts = re2.Options()
    opts.max_mem = _RE2_MAX_MEM
    matcher = re2.Set.SearchSet(opts)
    for n in needles:
        matcher.Add(re2.escape(n))
    matcher.Compile()  # re2.error when the set does not fit its memory
    raw = getattr(matcher, "_set", None)  # the C++ set: skips the wrapper's per-call type checks
    if raw is not None and hasattr(raw, "Match"):
        match = raw.Match
        return lambda text: match(text.encode("utf-8", "surrogatepass"))
    return lambda text: matcher.Match(text) or ()


def regex_set(patterns: Sequence[str]) -> Callable[[bytes], list[int]]:
    """``UTF-8 text -> indexes of the patterns that match somewhere in it``: one RE2 set, compiled
    with the options ``matches regex`` uses, so a pattern is found exactly when its own test is
    true. Raises ``re2.error`` when a pattern or the set does not compile."""
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = _RE2_MAX_MEM
    matcher = re2.Set.SearchSet(opts)
    for p in patterns:
        matcher.Add(p)
    matcher.Compile()
    raw = getattr(matcher, "_set", None)
    if raw is not None and hasattr(raw, "Match"):
        match: Callable[[bytes], list[int]] = raw.Match
        return match
    return lambda data: matcher.Match(data) or []


def any_substring(
    needles: Sequence[str], regex_tester: Callable[[str], Callable[[str], bool]]
) -> Callable[[str], bool]:
    """``text -> does any needle occur in it``: one RE2 alternation (``regex_tester``) while it fits,
    else the automaton."""
    if _fits_re2(needles):
        try:
            return regex_tester("|".join(re2.escape(n) for n in needles))
        except (re2.error, RuntimeError, MemoryError):
            pass
    if any(not n for n in needles):
        return lambda _text: True
    automaton = _automaton(needles)
    found = automaton.iter

    def test(text: str) -> bool:
        for _hit in found(text):
            return True
        return False

    return test


def any_term(needles: Sequence[str], is_term_char: Callable[[str], bool]) -> Callable[[str], bool]:
    """``lowered text -> does any needle occur as a term`` (KQL ``has_any``): each hit of the automaton
    is checked for term boundaries at its alphanumeric ends, as ``has`` does for one needle."""
    if any(not n for n in needles):
        return lambda _text: True
    automaton = _automaton(needles)
    found = automaton.iter
    ends = [(is_term_char(n[0]), is_term_char(n[-1])) for n in needles]

    def test(text: str) -> bool:
        size = len(text)
        for end, (index, n) in found(text):
            start, stop = end - n + 1, end + 1
            left, right = ends[index]
            if (not left or start == 0 or not is_term_char(text[start - 1])) and (
                not right or stop == size or not is_term_char(text[stop])
            ):
                return True
        return False

    return test
