"""When an export is tried again: the retry schedule and the classification of failures.

Attempts are numbered from 1.  After failed attempt ``n`` the next one waits
``next_delay(n)``: ``backoff_seconds * 2 ** (n - 1)``, capped at
``max_backoff_seconds`` (2, 4, 8, ... s with the defaults); there is a next
attempt while ``n < attempts``.

A failure is worth retrying when the destination may accept later:

- ``"retry"``: unreachable (refused, reset, no route), the association timed
  out or was aborted, a *transient* rejection (A-ASSOCIATE-RJ result 2, e.g.
  temporary congestion or local limit exceeded), and instances refused for
  lack of resources (0xA7xx), left unanswered when the association ended, or
  not sent before the attempt's lease ran out;
- ``"fail"``: a *permanent* rejection (A-ASSOCIATE-RJ result 1, e.g. called
  or calling AE title not recognised), a TLS handshake failure, no acceptable
  presentation context, and results where every failed instance was refused
  for what it is (0xA9xx data set does not match SOP class, 0xCxxx cannot
  understand, 0x01xx/0x02xx such as SOP class not supported or not
  authorized) or could not be read.

A :class:`~clara_ray.export.outcome.SendResult` with any retryable failure is
``"retry"``; resending the instances that were refused for good is harmless
(a PACS stores an instance once).
"""

from __future__ import annotations

from typing import Literal

from clara_ray.config.dicom import ExportSettings
from clara_ray.export.outcome import (
    REASON_ABORTED,
    REASON_TIMEOUT,
    DicomSendError,
    SendResult,
)

__all__ = ["Decision", "classify", "classify_status", "next_delay", "should_retry"]

Decision = Literal["retry", "fail"]

REJECTED_TRANSIENT = 0x02
"""A-ASSOCIATE-RJ result: rejected (transient)."""

_RETRYABLE_KINDS = frozenset({"unreachable", "timeout", "aborted"})
_RETRYABLE_REASONS = frozenset({REASON_ABORTED, REASON_TIMEOUT})


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more (attempts count from 1), got {attempt}")


def next_delay(attempt: int, settings: ExportSettings) -> float:
    """Seconds to wait after failed attempt ``attempt`` before the next one."""
    _check_attempt(attempt)
    # 2 ** 64 already exceeds any cap; avoid huge ints for absurd attempt numbers.
    exponent = min(attempt - 1, 64)
    return float(min(settings.backoff_seconds * 2.0**exponent, settings.max_backoff_seconds))


def should_retry(attempt: int, settings: ExportSettings) -> bool:
    """Whether failed attempt ``attempt`` may be followed by another (``attempt < attempts``)."""
    _check_attempt(attempt)
    return attempt < settings.attempts


def classify_status(status: int | str) -> Decision:
    """One failed instance: a DIMSE status code, or a local reason from ``SendResult.failed``."""
    if isinstance(status, str):
        return "retry" if status.split(":", 1)[0] in _RETRYABLE_REASONS else "fail"
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int or a str, got {type(status).__name__}")
    return "retry" if 0xA700 <= status <= 0xA7FF else "fail"


def classify(error: DicomSendError | SendResult | BaseException) -> Decision:
    """``"retry"`` or ``"fail"`` for what an export attempt ended with (module docstring).

    ``error`` is the :class:`DicomSendError` raised by ``send_files``/``echo``,
    the :class:`SendResult` it returned with failures, or any other exception
    (an ``OSError`` counts as a network failure and is retried; anything else
    is a bug or a bad input and is not).
    """
    if isinstance(error, DicomSendError):
        if error.kind == "rejected":
            transient = error.reject is not None and error.reject[0] == REJECTED_TRANSIENT
            return "retry" if transient else "fail"
        return "retry" if error.kind in _RETRYABLE_KINDS else "fail"
    if isinstance(error, SendResult):
        if not error.failed:
            raise ValueError("classify() got a SendResult without failures; nothing to retry")
        decisions = {classify_status(status) for _, status in error.failed}
        return "retry" if "retry" in decisions else "fail"
    if isinstance(error, OSError):
        return "retry"
    if isinstance(error, BaseException):
        return "fail"
    raise TypeError(
        f"classify() expects a DicomSendError, a SendResult or an exception, "
        f"got {type(error).__name__}"
    )
