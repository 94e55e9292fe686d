"""The one exception type for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and a non-zero exit; everything
else is a bug and keeps its traceback.
"""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (parsers write several), or "" when it has none."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


class InputError(Exception):
    """Bad input from the user: a file, a config key or a value. The message is one line that
    names the offending thing and what was expected."""


class Interrupted(Exception):
    """A run stopped by SIGTERM or Ctrl-C after writing a checkpoint; the message says which and how
    to continue. The CLI prints it and exits with ``status`` (143 = 128 + SIGTERM, 130 for Ctrl-C), as
    a killed process would."""

    def __init__(self, message: str, status: int = 143):
        super().__init__(message)
        self.status = status


class NumericalFault(Exception):
    """Training met a non-finite loss (``task.nonfinite_loss=stop``); the message names the step, the
    batch and the last checkpoint. The CLI prints it as one line and exits with 3."""


def one_of(choices) -> str:
    """ "one of a, b, c": what a message says is expected of a key with fixed choices."""
    return "one of " + ", ".join(choices)
