"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps
its traceback. It lives in `detector` because both halves of the package raise it.
"""


class LogdistillError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""
