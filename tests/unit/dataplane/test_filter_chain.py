"""The filter chain walk of an exchange (`Exchange.start`, `Exchange.resume`): every filter
in order, then the router, once; a filter that stops holds the request, and its
`ex.resume()` goes on from the next filter, whether it comes later (a fault delay) or
before the filter has returned STOP."""

from __future__ import annotations

from types import SimpleNamespace

from plait.dataplane.http.exchange import Exchange


class Walk(Exchange):
    """An exchange whose router only notes that it ran."""

    __slots__ = ()

    def forward(self) -> None:
        self.mgr.log.append("router")


def exchange(*chain) -> tuple[Walk, list]:
    log: list = []
    mgr = SimpleNamespace(filters=tuple(chain), log=log, access_log=None,
                          router=SimpleNamespace(
                              route=lambda request: SimpleNamespace(route=SimpleNamespace())))
    return Walk(SimpleNamespace(mgr=mgr), SimpleNamespace()), log


class Go:
    def __init__(self, name: str) -> None:
        self.name = name

    def on_request(self, ex) -> bool:
        ex.mgr.log.append(self.name)
        return True


class Hold(Go):
    """Stops the request; the test resumes it (as a fault delay's timer does)."""

    def on_request(self, ex) -> bool:
        ex.mgr.log.append(self.name)
        return False


class ResumeAtOnce(Go):
    """Stops, but resumes the request before returning."""

    def on_request(self, ex) -> bool:
        ex.mgr.log.append(self.name)
        ex.resume()
        ex.mgr.log.append(f"{self.name} returns")
        return False


def test_every_filter_then_the_router():
    ex, log = exchange(Go("a"), Go("b"))
    ex.start()
    assert log == ["a", "b", "router"]


def test_a_filter_that_answers_ends_the_walk():
    ex, log = exchange(Go("a"), Hold("answers"), Go("b"))
    ex.start()
    assert log == ["a", "answers"]


def test_a_held_request_goes_on_from_the_next_filter():
    ex, log = exchange(Go("a"), Hold("delay"), Go("b"))
    ex.start()
    assert log == ["a", "delay"]
    ex.resume()
    assert log == ["a", "delay", "b", "router"]


def test_two_holds_in_turn():
    ex, log = exchange(Hold("first"), Go("a"), Hold("second"), Go("b"))
    ex.start()
    ex.resume()
    assert log == ["first", "a", "second"]
    ex.resume()
    assert log == ["first", "a", "second", "b", "router"]


def test_a_resume_before_returning_goes_on_once_the_filter_has_returned():
    ex, log = exchange(Go("a"), ResumeAtOnce("now"), Go("b"))
    ex.start()
    assert log == ["a", "now", "now returns", "b", "router"]


def test_a_resume_at_once_after_a_hold_and_a_hold_after_it():
    ex, log = exchange(Hold("delay"), ResumeAtOnce("now"), Hold("later"), Go("b"))
    ex.start()
    assert log == ["delay"]
    ex.resume()
    assert log == ["delay", "now", "now returns", "later"]
    ex.resume()
    assert log == ["delay", "now", "now returns", "later", "b", "router"]
    assert log.count("router") == 1


def test_the_last_filter_resuming_at_once_lets_the_router_run():
    ex, log = exchange(Go("a"), ResumeAtOnce("now"))
    ex.start()
    assert log == ["a", "now", "now returns", "router"]
