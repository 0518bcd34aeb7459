"""The one error class of the quality metrics (one-line messages naming the option or file)."""
from __future__ import annotations

from synth.errors import UserError

__all__ = ["QualityError"]


class QualityError(UserError):
    """A metric cannot run as asked: missing input, judge that does not fit the generator, bad file."""
