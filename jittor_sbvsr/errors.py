"""User-facing errors: the CLIs print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or set-up; the message names the file and what is wrong."""


def read_error(path, err, expected='a file'):
    """The UserError for an OSError met while reading ``path`` (``expected``: what it should be)."""
    if isinstance(err, FileNotFoundError):
        return UserError(f'{path}: no such file')
    if isinstance(err, IsADirectoryError):
        return UserError(f'{path}: is a directory, expected {expected}')
    return UserError(f'{path}: cannot read: {err.strerror or err}')
