"""Read a weights file as a plain state dict without executing anything from it."""
from __future__ import annotations

import os
from pathlib import Path

from synth.errors import UserError

__all__ = ["WeightsFileError", "read_state_dict"]

# Keys under which training checkpoints commonly nest the actual state dict.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


class WeightsFileError(UserError):
    """A weights file that is missing, unreadable or not a state dict of tensors."""


def read_state_dict(path: str | os.PathLike):
    """-> ``{name: tensor}`` from safetensors or a tensor-only torch file (``weights_only``).

    Common checkpoint wrappers are unpacked and a DataParallel ``module.`` prefix is dropped.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise WeightsFileError(f"{path}: cannot read weights ({msg})") from None
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsFileError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}
