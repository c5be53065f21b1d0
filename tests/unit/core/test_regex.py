"""Configured regexes are compiled and matched by RE2 (plait.core.regex)."""

from __future__ import annotations

import pickle

import pytest

from plait.core.regex import Regex, re2_error


@pytest.mark.parametrize("pattern,text,matched", [
    (b"/items/[0-9]+", b"/items/42", True),
    (b"/items/[0-9]+", b"/items/42/x", False),  # the whole text, not a prefix
    (b"[0-9]+", b"x42", False),  # nor a substring
    (b"on|yes", b"yes", True),
    (b"a.c", b"a\xc3\xa9c", True),  # `.` is one UTF-8 character, as in Envoy
    (b"a.c", b"a\xffc", False),  # and no byte of an invalid sequence
    (b"", b"", True),
])
def test_fullmatch(pattern, text, matched):
    assert Regex(pattern).fullmatch(text) is matched


def test_ignore_case():
    assert Regex(b"/API/v[0-9]", ignore_case=True).fullmatch(b"/api/V1")
    assert not Regex(b"/API/v[0-9]").fullmatch(b"/api/V1")
    assert Regex(b"(?i)/API").fullmatch(b"/api")


@pytest.mark.parametrize("pattern,hostile,good", [
    (b"(a+)+$", b"a" * 40 + b"!", b"aaaa"),  # nested repeats: exponential when backtracking
    (b"(x+x+)+y", b"x" * 5000, b"xxy"),
    (b".*a.*b", b"a" * 60_000, b"ab"),  # two unbounded repeats: quadratic when backtracking
])
def test_patterns_that_backtrack_are_matched_in_linear_time(pattern, hostile, good):
    # Python's re takes hours on the first two hostile texts and minutes on the third;
    # a regression shows as this test's timeout.
    r = Regex(pattern)
    assert not r.fullmatch(hostile)
    assert r.fullmatch(good)


def test_sub_with_groups_as_in_a_rewrite():
    r = Regex(b"^/api/v([0-9]+)/(.*)$", captures=True)
    assert r.groups == 2
    assert r.sub(b"/v\\g<1>/\\g<2>", b"/api/v2/users/7") == b"/v2/users/7"
    assert Regex(b"o", captures=True).sub(b"0", b"foo boo") == b"f00 b00"  # every match
    assert Regex(b"b", captures=True).sub(b"\\\\", b"abc") == b"a\\c"


def test_survives_pickling_with_its_options():
    # a config snapshot travels pickled to --concurrency workers
    r = Regex(b"/API/.*", ignore_case=True)
    copy = pickle.loads(pickle.dumps(r))
    assert copy == r and copy.fullmatch(b"/api/x")
    assert copy != Regex(b"/API/.*")


@pytest.mark.parametrize("pattern,reason", [
    (b"(a)\\1", "invalid escape sequence"),
    (b"a(?=b)", "perl operator"),
    (b"(a", "missing )"),
])
def test_re2_error_gives_re2s_reason(pattern, reason):
    assert reason in re2_error(pattern)
    assert re2_error(b"/items/[0-9]+") is None
    with pytest.raises(ValueError, match=reason.replace(")", r"\)")):
        Regex(pattern)
