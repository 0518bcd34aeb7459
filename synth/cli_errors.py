"""The one decorator that turns user errors into one-line ``Error:`` messages (exit 1).

A command wrapped in :func:`one_line_errors` that fails or is interrupted first removes what it
wrote into the ``--out`` folders it prepared (:func:`synth.utils.io.undo_out_dirs`), so no
partial results remain. The exit-status rule is that of docs/cli.md: click's usage errors
(exit 2) pass through unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable

import click

from synth.errors import UserError

__all__ = ["one_line_errors", "message"]


def message(e: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def one_line_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from synth.utils.io import keep_out_dirs, out_dirs_mark, undo_out_dirs

        mark = out_dirs_mark()  # only this command's folders: a long-lived process runs many
        try:
            result = fn(*args, **kwargs)
        except click.ClickException:
            undo_out_dirs(mark)
            raise
        except UserError as e:
            undo_out_dirs(mark)
            raise click.ClickException(message(e)) from None
        except PermissionError as e:  # e.g. a read-only --out
            undo_out_dirs(mark)
            raise click.ClickException(f"{e.filename or e}: permission denied (not writable?)") from None
        except BaseException:  # Ctrl-C, bugs: nothing half-written stays, the traceback does
            undo_out_dirs(mark)
            raise
        keep_out_dirs(mark)
        return result

    return wrapper
