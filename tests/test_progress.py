"""regfree's progress bars honour progress=False and the TQDM_DISABLE environment variable."""

import io

import numpy as np
import pytest

from regfree.progress import progress_bar, progress_disabled_by_env
from regfree.retrieval import embed


@pytest.mark.parametrize("value, disabled", [("1", True), ("true", True), ("0", False),
                                             ("", False), ("no", False)])
def test_tqdm_disable_values(monkeypatch, value, disabled):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled_by_env() is disabled
    assert progress_bar(range(3), enabled=True).disable is disabled


def test_progress_false_wins_over_unset_env(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_bar(range(3), enabled=False).disable is True
    assert progress_bar(range(3), enabled=True).disable is False


def test_embedding_pass_draws_no_bar_under_tqdm_disable(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = embed(lambda batch: batch * 2.0, np.ones((7, 3)), batch_size=2, progress=True)
    assert out.shape == (7, 3)
    assert "embedding" not in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "0")
    stream = io.StringIO()
    bar = progress_bar(range(2), enabled=True, file=stream, desc="embedding")
    list(bar)
    assert "embedding" in stream.getvalue()
