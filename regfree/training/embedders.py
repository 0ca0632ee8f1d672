"""How embeddings are read from a model during an inference pass.

An :data:`Embedder` is one of

- ``"auto"``: the embeddings the model's forward already returns (a ``(logits, embeddings)``
  pair, a mapping with ``"embeddings"``, an object with ``.embeddings``), else its
  ``forward_features`` method. The forward runs anyway for the logits, so a model that returns
  its embeddings costs one backbone pass per batch, not two;
- ``"outputs"``: only from the forward's outputs (an error if the model returns logits alone);
- any other string: the name of a method of the model, called on the batch inputs (a second
  pass through the model);
- a callable on the batch inputs, returning a ``(batch, dim)`` tensor or array.

Methods and callables are called like the model: inputs that are a mapping of tensors
(HuggingFace-style) are passed as keyword arguments, anything else as the one positional one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from regfree.training.batches import call_model
from regfree.training.steps import split_outputs

Embedder = Union[str, Callable[..., Any]]
AUTO = "auto"
OUTPUTS = "outputs"
DEFAULT_METHOD = "forward_features"
_HINT = ("the name of its embedding method, 'outputs' when its forward returns (logits, "
         "embeddings), or a callable on an input batch (e.g. lambda x: model.backbone(x))")


class EmbeddingReader:
    """Reads one model's embeddings of a batch, from the inputs and the forward's raw output.

    Args:
        model: the model the embeddings belong to.
        embedder: an :data:`Embedder`.
        argument: the caller's argument (``"old_embedder"``, ``"method"``, ...), named in errors.

    Example:
        >>> from regfree.models import MLP
        >>> model = MLP(4, 3, embedding_dim=8, return_embeddings=True)
        >>> reader = EmbeddingReader(model, "auto", "embedder")
        >>> x = torch.zeros(2, 4)
        >>> tuple(reader(x, model(x)).shape), reader.source
        ((2, 8), 'outputs')
    """

    def __init__(self, model: Any, embedder: Embedder, argument: str) -> None:
        self.argument = argument
        self.model = model
        self._call: Optional[Callable[..., Any]] = None
        if isinstance(embedder, str):
            self.source = embedder
            if embedder not in (AUTO, OUTPUTS):
                self._call = _method(model, embedder, argument)
        elif callable(embedder):
            self.source = getattr(embedder, "__name__", type(embedder).__name__)
            self._call = embedder
        else:
            raise TypeError(f"{argument} must be 'auto', 'outputs', a method name or a callable "
                            f"on an input batch, got {type(embedder).__name__}")

    @property
    def needs_forward(self) -> bool:
        """Whether the forward's output is read (it must then be computed)."""
        return self._call is None

    def __call__(self, inputs: Any, raw: Any) -> Any:
        if self._call is not None:
            return call_model(self._call, inputs)
        embeddings = split_outputs(raw)[1]
        if embeddings is not None:
            self.source = OUTPUTS
            return embeddings
        name = type(self.model).__name__
        if self.source == OUTPUTS:
            raise ValueError(f"{self.argument}='outputs': {name}'s forward returns no "
                             f"embeddings, only logits; pass {self.argument}= {_HINT}")
        # "auto" on a model whose forward gives logits alone: its method from now on
        method = getattr(self.model, DEFAULT_METHOD, None)
        if not callable(method):
            raise ValueError(f"{self.argument}='auto': {name}'s forward returns only logits and "
                             f"it has no {DEFAULT_METHOD} method; pass {self.argument}= {_HINT}")
        self._call, self.source = method, DEFAULT_METHOD
        return call_model(method, inputs)


def _method(model: Any, name: str, argument: str) -> Callable[..., Any]:
    method = getattr(model, name, None)
    if not callable(method):
        raise ValueError(f"{argument}={name!r}: {type(model).__name__} has no method {name!r}; "
                         f"pass {argument}= {_HINT}")
    return method


def as_rows(output: Any, name: str) -> np.ndarray:
    """``output`` (a tensor of any floating dtype, or an array) as float32 ``(batch, dim)``."""
    if isinstance(output, torch.Tensor):
        array = output.detach().float().cpu().numpy()
    else:
        array = np.asarray(output, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (batch, dim) embeddings, got shape {array.shape}")
    return array
