"""The one error type that reaches users as a one-line message (CLI exit code 2)."""


class UserError(ValueError):
    """Bad input: the message names the problem and the fix, in one line."""
