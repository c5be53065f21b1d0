"""Regexes in configuration are RE2's, as in Envoy and gRPC, and matched by RE2.

Envoy's `safe_regex` and gRPC's route matchers compile with RE2, which has no
backreferences and no lookaround, and matches in time linear in the text. A pattern
Python's `re` takes but RE2 refuses would be matched here and NACKed by a proxyless gRPC
client, or refused by an Envoy: configuration is checked with RE2 itself, and refused with
RE2's reason (`re2_error`).

Matching is RE2's too (`Regex`): the text is a request's path or header value, which the
client chooses, and a backtracking engine such as Python's `re` takes exponential time on
patterns RE2 accepts (`(a+)+$` against forty `a`s and a `!`). The match goes straight to
the binding's compiled object, as the module's own wrapper does, without the wrapper's
Python layers: about 0.9 µs per `fullmatch` on a short path against 3.7 µs through them
(and 0.27 µs with `re`).
"""

from __future__ import annotations

import functools


@functools.cache
def _re2():
    """The RE2 binding, loaded at the first use: loading it adds about 2.6 MB to a
    process's RSS, which a sidecar with no regex in its config need not pay."""
    import re2

    return re2


# RE2's memory budget per regex, most of it the DFA's cache of states, which a text built
# against the pattern fills. RE2's default is 8 MB: twenty regexes of the kind
# `(a|b)*a(a|b){20}c` fed hostile 60 KB values grew a process by 69 MB with it, and by
# 8 MB with this. A full cache is dropped and rebuilt, or the match goes on with RE2's NFA:
# slower, still linear. Patterns far past any route's (50,000 instructions) still compile.
_MAX_MEM = 1 << 20


def _options(*, ignore_case: bool = False, captures: bool = True):
    options = _re2().Options()
    options.log_errors = False  # the reason is returned, not printed by the C++ library
    options.max_mem = _MAX_MEM
    options.case_sensitive = not ignore_case
    options.never_capture = not captures  # a match with no groups to report is cheaper
    return options


def _compile(pattern: str | bytes, options):
    """RE2's compiled `pattern`, or ValueError with RE2's reason for refusing it."""
    re2 = _re2()
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else str(exc)
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    except Exception as exc:  # hostile input: RE2 limits (pattern too large), bad encoding
        reason = str(exc) or type(exc).__name__
    raise ValueError(reason)


def re2_error(pattern: str | bytes) -> str | None:
    """RE2's reason for refusing `pattern`, or None if RE2 compiles it."""
    try:
        _compile(pattern, _options())
    except ValueError as exc:
        return str(exc)
    return None


class Regex:
    """A bytes pattern RE2 has compiled, matched whole against bytes.

    RE2's default UTF-8 mode, as in Envoy: `.` matches a whole UTF-8 character and no
    byte of an invalid sequence. `captures=True` keeps the groups, for `sub`."""

    __slots__ = ("pattern", "_args", "_compiled", "_match", "_both")

    def __init__(self, pattern: bytes, ignore_case: bool = False,
                 captures: bool = False) -> None:
        re2 = _re2()
        self.pattern = pattern
        self._args = (pattern, ignore_case, captures)
        self._compiled = _compile(pattern, _options(  # ValueError when refused
            ignore_case=ignore_case, captures=captures))
        self._match = self._compiled._regexp.Match  # the binding's RE2 object
        self._both = re2._Anchor.ANCHOR_BOTH

    def fullmatch(self, text: bytes) -> bool:
        """Whether the pattern matches all of `text`."""
        return self._match(self._both, text, 0, len(text))[0][0] >= 0

    @property
    def groups(self) -> int:
        return self._compiled.groups

    def sub(self, template: bytes, text: bytes) -> bytes:
        """Every match in `text` replaced by `template` (`\\1`, `\\g<0>`, as `re.sub`)."""
        return self._compiled.sub(template, text)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other._args == self._args

    def __hash__(self) -> int:
        return hash(self._args)

    def __reduce__(self):  # a config snapshot is pickled to the workers
        return Regex, self._args
