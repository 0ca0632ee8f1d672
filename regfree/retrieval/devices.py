"""Where a gallery searches: the CPU, or a GPU when the installed faiss has one.

Example:
    >>> resolve_device("cpu")
    'cpu'
"""

from __future__ import annotations

import faiss


def gpu_available() -> bool:
    """True when the installed faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``device=`` argument (``"auto"``, ``"cpu"``, ``"cuda"``)."""
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "gpu"):
        if not gpu_available():
            raise ValueError(f"device={device!r} but faiss sees no GPU (faiss-cpu installed?)")
        return "cuda"
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
