"""Setting a restored guest's clock (``Restorable._set_clock``) against a fake agent whose
answers are late, as on a loaded host: the time is taken when a request is sent, so a late
answer means the guest's clock may be that far behind, and the time is sent again."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from pytest_dtsvirt.errors import AgentReplyError
from pytest_dtsvirt.qemu import fresh


class LateAgent:
    """Answers ``guest-set-time`` after the given delays (one per request)."""

    def __init__(self, *delays: float, desc: str = "") -> None:
        self.delays = list(delays)
        self.desc = desc
        self.sent: list[int] = []

    def command(self, name: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        assert name == "guest-set-time" and timeout
        self.sent.append(args["time"])
        time.sleep(self.delays.pop(0))
        if self.desc:
            raise AgentReplyError(name, "GenericError", self.desc)
        return {}


class Ladder:
    def attempt_timeout(self, seconds: float) -> float:
        return seconds


class Vm(fresh.Restorable):
    vm_name = "vm0"


def test_a_quick_answer_sets_the_clock_once() -> None:
    agent = LateAgent(0.0)
    before = time.time_ns()
    Vm()._set_clock(agent, Ladder())  # type: ignore[arg-type]
    assert len(agent.sent) == 1 and before <= agent.sent[0] <= time.time_ns()


def test_a_late_answer_is_followed_by_a_new_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pytest_dtsvirt")
    agent = LateAgent(fresh.CLOCK_SLACK_S + 0.15, 0.0)
    Vm()._set_clock(agent, Ladder())  # type: ignore[arg-type]
    assert len(agent.sent) == 2
    assert agent.sent[1] - agent.sent[0] >= (fresh.CLOCK_SLACK_S + 0.15) * 1e9
    assert "setting it again" in caplog.text and "WARNING" not in caplog.text


def test_always_late_warns_with_how_far_behind(caplog: pytest.LogCaptureFixture) -> None:
    agent = LateAgent(*[fresh.CLOCK_SLACK_S + 0.05] * fresh.CLOCK_ATTEMPTS)
    Vm()._set_clock(agent, Ladder())  # type: ignore[arg-type]
    assert len(agent.sent) == fresh.CLOCK_ATTEMPTS
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "may be up to 0.2" in warning[0].getMessage()


def test_hwclock_failing_after_the_set_is_not_an_error() -> None:
    agent = LateAgent(0.0, desc="hwclock failed to set hardware clock to system time")
    Vm()._set_clock(agent, Ladder())  # type: ignore[arg-type]
    assert len(agent.sent) == 1
    other = LateAgent(0.0, desc="Permission denied")
    with pytest.raises(AgentReplyError):
        Vm()._set_clock(other, Ladder())  # type: ignore[arg-type]
