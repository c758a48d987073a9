"""The one exception type for a user's mistake (a bad flag, a missing group, a corrupt file).

``mia-bench`` prints a :class:`UserError` as one line, ``mia-bench: error: ...``, and
exits with status 2, never with a traceback. It is a ``ValueError`` so that library
callers can catch it as one. A missing optional dependency (:class:`MissingExtraError`,
raised by :func:`mia_bench.extras.require`) is one too, and also a ``ModuleNotFoundError``.
"""

from __future__ import annotations


class UserError(ValueError):
    """What was wrong and what to do about it, in one line."""


class IncompleteGroupError(UserError):
    """Too few runs of a group pass the membership rule for what was asked."""


class MissingExtraError(ModuleNotFoundError, UserError):
    """An optional dependency is not installed; the message names the extra that brings it."""
