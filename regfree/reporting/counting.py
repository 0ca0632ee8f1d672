"""Count every input of ``regfree report`` in one streaming pass and reduce the counts once."""

from __future__ import annotations

import importlib
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from regfree.metrics import (
    ChurnCounter,
    ChurnReport,
    FlipCounter,
    FlipCounts,
    FlipReport,
    FlipTotals,
    GroupCounter,
    churn_from_table,
    report_from_counts,
    wilson_interval,
)
from regfree.metrics.counts import add_codes
from regfree.reporting.scores import blend_batch, keep_scores
from regfree.reporting.stream import Streamed, batches, open_inputs, reading_session


@dataclass(frozen=True)
class GroupFlips:
    """Flips in one slice of the data (a country, a device, ...)."""

    name: str
    n: int
    negative_flips: Optional[int]
    nfr: float
    nfr_ci: tuple[float, float]
    churn: float
    churn_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "negative_flips": self.negative_flips,
                "nfr": self.nfr, "nfr_ci": list(self.nfr_ci), "churn": self.churn,
                "churn_ci": list(self.churn_ci)}


@dataclass
class CountedReport:
    """Everything ``regfree report`` shows: flips (with labels), churn, groups, notes."""

    flips: Optional[FlipReport]
    churn: ChurnReport
    groups: Optional[list[GroupFlips]] = None
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> Optional[tuple[str, ...]]:
        return self.churn.class_names


def count_report(specs: dict[str, str], *, id_column: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = None,
                 blend: Optional[Any] = None) -> CountedReport:
    """Stream ``{option: FILE[:column]}`` (``--labels`` optional, ``--old``, ``--new``,
    ``--group`` optional) through the counters and reduce them.

    With ``blend`` (a :class:`~regfree.pctraining.LogitBlend`) ``--old`` and ``--new`` must be
    scores and the new predictions are ``blend.predict(old_scores, new_scores)``.

    Raises:
        InputError: one line naming the option, the file and the problem.
    """
    # The McNemar p-value needs scipy.special (a third of a second to import): load it in a
    # thread while the main thread streams, instead of after.
    threading.Thread(target=importlib.import_module, args=("scipy.special",), daemon=True).start()
    with reading_session() as con:
        streamed = open_inputs(con, specs, id_column=id_column, class_names=class_names)
        if blend is not None:
            keep_scores(streamed)
        counter = _Counter(labelled="--labels" in specs)
        groups = GroupCounter() if "--group" in specs else None
        for batch in batches(con, streamed, id_column=id_column):
            y, old, new = batch.get("--labels"), batch["--old"], batch["--new"]
            if blend is not None:
                old, new = blend_batch(streamed, blend, old, new)
            counter.update(y, old, new, _classes_so_far(streamed))
            if groups is not None:
                groups.update(batch["--group"], y, old, new)
        streamed.missing.check()
        return _reduce(streamed, counter, groups)


def _classes_so_far(streamed: Streamed) -> int:
    """Class count covering every id decoded so far (names seen, score width, or largest id)."""
    decoders = [d for o, d in streamed.decoders.items() if o != "--group"]
    known = next((d.num_classes for d in decoders if d.num_classes is not None), None)
    if known is not None:
        return known
    if streamed.coder.by_name:
        return max(1, len(streamed.coder.names))
    return max((d.high for d in decoders if d.high is not None), default=0) + 1


SMALL = 64  # up to this many classes one (K, K, K) table holds both flips and churn


