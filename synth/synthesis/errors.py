"""The one error type of the synthesis tools (one-line message naming the option or file)."""
from __future__ import annotations

from synth.errors import UserError

__all__ = ["SynthesisError"]


class SynthesisError(UserError):
    """Synthesis request that cannot be carried out as given."""
