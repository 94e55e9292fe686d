"""The one exception type for bad user input.

The CLI turns an :class:`InputError` into one line on stderr and a non-zero exit; everything
else is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad input from the user: a file, a config key or a value. The message is one line that
    names the offending thing and what was expected."""
