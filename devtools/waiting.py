"""One way to wait for something: ask until the answer is truthy, within a deadline.

    body = wait_for("the processor to answer /health", lambda: health_or_none(url), 60)

Built on tenacity so that no script or test carries its own deadline-and-sleep loop. A probe
that raises stops the wait at once with that exception (e.g. "the process died"): only a falsy
answer means "ask again".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

__all__ = ["WaitTimeout", "wait_for"]

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The deadline of wait_for passed; the message names what was awaited and the last answer."""


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout_s: float = 60.0,
    every_s: float = 0.2,
) -> T:
    """Call *probe* every *every_s* until it returns something truthy, and return that.

    Raises WaitTimeout after *timeout_s*, or whatever *probe* raises.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        retry=retry_if_result(lambda answer: not answer),
        reraise=True,
    )
    try:
        answer = retrying(probe)
    except RetryError as exc:
        last = exc.last_attempt.result()
        raise WaitTimeout(
            f"timed out after {timeout_s:.0f} s waiting for {what} (last={last!r})"
        ) from None
    assert answer is not None  # retry_if_result only lets a truthy answer through
    return answer
