"""Errors the engine raises on purpose, so callers can tell bad input from bugs."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix (CLI exit code 2)."""


class Cancelled(Exception):
    """The user cancelled a long operation (CLI exit code 130)."""
