"""Flip metrics between an old and a new model: numpy only (importing this never imports torch).

Inputs are lists, numpy arrays or torch tensors; predictions are class ids (1-D) or scores
(2-D, reduced by argmax). Each number comes from integer counts (update step) reduced to rates
(reduce step), so :func:`flip_report` and :class:`FlipCounter` agree to the last digit.

Example:
    >>> from regfree.metrics import flip_report
    >>> report = flip_report([0, 1, 2, 2], [0, 1, 0, 2], [0, 2, 2, 2])
    >>> report.nfr, report.error_rate_new
    (0.25, 0.25)
"""

from regfree.metrics.churn import ChurnCounter, ChurnReport, churn_from_table, churn_report
from regfree.metrics.classes import encode_flip_inputs
from regfree.metrics.counts import MAX_REPORT_CLASSES, FlipCounts, flip_counts
from regfree.metrics.flips import (
    FlipTotals,
    backward_error_compatibility,
    compatibility_score,
    correct_mask,
    error_rate,
    flip_totals,
    negative_flip_impact,
    negative_flip_rate,
    positive_flip_rate,
    relative_nfr,
)
from regfree.metrics.groups import GroupCounter
from regfree.metrics.inputs import (
    FlipInputs,
    as_class_ids,
    as_numpy,
    iter_flip_inputs,
    prepare_flip_inputs,
)
from regfree.metrics.matrix import FlipMatrix, flip_matrix
from regfree.metrics.report import (
    ClassFlips,
    FlipReport,
    flip_report,
    json_safe,
    report_from_counts,
)
from regfree.metrics.retrieval import RetrievalScores, retrieval_scores  # noqa: F401
from regfree.metrics.stats import (
    discordant_pairs,
    mcnemar_exact_p,
    mcnemar_one_sided_p,
    wilson_interval,
)
from regfree.metrics.streaming import FlipCounter

__all__ = [
    "ChurnCounter",
    "ChurnReport",
    "GroupCounter",
    "churn_from_table",
    "churn_report",
    "encode_flip_inputs",
    "MAX_REPORT_CLASSES",
    "ClassFlips",
    "FlipCounter",
    "FlipCounts",
    "FlipInputs",
    "FlipMatrix",
    "FlipReport",
    "FlipTotals",
    "as_class_ids",
    "as_numpy",
    "backward_error_compatibility",
    "compatibility_score",
    "correct_mask",
    "discordant_pairs",
    "error_rate",
    "flip_counts",
    "flip_matrix",
    "flip_report",
    "flip_totals",
    "iter_flip_inputs",
    "json_safe",
    "mcnemar_exact_p",
    "mcnemar_one_sided_p",
    "negative_flip_impact",
    "negative_flip_rate",
    "positive_flip_rate",
    "prepare_flip_inputs",
    "relative_nfr",
    "report_from_counts",
    "wilson_interval",
]
