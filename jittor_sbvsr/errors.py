"""User-facing errors: the CLIs print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or set-up; the message names the file and what is wrong."""
