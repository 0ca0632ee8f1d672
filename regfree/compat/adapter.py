"""A learned map between two models' embedding spaces, and its file format.

:class:`EmbeddingAdapter` holds ``y = x W + b`` plus, for the ``"mlp"`` kind, a residual
``relu(x W1 + b1) W2 + b2``. The same class serves both directions a team needs: v1 -> v2
re-expresses a stored gallery in the new space (FCT-style), v2 -> v1 adapts new queries to the old
index (Drift-Adapter-style). :func:`regfree.compat.fit_adapter` learns one from paired embeddings.

An orthogonal adapter may carry a ``blend`` (SLERP, after Ricci et al.'s training-free
compatibility): the Procrustes-mapped query is interpolated on the unit sphere with the target
model's own embedding of the same input (the *anchor*, e.g. v1's embedding of the query), so the
adapted query never strays far from what v1's gallery was built to answer. It needs v1 to run at
query time; ``blend=1`` is plain Procrustes.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from regfree.atomic import atomic_write

ADAPTER_KINDS = ("orthogonal", "affine", "mlp")
_FORMAT = "regfree.EmbeddingAdapter/1"
_LINEAR = ("weight", "bias")
_RESIDUAL = ("hidden_weight", "hidden_bias", "out_weight", "out_bias")


def _slerp(anchor: Any, moved: Any, t: float) -> Any:
    """Spherical interpolation from unit rows ``anchor`` (t = 0) to unit rows ``moved`` (t = 1);
    nearly parallel rows fall back to the normalised linear blend (the same limit)."""
    if isinstance(anchor, torch.Tensor):
        cos = (anchor * moved).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
        angle = torch.acos(cos)
        sin = torch.sin(angle)
        curved = (torch.sin((1 - t) * angle) * anchor + torch.sin(t * angle) * moved) / sin
        straight = (1 - t) * anchor + t * moved
        return _l2_normalise(torch.where(sin > 1e-4, curved, straight))
    cos = np.clip((anchor * moved).sum(1, keepdims=True), -1.0, 1.0)
    angle = np.arccos(cos)
    sin = np.sin(angle)
    safe = np.where(sin > 1e-4, sin, 1.0)
    curved = (np.sin((1 - t) * angle) * anchor + np.sin(t * angle) * moved) / safe
    straight = (1 - t) * anchor + t * moved
    return _l2_normalise(np.where(sin > 1e-4, curved, straight))


def _l2_normalise(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.normalize(x, dim=1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class EmbeddingAdapter:
    """A map from ``source`` embeddings (``source_dim`` wide) to ``target`` embeddings.

    Args:
        kind: one of ``"orthogonal"``, ``"affine"``, ``"mlp"`` (how it was fitted).
        params: float32 arrays: ``weight`` (source_dim x target_dim), ``bias`` (target_dim), and
            for ``"mlp"`` the residual branch ``hidden_weight``, ``hidden_bias``, ``out_weight``,
            ``out_bias``.
        normalize: L2-normalise inputs before the map and outputs after it (cosine galleries).
        settings: the fitting settings, kept for :meth:`to_dict` and the saved file; for an
            orthogonal adapter, ``settings["blend"]`` in [0, 1] makes it a SLERP blend (see
            :meth:`transform`).

    Example:
        >>> import numpy as np
        >>> from regfree.compat import fit_adapter
        >>> rng = np.random.default_rng(0)
        >>> old = rng.normal(size=(50, 4))
        >>> rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
        >>> adapter = fit_adapter(old, old @ rotation, kind="orthogonal", normalize=False)
        >>> bool(np.allclose(adapter.transform(old), old @ rotation, atol=1e-5))
        True
    """

    kind: str
    params: dict[str, np.ndarray]
    normalize: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"kind must be one of {ADAPTER_KINDS}, got {self.kind!r}")
        needed = _LINEAR + (_RESIDUAL if self.kind == "mlp" else ())
        missing = [name for name in needed if name not in self.params]
        if missing:
            raise ValueError(f"params lacks {missing} for kind {self.kind!r}")
        weight = self.params["weight"]
        if weight.ndim != 2 or self.params["bias"].shape != (weight.shape[1],):
            raise ValueError(f"params: weight must be 2-D and bias match its columns, got "
                             f"{weight.shape} and {self.params['bias'].shape}")
        blend = self.blend
        if blend is not None:
            if self.kind != "orthogonal" or not self.normalize:
                raise ValueError("settings['blend'] (SLERP) needs kind 'orthogonal' with "
                                 f"normalize=True, got kind {self.kind!r}, normalize="
                                 f"{self.normalize}")
            if isinstance(blend, bool) or not isinstance(blend, (int, float)) \
                    or not 0.0 <= blend <= 1.0:
                raise ValueError(f"settings['blend'] must be a number in [0, 1], got {blend!r}")

    @property
    def blend(self) -> Any:
        """The SLERP share of the mapped embedding (1: plain Procrustes), or None."""
        return self.settings.get("blend")

    @property
    def source_dim(self) -> int:
        """Width of the embeddings :meth:`transform` takes."""
        return int(self.params["weight"].shape[0])

    @property
    def target_dim(self) -> int:
        """Width of the embeddings :meth:`transform` returns."""
        return int(self.params["weight"].shape[1])

    def transform(self, x: Any, *, anchor: Any = None) -> Any:
        """Map source embeddings to the target space.

        Args:
            x: ``(n, source_dim)`` numpy array (float32 out) or torch tensor (differentiable,
                same device and dtype out).
            anchor: only for a blended (SLERP) adapter: ``(n, target_dim)``, the target
                model's own embeddings of the same ``n`` inputs (for a query-side adapter, v1's
                embedding of each query). The output is ``slerp(anchor, mapped x, blend)``.
                Not needed when ``blend`` is 1.

        Returns:
            ``(n, target_dim)`` embeddings, L2-normalised when the adapter normalises.

        Example:
            >>> import numpy as np
            >>> from regfree.compat import fit_adapter
            >>> rng = np.random.default_rng(0)
            >>> v2_q, v1_q = rng.normal(size=(40, 6)), rng.normal(size=(40, 4))
            >>> slerp = fit_adapter(v2_q, v1_q, kind="orthogonal", blend=0.5)
            >>> slerp.transform(v2_q[:2], anchor=v1_q[:2]).shape
            (2, 4)
        """
        if self.blend is not None and self.blend < 1 and anchor is None:
            raise ValueError(f"anchor is required: this adapter blends (SLERP, blend="
                             f"{self.blend}) the mapped embeddings with the target model's own "
                             "embeddings of the same inputs; pass anchor= (e.g. v1's embedding "
                             "of the queries)")
        if self.blend is None and anchor is not None:
            raise ValueError("anchor is only for a blended (SLERP) adapter; fit one with "
                             "fit_adapter(..., kind='orthogonal', blend=...)")
        if isinstance(x, torch.Tensor):
            out = self._transform_tensor(x)
            return out if anchor is None else self._blend_with(out, anchor, len(x))
        x = np.asarray(x, dtype=np.float32)
        self._check_input(x)
        if self.normalize:
            x = _l2_normalise(x)
        out = x @ self.params["weight"] + self.params["bias"]
        if self.kind == "mlp":
            hidden = np.maximum(x @ self.params["hidden_weight"] + self.params["hidden_bias"], 0)
            out = out + hidden @ self.params["out_weight"] + self.params["out_bias"]
        if self.normalize:
            out = _l2_normalise(out)
        if anchor is not None:
            out = self._blend_with(out, anchor, len(x))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _blend_with(self, moved: Any, anchor: Any, rows: int) -> Any:
        if isinstance(moved, torch.Tensor):
            anchor = torch.as_tensor(anchor, device=moved.device, dtype=moved.dtype)
            finite = bool(torch.isfinite(anchor).all())
        else:
            anchor = np.asarray(anchor, dtype=np.float32)
            finite = bool(np.isfinite(anchor).all())
        if anchor.ndim != 2 or tuple(anchor.shape) != (rows, self.target_dim):
            raise ValueError(f"anchor must have shape ({rows}, {self.target_dim}) (one target-"
                             f"space embedding per row of x), got {tuple(anchor.shape)}")
        if not finite:
            raise ValueError("anchor contains NaN or inf")
        return _slerp(_l2_normalise(anchor), moved, float(self.blend))

    def _transform_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            raise ValueError(f"x must be a float tensor, got {x.dtype}")
        self._check_input(x)
        p = {name: torch.as_tensor(value, device=x.device, dtype=x.dtype)
             for name, value in self.params.items()}
        if self.normalize:
            x = _l2_normalise(x)
        out = x @ p["weight"] + p["bias"]
        if self.kind == "mlp":
            hidden = torch.relu(x @ p["hidden_weight"] + p["hidden_bias"])
            out = out + hidden @ p["out_weight"] + p["out_bias"]
        return _l2_normalise(out) if self.normalize else out

    def _check_input(self, x: Any) -> None:
        if x.ndim != 2 or x.shape[1] != self.source_dim:
            raise ValueError(f"x must have shape (n, {self.source_dim}) (the adapter's "
                             f"source_dim), got {tuple(x.shape)}")
        finite = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
        if not bool(finite):
            raise ValueError("x contains NaN or inf")

    def to_dict(self) -> dict[str, Any]:
        """What the adapter is (no weights): kind, dimensions, normalisation and settings."""
        return {"kind": self.kind, "source_dim": self.source_dim, "target_dim": self.target_dim,
                "normalize": self.normalize, "settings": dict(self.settings)}

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the adapter to one ``.npz`` file (no pickle), whole or not at all."""
        header = json.dumps({"format": _FORMAT, **self.to_dict()})

        def write(handle: Any) -> None:
            np.savez(handle, header=np.array(header), **self.params)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> EmbeddingAdapter:
        """Read an adapter written by :meth:`save`."""
        with open(path, "rb") as handle:
            content = io.BytesIO(handle.read())
        try:
            with np.load(content, allow_pickle=False) as arrays:
                header = json.loads(str(arrays["header"]))
                params = {name: arrays[name].astype(np.float32) for name in arrays.files
                          if name != "header"}
        except (ValueError, KeyError, OSError) as error:
            raise ValueError(f"path {os.fspath(path)!r} is not a saved EmbeddingAdapter "
                             f"({error})") from None
        if header.get("format") != _FORMAT:
            raise ValueError(f"path {os.fspath(path)!r}: unknown adapter format "
                             f"{header.get('format')!r}")
        return cls(kind=header["kind"], params=params, normalize=header["normalize"],
                   settings=header["settings"])
