"""Per-class scores kept whole (not reduced to their argmax), for blending v1's and v2's scores.

``regfree blend`` reads validation labels and both models' scores whole; ``regfree report
--blend`` streams test scores and blends them batch by batch. Both read through the inputs of
``regfree report`` (:mod:`regfree.reporting.stream`), so the file formats, ``FILE:column``,
``--id`` joins and every check and message are the same. Score columns are put in class-id order,
so column ``j`` of both models is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from regfree.reporting.decode import Decoder
from regfree.reporting.inputs import InputError, one_line
from regfree.reporting.sources import SCORES
from regfree.reporting.stream import Streamed, batches, open_inputs, reading_session

SCORED = ("--old", "--new")


class ScoreDecoder(Decoder):
    """A decoder that returns the score matrix of a batch (columns in class-id order)."""

    classes: Optional[np.ndarray] = None  # the class id of each returned column

    def _scores(self, columns: Sequence[Any], offset: int,
                ids: Optional[np.ndarray]) -> np.ndarray:
        matrix = np.asarray(self._matrix(columns, offset, ids), dtype=np.float64)
        if not np.isfinite(matrix).all():
            row = int(np.argmax(~np.isfinite(matrix).all(axis=1)))
            raise InputError(f"{self.where}: scores contain NaN or inf (data row "
                             f"{offset + row + 1})")
        if self.header_codes is not None:
            order = np.argsort(self.header_codes, kind="stable")
            matrix, classes = matrix[:, order], self.header_codes[order]
        else:
            classes = np.arange(matrix.shape[1])
        if self.classes is None:
            self.classes = classes
            if len(classes):
                self.low, self.high = int(classes.min()), int(classes.max())
        return matrix


def keep_scores(streamed: Streamed) -> None:
    """Make ``--old`` and ``--new`` yield score matrices; refuse class ids, which cannot blend."""
    for option in SCORED:
        source = streamed.sources[option]
        if source.kind != SCORES:
            raise InputError(
                f"{source.where()}: holds class {'names' if source.kind == 'names' else 'ids'}, "
                "not scores; a blend combines per-class scores (2-D .npy, several float "
                "columns or a list column)")
        old = streamed.decoders[option]
        streamed.decoders[option] = ScoreDecoder(source, streamed.coder, streamed.missing,
                                                 old.num_classes, old.origin)


def check_pair(streamed: Streamed, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The class id of each column, once both batches are known to have the same classes."""
    old_dec, new_dec = (streamed.decoders[o] for o in SCORED)
    if old.shape[1] != new.shape[1] or not np.array_equal(old_dec.classes, new_dec.classes):
        what = (f"{new.shape[1]} score columns do not match the {old.shape[1]} of"
                if old.shape[1] != new.shape[1] else "score columns name other classes than")
        raise InputError(f"{new_dec.where}: {what} {old_dec.where}; a blend needs the same "
                         "classes in both")
    return old_dec.classes


def blend_batch(streamed: Streamed, blend: Any, old: np.ndarray, new: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Class ids of v1 alone and of the blend, for one batch of both models' scores."""
    classes = check_pair(streamed, old, new)
    try:
        blended = blend.predict(old, new)
    except ValueError as err:
        raise InputError(f"--blend ({blend.kind}, scores={blend.scores!r}) cannot combine "
                         f"{streamed.decoders['--old'].where} and "
                         f"{streamed.decoders['--new'].where}: {one_line(err)}") from None
    return classes[old.argmax(axis=1)], classes[blended]


@dataclass(frozen=True)
class ScoredInputs:
    """Labels and both models' scores, read whole and lined up row by row."""

    y: np.ndarray
    old: np.ndarray
    new: np.ndarray
    classes: np.ndarray  # the class id of each score column


def read_scored(specs: dict[str, str], *, id_column: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None) -> ScoredInputs:
    """Read ``{"--labels": ..., "--old": ..., "--new": ...}`` whole, checked as ``regfree
    report`` checks them; the labels come back as score-column indices.

    Raises:
        InputError: one line naming the option, the file and the problem.

    Example:
        >>> import os, tempfile, numpy as np
        >>> folder = tempfile.mkdtemp()
        >>> np.save(os.path.join(folder, "y.npy"), np.array([1, 0]))
        >>> np.save(os.path.join(folder, "o.npy"), np.array([[0.2, 0.8], [0.9, 0.1]]))
        >>> read = read_scored({"--labels": os.path.join(folder, "y.npy"),
        ...                     "--old": os.path.join(folder, "o.npy"),
        ...                     "--new": os.path.join(folder, "o.npy")})
        >>> read.y.tolist(), read.old.shape
        ([1, 0], (2, 2))
    """
    with reading_session() as con:
        streamed = open_inputs(con, specs, id_column=id_column, class_names=class_names)
        keep_scores(streamed)
        parts: dict[str, list[np.ndarray]] = {option: [] for option in specs}
        for batch in batches(con, streamed, id_column=id_column):
            check_pair(streamed, batch["--old"], batch["--new"])
            for option, values in batch.items():
                parts[option].append(values)
        streamed.missing.check()
    whole = {option: np.concatenate(values) for option, values in parts.items()}
    classes = streamed.decoders["--old"].classes
    column = np.full(max(int(whole["--labels"].max()), int(classes.max())) + 1, -1)
    column[classes] = np.arange(len(classes))
    y = column[whole["--labels"]]
    if (y < 0).any():
        label = int(whole["--labels"][np.argmax(y < 0)])
        shown = streamed.coder.names[label] if streamed.coder.by_name else label
        raise InputError(f"{streamed.sources['--labels'].where()}: class {shown} is not one of "
                         f"the {len(classes)} score columns of --old and --new")
    return ScoredInputs(y, whole["--old"], whole["--new"], classes)
