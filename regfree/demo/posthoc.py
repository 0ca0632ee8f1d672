"""The demo's post-hoc rows: plain v2 made compatible with v1 without retraining it.

Computed from what the demo already trained (v1 and plain v2), with no extra training:

- adapter: :func:`regfree.compat.fit_adapter` (its default kind) on a paired sample of the
  gallery (``adapter_pairs`` of its items, the ones a team re-embeds with v2 first). One adapter
  maps v1's stored gallery into v2's space (the paired items stored as v2 embeds them; v2
  queries search it natively); the other maps v2 queries into v1's space (v1's gallery as is).
- blend: :func:`regfree.pctraining.fit_blend` on v1's and v2's test logits, by 2-fold
  cross-fitting: the blend applied to each half of the test split was chosen on the other half
  (the demo has no separate validation split: fit monitors the test split, and v2 trained on
  the whole training split, so its scores there would be too confident to choose a blend).

Example:
    >>> y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    >>> old = np.eye(2)[y] * 4.0            # v1 right everywhere
    >>> new = np.eye(2)[1 - y] * 0.5        # v2 wrong everywhere, but unsure
    >>> predictions, blends = cross_fit_blend(y, old, new, seed=0)
    >>> predictions.tolist() == y.tolist(), len(blends)
    (True, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regfree.compat import CompatibilityReport, fit_adapter
from regfree.metrics import discordant_pairs, flip_report, mcnemar_exact_p
from regfree.pctraining import LogitBlend, fit_blend
from regfree.retrieval import retrieval_matrix


@dataclass
class AdapterTop1:
    """Top-1 of v2 searching v1's gallery through adapters fit on ``pairs`` paired items.

    ``gallery``: v2 queries on v1's gallery mapped into v2's space (paired items as v2 embeds
    them); ``query``: v2 queries mapped into v1's space on v1's gallery as is; ``old_old``:
    v1/v1, the bar both must clear (the compatibility criterion).
    """

    gallery: float
    query: float
    old_old: float
    pairs: int
    adapters: dict[str, Any] = field(default_factory=dict, repr=False)


def paired_items(n_items: int, share: float, seed: int) -> np.ndarray:
    """The ``share`` of ``n_items`` gallery items both models embed (at least 2), sorted."""
    count = min(n_items, max(2, round(share * n_items)))
    return np.sort(np.random.default_rng(seed).permutation(n_items)[:count])


def adapter_top1(old_queries: np.ndarray, new_queries: np.ndarray, query_labels: np.ndarray,
                 old_gallery: np.ndarray, new_gallery: np.ndarray, gallery_labels: np.ndarray,
                 *, share: float, seed: int) -> AdapterTop1:
    """Fit both adapters on a paired sample of the gallery and score v2 through each.

    Args:
        old_queries, new_queries: the queries embedded by v1 and by v2.
        query_labels: their class ids.
        old_gallery, new_gallery: every gallery item embedded by v1 and by v2 (only the paired
            rows of ``new_gallery`` are used: the rest stands for items never re-embedded).
        gallery_labels: the items' class ids.
        share: the paired share of the gallery.
        seed: picks the paired items.

    Returns:
        An :class:`AdapterTop1` (cosine, exact search, as :func:`regfree.evaluate_upgrade`).
    """
    paired = paired_items(len(gallery_labels), share, seed)
    forward = fit_adapter(old_gallery[paired], new_gallery[paired], seed=seed, progress=False)
    backward = fit_adapter(new_gallery[paired], old_gallery[paired], seed=seed, progress=False)
    transformed = forward.transform(old_gallery)
    transformed[paired] = new_gallery[paired]
    # "v2" below is v1's gallery transformed, not a re-embedded one: one matrix gives both rows;
    # top-1 only (map_k=1: no full ranking for mAP), the same top-1 as a full ranking gives
    report = CompatibilityReport(retrieval_matrix(
        {"v1": old_queries, "v2": {"v1": backward.transform(new_queries), "v2": new_queries}},
        query_labels, {"v1": old_gallery, "v2": transformed}, gallery_labels, ks=(1,),
        map_k=1))
    return AdapterTop1(gallery=report.value("v2", "v2"), query=report.value("v2", "v1"),
                       old_old=report.value("v1", "v1"), pairs=len(paired),
                       adapters={"gallery": forward.to_dict(), "query": backward.to_dict()})


def cross_fit_blend(y: Any, old_logits: Any, new_logits: Any, *, max_error_increase: float = 0.0,
                    seed: int = 0) -> tuple[np.ndarray, list[LogitBlend]]:
    """Blended predictions where each half's blend was chosen on the other half.

    Args:
        y: class ids of the samples.
        old_logits, new_logits: v1's and v2's ``(n, classes)`` logits.
        max_error_increase: as in :func:`regfree.pctraining.fit_blend`.
        seed: splits the samples into the two halves.

    Returns:
        ``(predictions, [blend chosen on half 0, blend chosen on half 1])``.
    """
    y, old_logits, new_logits = np.asarray(y), np.asarray(old_logits), np.asarray(new_logits)
    if len(y) < 2:
        raise ValueError(f"y needs at least 2 samples to cross-fit a blend, got {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (order[:len(y) // 2], order[len(y) // 2:])
    predictions = np.empty(len(y), dtype=np.int64)
    blends = []
    for fit_on, apply_to in (halves, halves[::-1]):
        blend = fit_blend(y[fit_on], old_logits[fit_on], new_logits[fit_on],
                          max_error_increase=max_error_increase)
        predictions[apply_to] = blend.predict(old_logits[apply_to], new_logits[apply_to])
        blends.append(blend)
    return predictions, blends


def blend_numbers(y: np.ndarray, old_logits: np.ndarray, new_logits: np.ndarray,
                  plain_flips: np.ndarray, *, max_error_increase: float, seed: int
                  ) -> dict[str, Any]:
    """The blend row's numbers: error, NFR and its interval, McNemar p against v1 and the NFR
    test against plain v2 (paired on the same samples), and the two blends chosen."""
    predictions, blends = cross_fit_blend(y, old_logits, new_logits,
                                          max_error_increase=max_error_increase, seed=seed)
    flips = flip_report(y, old_logits, predictions, num_classes=old_logits.shape[1])
    blend_flips = (old_logits.argmax(1) == y) & (predictions != y)
    return {"error": flips.error_rate_new, "nfr": flips.nfr, "nfr_ci": tuple(flips.nfr_ci),
            "mcnemar_p": flips.mcnemar_p,
            "nfr_vs_plain_p": mcnemar_exact_p(*discordant_pairs(plain_flips, blend_flips)),
            "blends": [b.to_dict() for b in blends]}
