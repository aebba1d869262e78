"""Argument checks whose errors name exactly the arguments that failed, each with its value and the rule."""

from __future__ import annotations

__all__ = ["check_each"]


def check_each(*checks: tuple[bool, str]) -> None:
    """Raise one ``ValueError`` listing the message of every check whose condition is false.

    Several arguments are often validated together; a message that names all of them ("need a >= 1 and
    b > 0, got a=3, b=0") leaves the user to work out which one was wrong. Each check here carries its own
    message, and only the failed ones are reported.

    Args:
        checks: ``(condition, message)`` pairs; ``message`` should name the argument, its value and the rule.

    Raises:
        ValueError: at least one condition is false; the messages of the failed checks joined by ``"; "``.

    Example::

        >>> window, ratio = 10, 0.5
        >>> check_each((window >= 1, f"window must be >= 1, got {window}"), (ratio > 1, f"ratio must be > 1, got {ratio}"))
        Traceback (most recent call last):
        ...
        ValueError: ratio must be > 1, got 0.5
    """
    failed = [message for ok, message in checks if not ok]
    if failed:
        raise ValueError("; ".join(failed))
