"""Training state on disk: one safetensors file, written atomically, never unpickled.

A training state is a nested dict (model and optimiser state dicts, RNG states, the replay buffer,
counters). Tensors go into the safetensors payload under their dotted path; everything else (ints,
floats, strings, lists) goes into the file's JSON metadata. Loading rebuilds the same nested dict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from febm.files import atomic_path

_TREE_KEY = "febm_state_tree"


def _flatten(tree, prefix: str, tensors: dict) -> object:
    """Replace tensors by {"__tensor__": key} and collect them; returns the JSON-able skeleton."""
    if isinstance(tree, torch.Tensor):
        key = prefix or "root"
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, dict):
        if not all(isinstance(k, (str, int)) for k in tree):
            raise TypeError(f"state keys must be str or int at {prefix!r}")
        # JSON keys are strings: remember which were ints (optimizer state is keyed by param index)
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]}
    if isinstance(tree, float) and not math.isfinite(tree):
        return {"__float__": repr(tree)}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at {prefix!r}")


def _unflatten(skeleton, tensors: dict):
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: _unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [_unflatten(v, tensors) for v in skeleton["__list__"]]
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
    return skeleton


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    tensors: dict = {}
    skeleton = _flatten(state, "", tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_TREE_KEY: json.dumps(skeleton)})


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if _TREE_KEY not in meta:
        raise ValueError(f"{path} is not a febm training state")
    return _unflatten(json.loads(meta[_TREE_KEY]), load_file(str(path), device=str(device)))


def all_finite(state) -> bool:
    """True when every floating tensor and float in the (nested) state is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(v) for v in state)
    if isinstance(state, float):
        return math.isfinite(state)
    return True
