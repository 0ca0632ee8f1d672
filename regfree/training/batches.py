"""What one batch of a user's data and one call of a user's model look like to regfree.

Every entry point that runs a model on data (training, inference, cache builds, embedding
passes) reads batches and calls models through these helpers, so a batch shape or a model
convention that works in one of them works in all:

- a batch is an ``(inputs, labels)`` pair (further items, such as an index, are ignored) or a
  mapping whose label sits under ``"label"`` or ``"labels"`` (or a key the caller names) and
  whose other entries are the inputs;
- inputs are a tensor or a mapping of tensors (HuggingFace-style ``input_ids``,
  ``attention_mask``, ...), moved to the model's device; floating-point tensors take the
  model's floating dtype (a bfloat16 model is fed bfloat16), integer tensors keep theirs;
- a mapping of inputs is passed as keyword arguments, anything else as the one positional one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
from torch import nn

LABEL_KEYS = ("label", "labels")

Inputs = Union[torch.Tensor, Mapping[str, Any]]


def split_batch(batch: Any, *, label_key: Optional[str] = None,
                name: str = "data") -> tuple[Any, Any]:
    """``(inputs, labels)`` of one batch (or one sample) as a data loader yields it.

    Args:
        batch: an ``(inputs, labels, ...)`` sequence or a mapping holding the labels.
        label_key: the mapping key of the labels; default: ``"label"`` or ``"labels"``.
        name: the caller's argument, named in errors.

    Returns:
        The inputs (a mapping without the label entry, for mapping batches) and the labels.

    Example:
        >>> inputs, labels = split_batch({"input_ids": torch.ones(2, 3), "labels": torch.tensor([0, 1])})
        >>> sorted(inputs), labels.tolist()
        (['input_ids'], [0, 1])
    """
    if isinstance(batch, Mapping):
        key = label_key if label_key is not None else _label_key(batch, name)
        if key not in batch:
            raise ValueError(f"{name}: a batch has no {key!r} entry (its keys: "
                             f"{sorted(map(str, batch))}); pass label_key= to name the labels")
        inputs = {k: v for k, v in batch.items() if k != key}
        if not inputs:
            raise ValueError(f"{name}: a batch holds only its labels {key!r}, no inputs")
        return inputs, batch[key]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"{name} must yield (inputs, labels) pairs or mappings with a 'label' or "
                     f"'labels' entry, got {type(batch).__name__}")


def _label_key(batch: Mapping, name: str) -> str:
    found = [key for key in LABEL_KEYS if key in batch]
    if len(found) != 1:
        raise ValueError(f"{name}: cannot tell which entry of a batch holds the labels (keys: "
                         f"{sorted(map(str, batch))}); pass label_key= to name it")
    return found[0]


def model_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The floating dtype of ``model``'s first floating parameter or buffer (``None`` if it
    has none).

    Example:
        >>> model_dtype(nn.Linear(2, 2).to(torch.bfloat16))
        torch.bfloat16
    """
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter or buffer lives (CPU for a model with none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_model(inputs: Any, device: Union[str, torch.device],
             dtype: Optional[torch.dtype] = None, *, non_blocking: bool = False) -> Any:
    """``inputs`` moved to ``device``; floating tensors cast to ``dtype`` when given.

    Tensors inside mappings, lists and tuples are moved too; anything else is passed through.

    Example:
        >>> batch = {"x": torch.zeros(2, dtype=torch.float64), "ids": torch.ones(2, dtype=torch.long)}
        >>> moved = to_model(batch, "cpu", torch.bfloat16)
        >>> moved["x"].dtype, moved["ids"].dtype
        (torch.bfloat16, torch.int64)
    """
    if isinstance(inputs, torch.Tensor):
        if dtype is not None and inputs.is_floating_point() and inputs.dtype != dtype:
            return inputs.to(device=device, dtype=dtype, non_blocking=non_blocking)
        return inputs.to(device, non_blocking=non_blocking)
    if isinstance(inputs, Mapping):
        return {k: to_model(v, device, dtype, non_blocking=non_blocking)
                for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(to_model(v, device, dtype, non_blocking=non_blocking)
                            for v in inputs)
    return inputs


def call_model(model: Any, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping of inputs, else ``model(inputs)``.

    Example:
        >>> call_model(lambda x, y: x + y, {"x": 1, "y": 2})
        3
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def batch_length(inputs: Any) -> int:
    """The number of samples in a batch of inputs (the first tensor's leading size).

    Example:
        >>> batch_length({"input_ids": torch.ones(4, 7, dtype=torch.long)})
        4
    """
    if isinstance(inputs, Mapping):
        for value in inputs.values():
            return batch_length(value)
    if isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], (int, float)):
        return batch_length(inputs[0])
    return len(inputs)
