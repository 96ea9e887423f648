"""Exceptions the CLI turns into one-line messages.

UserError: the user's input is wrong (exit code 2). RunFailure: the run itself failed
(divergence, out of memory, interrupted; exit code 1). Everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""

    exit_code = 2


class RunFailure(Exception):
    """A run that could not finish (e.g. NaN loss); the message says what was kept."""

    exit_code = 1
