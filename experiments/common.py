"""What the experiment scripts share: the mean ± std cell of their tables, the CPU they ran on,
and the command line they record.

The scripts run as ``python experiments/<script>.py``, so this folder is on ``sys.path`` and
they import this module as ``common``. The model (``regfree.models.cosine_convnet1d``) and the
training recipe (``regfree.training.fit_adam_cosine``) live in the package, where the demo can
reach them too.
"""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"mean ± std"`` of ``values`` times ``scale`` (sample std, ddof 1; 0 for one value).

    NaNs (a metric a seed could not compute) are left out; all NaN gives ``"n/a"``.

    Example:
        >>> mean_std([0.1, 0.2, float("nan")], digits=1)
        '15.0 ± 7.1'
    """
    array = np.asarray(values, dtype=float)
    if np.isnan(array).all():
        return "n/a"
    array = array[~np.isnan(array)] * scale
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1) if len(array) > 1 else 0.0:.{digits}f}"


@functools.cache  # asked for by every partial report; /proc/cpuinfo does not change
def cpu_name() -> str:
    """The CPU model and its widest vector extension: CPUs that round differently train
    different models from the same seed, so a rerun elsewhere moves each row like a new seed."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    vector = next((ext for ext in ("avx512f", "avx2") if f" {ext}" in info), "no AVX2")
    return f"{model}, {vector}"


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that ran ``experiments/<script>`` with ``argv`` (default: this process's
    arguments), as the results files record it.

    Example:
        >>> command_line("bct_mnist1d.py", ["--quick"])
        'OMP_NUM_THREADS=1 .venv/bin/python experiments/bct_mnist1d.py --quick'
    """
    args = sys.argv[1:] if argv is None else argv
    return f"OMP_NUM_THREADS=1 .venv/bin/python experiments/{script}" + "".join(
        f" {a}" for a in args)
