"""The validation NFR alarm: warn when v2's negative flips against v1 rise beyond noise.

Epoch-to-epoch NFR moves by a few flips on any validation set, so "NFR rose" alone fires on
noise and teaches users to ignore it. The watch keeps the per-sample negative flips of the best
epoch so far and compares each later epoch with it, paired over the same validation samples:
``b`` samples flip now and did not then, ``c`` flipped then and no longer do. Under "no real
change" each of these discordant samples is a fair coin, so the one-sided exact McNemar p-value
(:func:`regfree.metrics.mcnemar_one_sided_p`) says whether the rise is unlikely to be noise.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from regfree.metrics import mcnemar_one_sided_p

ALARM_P = 0.01  # one-sided McNemar p below which a rise is reported
NFR_WARNING_MODES = ("once", "every", "off")


def check_nfr_warning(mode: object) -> str:
    """``nfr_warning`` as given, or a ValueError naming it and the choices."""
    if mode not in NFR_WARNING_MODES:
        raise ValueError(f"nfr_warning must be one of {', '.join(map(repr, NFR_WARNING_MODES))}"
                         f", got {mode!r}")
    return str(mode)


class NFRRiseWarning(UserWarning):
    """Validation negative flip rate against v1 rose significantly above its best epoch."""


class NFRWatch:
    """Follows the per-sample negative flips epoch by epoch; :meth:`update` returns a warning
    message when an epoch's flips rise significantly above the best epoch's: the first time only
    (``mode="once"``), at every such epoch (``"every"``) or never (``"off"``).

    Args:
        alarm_p: one-sided McNemar p-value below which a rise is reported.
        mode: ``"once"``, ``"every"`` or ``"off"``.

    Example:
        >>> watch = NFRWatch()
        >>> best = np.zeros(100, bool); best[:2] = True
        >>> watch.update(1, best) is None
        True
        >>> worse = np.zeros(100, bool); worse[:14] = True
        >>> print(watch.update(2, worse)[:60])
        validation NFR against v1 rose from 2.00% (epoch 1) to 14.00
    """

    def __init__(self, alarm_p: float = ALARM_P, *, mode: str = "once") -> None:
        self.alarm_p = alarm_p
        self.mode = check_nfr_warning(mode)
        self.best_epoch: Optional[int] = None
        self._best: Optional[np.ndarray] = None
        self.warned = False

    def update(self, epoch: int, flips: np.ndarray) -> Optional[str]:
        """Record ``epoch``'s negative-flip mask; the warning text, or None."""
        if self._best is None or flips.sum() < self._best.sum():
            self._best, self.best_epoch = flips.copy(), epoch
            return None
        if self.mode == "off" or (self.warned and self.mode == "once"):
            return None
        b = int(np.count_nonzero(flips & ~self._best))
        c = int(np.count_nonzero(self._best & ~flips))
        p = mcnemar_one_sided_p(b, c)
        if p >= self.alarm_p:
            return None
        self.warned = True
        return (f"validation NFR against v1 rose from {self._best.mean():.2%} (epoch "
                f"{self.best_epoch}) to {flips.mean():.2%} at epoch {epoch}: {b} new negative "
                f"flips against {c} fixed (one-sided McNemar p = {p:.2g}); consider the best "
                "epoch's weights (checkpoint_dir) or a stronger distillation term. "
                f"{_REPEATS[self.mode]}; History.val_nfr has every epoch")


_REPEATS = {"once": "Reported once per run (nfr_warning='every' reports each such epoch)",
            "every": "Reported at each such epoch (nfr_warning='every')"}
