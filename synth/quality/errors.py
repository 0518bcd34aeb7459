"""The one error class of the quality metrics (one-line messages naming the option or file)."""
from __future__ import annotations

__all__ = ["QualityError"]


class QualityError(ValueError):
    """A metric cannot run as asked: missing input, judge that does not fit the generator, bad file."""