class _Counter:
    """Flip counts (with labels) and the old x new table, batch by batch.

    The decoders checked every id, so batches are counted unchecked with their class count
    known. With few classes one bincount over ``(y * K + old) * K + new`` fills a
    ``table[y, old, new]`` from which both follow (half the passes over the data of counting
    them apart); with more, a FlipCounter and a ChurnCounter count them.
    """

    def __init__(self, labelled: bool) -> None:
        self.labelled = labelled
        self.flips = FlipCounter()
        self.churn = ChurnCounter()
        self.triples: Optional[np.ndarray] = None

    def update(self, y: Optional[np.ndarray], old: np.ndarray, new: np.ndarray, k: int) -> None:
        if self.labelled and k <= SMALL:
            if self.triples is None or k > len(self.triples):
                grown = np.zeros((k, k, k), dtype=np.int64)
                if self.triples is not None:
                    size = len(self.triples)
                    grown[:size, :size, :size] = self.triples
                self.triples = grown
            size = len(self.triples)
            codes = np.multiply(y, size * size, dtype=np.intp)
            codes += np.multiply(old, size, dtype=np.intp)
            codes += new
            add_codes(self.triples.reshape(-1), codes)
            return
        if self.labelled:
            part = FlipCounter(num_classes=k, validate=False)
            part.update(y, old, new)
            self.flips.merge(part)
        part_churn = ChurnCounter(num_classes=k, validate=False)
        part_churn.update(old, new)
        self.churn.merge(part_churn)

    def totals(self) -> tuple[Optional[FlipCounts], Optional[np.ndarray]]:
        """The flip counts (None without labels) and the old x new table of all batches."""
        counts, table = self.flips.counts, self.churn.table
        if self.triples is not None:
            t = self.triples
            diag = np.arange(len(t))
            joint = np.empty((len(t), len(t), 2), dtype=np.int64)
            joint[:, :, 1] = t[diag, diag, :]
            joint[:, :, 0] = t.sum(axis=1) - joint[:, :, 1]
            counts = FlipCounts(joint) if counts is None else counts + FlipCounts(joint)
            table = _add_tables(table, t.sum(axis=0))
        return counts, table


def _add_tables(a: Optional[np.ndarray], b: np.ndarray) -> np.ndarray:
    if a is None:
        return b
    size = max(len(a), len(b))
    out = np.zeros((size, size), dtype=np.int64)
    out[:len(a), :len(a)] += a
    out[:len(b), :len(b)] += b
    return out


def _reduce(streamed: Streamed, counter: _Counter, groups: Optional[GroupCounter]
            ) -> CountedReport:
    coder = streamed.coder
    counts, table = counter.totals()
    size = max(len(table), counts.num_classes if counts else 0, len(coder.names))
    table = np.pad(table, ((0, size - len(table)), (0, size - len(table))))
    names: Optional[tuple[str, ...]] = None
    if coder.by_name or coder.fixed:
        order = coder.order()
        order = np.concatenate([order, np.arange(len(order), size)]).astype(np.intp)
        table = table[np.ix_(order, order)]
        if counts is not None:
            counts = FlipCounts(counts.padded(size).joint[np.ix_(order, order)])
        names = tuple(coder.names[i] for i in order[:len(coder.names)])
    elif counts is not None:
        counts = counts.padded(size)
    report = None if counts is None else report_from_counts(counts, class_names=names)
    result = CountedReport(report, churn_from_table(table, class_names=names))
    if groups is not None:
        result.groups = _group_rows(streamed, groups, labelled=report is not None)
    result.notes = _notes(streamed, report, table, names)
    return result


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _group_rows(streamed: Streamed, groups: GroupCounter, labelled: bool) -> list[GroupFlips]:
    names = streamed.groups.names
    unchanged = groups.unchanged()
    rows = []
    for code, totals in groups.compute().items():
        n = totals.n
        changed = n - unchanged[code]
        nfr, ci, flips = math.nan, (math.nan, math.nan), None
        if labelled:
            flips = FlipTotals(*totals).negative_flips
            nfr, ci = flips / n, wilson_interval(flips, n)
        rows.append(GroupFlips(names[code], n, flips, nfr, ci, changed / n,
                               wilson_interval(changed, n)))
    return sorted(rows, key=lambda row: _natural(row.name))


def _notes(streamed: Streamed, report: Optional[FlipReport], table: np.ndarray,
           names: Optional[Sequence[str]]) -> list[str]:
    notes = []
    if report is not None:
        predicted = table.sum(axis=0) + table.sum(axis=1)
        unseen = [c.label for c in report.per_class if c.count == 0 and predicted[c.label] > 0]
        if unseen:
            shown = [names[c] if names else str(c) for c in unseen[:10]]
            notes.append(f"classes only in the predictions, never in the labels "
                         f"({len(unseen)}): {', '.join(shown)}"
                         f"{', ...' if len(unseen) > 10 else ''}")
        labels = streamed.decoders.get("--labels")
        lows = [streamed.decoders[o].low for o in ("--old", "--new")]
        if labels is not None and labels.low is not None and labels.low >= 1 and 0 in lows:
            notes.append("the labels never use class 0 but the predictions do: if the labels "
                         "are 1-based, subtract 1 from them")
    return notes
