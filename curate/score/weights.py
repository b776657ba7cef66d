"""Reading head weights from a file into a known architecture, with errors that say what is wrong.

Every scoring head (aesthetic, watermark, NSFW) is a fixed architecture plus a state dict
saved with ``torch.save(model.state_dict(), path)``. Loading is strict: a missing file, a
file that is not a state dict, a missing or extra key, or a tensor of the wrong shape is an
error naming the file, the key and the expected shape, raised when the stage is built,
before any image is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class WeightsError(ValueError):
    """A weights file that does not fit the architecture it is loaded into."""


def read_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """The tensors saved in ``path``; ``what`` names the model in errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} weights not found")
    try:
        # weights_only: a state dict needs no pickled code, and a weights file from the
        # internet must not run any.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise WeightsError(f"{path}: cannot read {what} weights as a torch state dict ({e})") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor) for {what}, "
                           f"got {type(state).__name__}")
    return dict(state)


def shape(state: Mapping[str, Any], key: str, path: str | Path, what: str) -> tuple[int, ...]:
    """The shape of ``state[key]``, or an error naming the key the format requires."""
    if key not in state:
        raise WeightsError(f"{path}: not a {what} state dict: no {key!r} (has {sorted(state)[:6]} ...)")
    return tuple(state[key].shape)


def load_strict(module: Any, state: Mapping[str, Any], path: str | Path, what: str) -> Any:
    """``module.load_state_dict(state, strict=True)`` with every mismatch listed in one error."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [f"{k}: expected shape {tuple(expected[k].shape)}, file has {tuple(state[k].shape)}"
             for k in sorted(expected.keys() & state.keys()) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        problems.extend(wrong[:5])
        raise WeightsError(f"{path}: does not fit the {what} architecture: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
    return module
