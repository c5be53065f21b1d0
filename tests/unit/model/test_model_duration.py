import math

import pytest

from plait.model import parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("5s", 5.0),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m3.5s", 123.5),
        ("250us", 0.00025),
        ("10ns", 1e-8),
        ("0s", 0.0),
        ("0", 0.0),
        (".5s", 0.5),
    ],
)
def test_valid_durations(text, seconds):
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["", "5", "-1s", "5 s", "s", "1.2.3s", "5sec", "1d", "ms", "1s ", " 1s"])
def test_invalid_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_not_a_string():
    with pytest.raises(ValueError, match="string"):
        parse_duration(5)
