"""Which branches of a table may match a row, decided before any of them runs.

A branch's needle groups (``Branch.needle_groups``) are necessary conditions: literals one of which
a matching row must contain per group. :class:`TableDispatch` indexes them per table (equality by
dict lookup, substrings by one RE2 set search over the row's columns), remembers what recent column
values selected, and gates the branches made of regexes alone by RE2 sets of their patterns.
:class:`RowGate` asks the same index before a row is even built. Nothing here may drop a match
(tests/rules/test_prefilter*.py compare with running every branch on every row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import re2

from etwsensor.rules.multimatch import needle_search, regex_set
from etwsensor.rules.plan import Branch
from etwsensor.rules.scalars import as_text, regex_tester

if TYPE_CHECKING:
    from etwsensor.rules.ruleset import Rule

# Up to this many substring needles per table are tested with ``in`` (about 60 ns each); more
# go through one RE2 set search (about 2 us a call from Python, whatever the number of needles).
_SMALL_NEEDLE_SET = 16


GroupCheck = Callable[[dict[str, Any], dict[str, str]], bool]


def _lowered(row: dict[str, Any], column: str, cache: dict[str, str]) -> str:
    text = cache.get(column)
    if text is None:
        value = row.get(column)
        text = "" if not value else (value if type(value) is str else as_text(value)).lower()
        cache[column] = text
    return text


def _group_check(group: frozenset[tuple[str, str, bool]], indexes: dict[str, _ColumnIndex]) -> GroupCheck:
    """A test that one needle of ``group`` holds in a row (lower-cased texts cached per row).
    ``indexes``: the table's column indexes, whose memos say whether a column's values repeat."""
    exact: dict[str, set[str]] = {}
    substr: dict[str, list[str]] = {}
    for column, needle, is_exact in group:
        if is_exact:
            exact.setdefault(column, set()).add(needle)
        else:
            substr.setdefault(column, []).append(needle)
    exact_items = tuple((c, frozenset(v)) for c, v in sorted(exact.items()))
    substr_items = tuple(
        (
            c,
            tuple(ns),
            regex_tester("|".join(re2.escape(n) for n in ns)) if len(ns) > _SMALL_NEEDLE_SET else None,
        )
        for c, ns in sorted(substr.items())
    )

    def check(row: dict[str, Any], cache: dict[str, str]) -> bool:
        for column, values in exact_items:
            if _lowered(row, column, cache) in values:
                return True
        for column, needles, tester in substr_items:
            text = _lowered(row, column, cache)
            if not text:
                continue
            if tester is not None:
                if tester(text):
                    return True
                continue
            for needle in needles:
                if needle in text:
                    return True
        return False

    columns = {column for column, _n, _e in group}
    if len(columns) != 1:
        return check
    # One column (the usual case): the answer depends on its value alone, so remember it like
    # the table prefilter does (same bounds), while the table remembers that column's values: not
    # when they are new on nearly every row.
    (column,) = columns
    memo: dict[str, bool] = {}
    index = indexes.get(column)

    def check_one_column(row: dict[str, Any], cache: dict[str, str]) -> bool:
        value = row.get(column)
        if type(value) is not str or len(value) > _MEMO_MAX_LEN or (index is not None and not index.remember):
            return check(row, cache)
        hit = memo.get(value)
        if hit is None:
            hit = check(row, cache)
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[value] = hit
        return hit

    return check_one_column


# Per column, the prefilter's answer for a value is remembered: the Initiating* columns of a
# process's events, DLL paths, registry keys and most file names recur row after row, so most rows
# cost one dict lookup per needle column. Bounded (at most _MEMO_ENTRIES values of at most
# _MEMO_MAX_LEN characters per column; typically well under 1 MB a column): longer values, mostly
# unique command lines, are not remembered, and a full memo is emptied.
_MEMO_MAX_LEN = 512
_MEMO_ENTRIES = 4096
_MEMO_RETRY_ROWS = 16 * _MEMO_ENTRIES
_NEVER = 1 << 62
_NO_IDS: tuple[int, ...] = ()


# Branches made of regexes only run when an RE2 set over their patterns finds one (off: A/B runs).
_REGEX_GATE = True


class _RegexSet(NamedTuple):
    """The patterns of the regex-gated branches that test one column."""

    column: str
    match: Callable[[bytes], list[int]]  # UTF-8 text -> indexes of the patterns found in it
    ids: tuple[tuple[int, ...], ...]  # per pattern: positions of its branches in ``always``
    every: frozenset[int]  # all of them (a value the set cannot read)


class _ColumnIndex:
    """The first-group needles of one column and what its recent values selected."""

    __slots__ = (
        "column",
        "direct",
        "exact",
        "memo",
        "memoable",
        "remember",
        "retry",
        "searched",
        "since",
        "small",
        "whole",
        "width",
    )

    def __init__(
        self,
        column: str,
        exact: dict[str, list[int]],
        substr: dict[str, list[int]],
        small: bool,
        searched: bool,
    ) -> None:
        self.column = column
        self.searched = searched  # its substring needles are in the table's RE2 set
        self.exact = {n: tuple(ids) for n, ids in exact.items()}
        # Substring needles tested with ``in`` (tables with few); the others go to the table's set.
        self.small = tuple((n, tuple(ids)) for n, ids in sorted(substr.items())) if small else ()
        # Substring needles all of one length (hashes: Sigma's ``Hashes|contains``): a text of that
        # length contains one only if it equals it, and a shorter text none, so a dict lookup
        # decides; only longer texts are searched.
        lengths = {len(n) for n in substr}
        self.width = lengths.pop() if len(lengths) == 1 else 0
        self.whole = {n: tuple(ids) for n, ids in substr.items()} if self.width else {}
        # Decided by dict lookups on the lower-cased text, which cost what a memo lookup does (for a
        # column with a width: texts of that length or shorter).
        self.direct = not substr or self.width > 0
        self.memo: dict[str, tuple[int, ...]] = {}
        self.memoable = bool(substr)  # what a value selected may be remembered (equality needs no memo)
        # Whether values are remembered now: not for a while after the memo filled up with as many
        # values as there were rows (every value new: command lines, paths of a busy host), where
        # remembering costs a lookup and a write per row for nothing.
        self.remember = self.memoable
        self.since = 0  # the table's row count when the memo was last emptied
        self.retry = 0  # the row count at which a column that stopped remembering starts again


class TableDispatch:
    """The branches reading one table, with an exact literal prefilter in front of most of them.

    A branch's needle groups (see ``Branch.needle_groups``) are necessary conditions. The first,
    most selective group is indexed for the whole table: equality needles by a dict lookup per
    column on the lower-cased value, substring needles by ``in`` when there are few, else by one
    RE2 set search over the needle columns joined by NUL (a hit is then checked against its
    column). What a column's value selected is remembered (``_MEMO_ENTRIES``), so only the
    columns with new values are searched. Only the branches the first group selects have their
    other groups checked, and only those passing every group run. Branches without needles
    always run, unless they have a regex group (``Branch.regex_group``: rules made of regexes
    without a certain literal): those run only when one RE2 set search per column, over the
    patterns of all such branches, finds one of theirs. Nothing here can drop a match
    (tests/rules/test_prefilter.py).
    """

    def __init__(self, entries: list[tuple[Rule, Branch]], prefilter: bool = True) -> None:
        self.always: list[tuple[Rule, Branch]] = []
        self.filtered: list[tuple[Rule, Branch]] = []
        self.more: list[tuple[GroupCheck, ...]] = []  # per filtered branch: its other groups
        exact: dict[str, dict[str, list[int]]] = {}
        substr: dict[str, dict[str, list[int]]] = {}
        later: list[list[frozenset[tuple[str, str, bool]]]] = []
        for rule, branch in entries:
            if not branch.needle_groups or not prefilter:
                self.always.append((rule, branch))
                continue
            idx = len(self.filtered)
            self.filtered.append((rule, branch))
            first, *others = branch.needle_groups
            later.append(others)
            for column, needle, is_exact in sorted(first):
                by_needle = (exact if is_exact else substr).setdefault(column, {})
                by_needle.setdefault(needle, []).append(idx)
        names = sorted(exact.keys() | substr.keys())
        few = sum(len(m) for m in substr.values()) <= _SMALL_NEEDLE_SET
        self.columns = tuple(
            _ColumnIndex(c, exact.get(c, {}), substr.get(c, {}), few, not few and c in substr) for c in names
        )
        by_name = {c.column: c for c in self.columns}
        self.more = [tuple(_group_check(g, by_name) for g in others) for others in later]
        self.direct = tuple((pos, c) for pos, c in enumerate(self.columns) if c.direct)
        self.remembered: tuple[tuple[int, _ColumnIndex], ...] = ()
        self.unremembered: tuple[tuple[int, _ColumnIndex], ...] = ()
        self._sort_columns()
        self.rows = 0  # rows looked up so far: what the memos' usefulness is measured against
        self._retry_at = _NEVER
        self.search: Any = None
        self.search_needles: tuple[str, ...] = ()
        # Per needle of the set: (position in self.columns, branches) for each column it is for.
        self.search_where: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...] = ()
        # Needles with non-ASCII characters (Sigma's homoglyph and emoji lists) can only occur in
        # texts that are not ASCII: they have their own set, searched over such texts of their own
        # columns only (a "Microsoft® Windows®" product name must not send every row through it).
        self.wide_search: Any = None
        self.wide_needles: tuple[str, ...] = ()
        self.wide_where: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...] = ()
        self.wide_columns: tuple[int, ...] = ()
        if not few:
            where: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
            for pos, c in enumerate(names):
                for n, ids in sorted(substr.get(c, {}).items()):
                    where.setdefault(n, []).append((pos, tuple(ids)))
            narrow = sorted(n for n in where if n.isascii())
            wide = sorted(n for n in where if not n.isascii())
            self.search = needle_search(narrow) if narrow else None
            self.search_needles = tuple(narrow)
            self.search_where = tuple(tuple(where[n]) for n in narrow)
            if wide:
                self.wide_search = needle_search(wide)
                self.wide_needles = tuple(wide)
                self.wide_where = tuple(tuple(where[n]) for n in wide)
                self.wide_columns = tuple(sorted({pos for n in wide for pos, _ids in where[n]}))
        self.regex_gated: frozenset[int] = frozenset()  # positions in self.always
        self.regex_sets: tuple[_RegexSet, ...] = ()
        if _REGEX_GATE and prefilter:
            self._build_regex_sets()

    def _build_regex_sets(self) -> None:
        by_column: dict[str, dict[str, list[int]]] = {}
        for pos, (_rule, branch) in enumerate(self.always):
            for column, pattern in sorted(branch.regex_group):
                by_column.setdefault(column, {}).setdefault(pattern, []).append(pos)
        sets: list[_RegexSet] = []
        gated: set[int] = set()
        for column, patterns in sorted(by_column.items()):
            ordered = sorted(patterns)
            try:
                match = regex_set(ordered)
            except (re2.error, RuntimeError, MemoryError):  # the branches keep running on every row
                continue
            ids = tuple(tuple(patterns[p]) for p in ordered)
            sets.append(_RegexSet(column, match, ids, frozenset(i for p in ids for i in p)))
            gated.update(i for p in ids for i in p)
        # A branch is gated only if every column of its group has a set: else it always runs.
        complete = {
            pos
            for pos in gated
            if {c for c, _p in self.always[pos][1].regex_group} <= {s.column for s in sets}
        }
        self.regex_gated = frozenset(complete)
        self.regex_sets = tuple(sets)

    def _always(self, row: dict[str, Any]) -> list[tuple[Rule, Branch]]:
        """The branches without needles that may match ``row``: the regex-gated ones only when
        one of their patterns matches (a value that is not text, or not UTF-8: maybe)."""
        selected: set[int] = set()
        for rs in self.regex_sets:
            value = row.get(rs.column, "")
            if type(value) is str:
                try:
                    found = rs.match(value.encode("utf-8"))
                except UnicodeEncodeError:
                    selected |= rs.every
                    continue
                for h in found:
                    selected.update(rs.ids[h])
            else:
                selected |= rs.every
        gated = self.regex_gated
        return [e for i, e in enumerate(self.always) if i not in gated or i in selected]

    def _select(self, missed: list[tuple[int, _ColumnIndex, Any]], cache: dict[str, str]) -> set[int]:
        """The branches selected by the columns whose values were not remembered; remembers them."""
        texts: dict[int, str] = {}
        searched: list[str] = []
        found: dict[int, set[int]] = {}  # column position -> branches (only columns with a hit)
        remembering: list[tuple[int, _ColumnIndex, str]] | None = None
        for pos, index, value in missed:
            text = cache.get(index.column)
            if text is None:
                text = (value if type(value) is str else as_text(value)).lower()
                cache[index.column] = text
            if index.remember and type(value) is str and len(value) <= _MEMO_MAX_LEN:
                if remembering is None:
                    remembering = []
                remembering.append((pos, index, value))
            if not text:
                continue
            texts[pos] = text
            ids = index.exact.get(text)
            if ids:
                found[pos] = set(ids)
            if index.small:
                for needle, ids in index.small:
                    if needle in text:
                        found.setdefault(pos, set()).update(ids)
            if index.searched:
                searched.append(text)
        if searched:
            if self.search is not None:
                self._found(
                    self.search("\0".join(searched)), self.search_needles, self.search_where, texts, found
                )
            if self.wide_search is not None:
                wide = [t for pos in self.wide_columns if (t := texts.get(pos)) and not t.isascii()]
                if wide:
                    self._found(
                        self.wide_search("\0".join(wide)), self.wide_needles, self.wide_where, texts, found
                    )
        if remembering is not None:
            for pos, index, value in remembering:
                memo = index.memo
                if len(memo) >= _MEMO_ENTRIES:
                    self._memo_full(index)
                    if not index.remember:
                        continue
                hit = found.get(pos)
                memo[value] = tuple(hit) if hit else _NO_IDS
        if not found:
            return set()
        if len(found) == 1:
            (only,) = found.values()
            return only
        return set().union(*found.values())

    @staticmethod
    def _found(
        hits: Iterable[int],
        needles: tuple[str, ...],
        where: tuple[tuple[tuple[int, tuple[int, ...]], ...], ...],
        texts: dict[int, str],
        found: dict[int, set[int]],
    ) -> None:
        """Adds the branches of each needle found to ``found`` under each column it is in."""
        for h in hits:
            needle = needles[h]
            for pos, ids in where[h]:
                text = texts.get(pos)
                if text and needle in text:
                    found.setdefault(pos, set()).update(ids)

    def _memo_full(self, index: _ColumnIndex) -> None:
        """Empties a full memo; stops remembering the column for a while if nearly every row of
        the last fill brought a new value."""
        if self.rows - index.since <= _MEMO_ENTRIES + _MEMO_ENTRIES // 8:
            index.remember = False
            index.retry = self.rows + _MEMO_RETRY_ROWS
            self._retry_at = min(self._retry_at, index.retry)
            self._sort_columns()
        index.memo.clear()
        index.since = self.rows

    def _retry_memos(self) -> None:
        """Columns that stopped remembering start again (their values may repeat by now)."""
        for index in self.columns:
            if index.memoable and not index.remember and index.retry <= self.rows:
                index.remember = True
                index.since = self.rows
        self._retry_at = min((c.retry for c in self.columns if c.memoable and not c.remember), default=_NEVER)
        self._sort_columns()

    def _sort_columns(self) -> None:
        columns = [(pos, c) for pos, c in enumerate(self.columns) if not c.direct]
        self.remembered = tuple((pos, c) for pos, c in columns if c.remember)
        self.unremembered = tuple((pos, c) for pos, c in columns if not c.remember)

    def _first_group(
        self, row: dict[str, Any], base: dict[str, Any] | None, cache: dict[str, str]
    ) -> set[int] | None:
        """The branches whose first needle group ``row`` hits (a column missing from ``row`` is
        looked up in ``base``); None for none. Most rows hit nothing and allocate nothing."""
        hit: set[int] | None = None
        missed: list[tuple[int, _ColumnIndex, Any]] | None = None
        self.rows += 1
        if self.rows >= self._retry_at:
            self._retry_memos()
        # The column lookup is written out in each loop, not called: this runs per column per row.
        for pos, index in self.unremembered:
            column = index.column
            value = row.get(column)
            if value is None and base is not None:
                value = base.get(column)
            if value:
                if missed is None:
                    missed = []
                missed.append((pos, index, value))
        for pos, index in self.remembered:
            column = index.column
            value = row.get(column)
            if value is None and base is not None:
                value = base.get(column)
            if not value:
                continue
            ids = index.memo.get(value) if type(value) is str else None
            if ids is None:
                if missed is None:
                    missed = []
                missed.append((pos, index, value))
            elif ids:
                if hit is None:
                    hit = set()
                hit.update(ids)
        for pos, index in self.direct:
            column = index.column
            value = row.get(column)
            if value is None and base is not None:
                value = base.get(column)
            if not value:
                continue
            text = cache.get(column)
            if text is None:
                text = (value if type(value) is str else as_text(value)).lower()
                cache[column] = text
            ids = index.exact.get(text)
            width = index.width
            if width and len(text) >= width:
                if len(text) > width:  # may hold a needle anywhere: remembered or searched
                    known = index.memo.get(value) if index.remember and type(value) is str else None
                    if known is None:
                        if missed is None:
                            missed = []
                        missed.append((pos, index, value))
                    elif known:
                        ids = ids + known if ids else known
                elif ids:
                    ids = ids + index.whole.get(text, _NO_IDS)
                else:
                    ids = index.whole.get(text)
            if ids:
                if hit is None:
                    hit = set()
                hit.update(ids)
        if missed is not None:
            selected = self._select(missed, cache)
            if selected:
                hit = selected if hit is None else hit | selected
        return hit

    def selects_any(self, own: dict[str, Any], base: dict[str, Any] | None) -> bool:
        """Whether any branch could match a row whose prefilter columns are in ``own``, else in
        ``base`` (see ``RowGate``). Only the first needle group is consulted: a hit means "maybe"."""
        return bool(self.always) or self._first_group(own, base, {}) is not None

    def candidates(
        self, row: dict[str, Any], cache: dict[str, str] | None = None
    ) -> list[tuple[Rule, Branch]]:
        """The branches that may match ``row``; ``cache`` holds its lower-cased column texts."""
        if cache is None:
            cache = {}
        hit = self._first_group(row, None, cache)
        always = self._always(row) if self.regex_gated else self.always
        if not hit:
            return always
        more, filtered = self.more, self.filtered
        chosen = list(always)
        for i in sorted(hit):
            for check in more[i]:
                if not check(row, cache):
                    break
            else:
                chosen.append(filtered[i])
        return chosen


class RowGate:
    """Whether a row of one table can match any loaded rule, decided on the table's prefilter
    columns alone, so that the normalizer can ask before it builds the rest of a row and skip the
    rows no rule can match (most image loads). Conservative: "maybe" whenever a first needle
    group is hit; ``RuleSet.row_gates`` gives none for tables where every row must be evaluated.
    """

    __slots__ = ("_dispatch", "columns")

    def __init__(self, columns: frozenset[str], dispatch: TableDispatch | None) -> None:
        self.columns = columns  # the row must supply these for the answer to hold
        self._dispatch = dispatch  # None: no rule reads the table

    def might_match(self, own: dict[str, Any], base: dict[str, Any] | None = None) -> bool:
        """``own``: the row's own columns; ``base``: the columns it would copy (InitiatingProcess*)."""
        return self._dispatch is not None and self._dispatch.selects_any(own, base)
