"""The argument parser of every command and tool: a bad flag is one ``error:`` line and exit 2."""
import argparse

from ..errors import UserError

__all__ = ['Parser', 'checked']


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UserError` (one line, through ``cli.guarded``) instead of
    printing its usage block and exiting."""

    def error(self, message):
        raise UserError(message)


def checked(convert, ok, bound):
    """An argparse type: ``convert(text)``, which must satisfy ``ok`` (``bound`` says how)."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            kind = 'an integer' if convert is int else 'a number'
            raise argparse.ArgumentTypeError(f'expected {kind}, got {text!r}') from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f'must be {bound}, got {v}')
        return v
    return parse
