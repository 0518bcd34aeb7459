"""One base class for every error that means "this input cannot be used".

Each layer keeps its own subclass (``DatasetError``, ``CheckpointError``, ``SynthesisError``
...), so a caller can catch just one kind; every command catches :class:`UserError` alone and
prints it as one ``Error:`` line (:func:`synth.cli_errors.one_line_errors`). Anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input: a one-line message that names the file or option and what is wrong."""
