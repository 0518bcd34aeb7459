"""The one error type of the synthesis tools (one-line message naming the option or file)."""
from __future__ import annotations

__all__ = ["SynthesisError"]


class SynthesisError(ValueError):
    """Synthesis request that cannot be carried out as given."""
