"""Every ```python block of README.md runs, in order, in one namespace, on tiny stand-ins for
the user's data and models that README names (`x_train`, `v1`, `v2`, ...); docs/losses.md's
blocks are self-contained and run the same way: the docs cannot drift from the code."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from regfree.models import MLP
from regfree.training import fit, predict_logits

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
CLASSES, FEATURES, EMBEDDING = 4, 8, 32  # README's Gallery(dim=32) is v1's embedding size


def python_blocks(path: Path = README) -> list[tuple[int, str]]:
    """``(first line number, code)`` of each python block of a markdown file."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


def _split(n, rng, centers):
    y = rng.integers(0, CLASSES, size=n)
    return (centers[y] + rng.normal(size=(n, FEATURES))).astype(np.float32), y.astype(np.int64)


def _user_namespace() -> dict:
    """What README's blocks take from the user: data, models (v1 trained), scores, embeddings."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(CLASSES, FEATURES))
    (x_train, y_train), (x_val, y_val), (x_test, y_test), (x_items, y_items) = (
        _split(n, rng, centers) for n in (192, 96, 96, 96))

    def make_v2():
        return MLP(FEATURES, num_classes=CLASSES, hidden=32, embedding_dim=EMBEDDING,
                   return_embeddings=True)

    torch.manual_seed(0)
    v1 = MLP(FEATURES, num_classes=CLASSES, hidden=16, embedding_dim=EMBEDDING,
             return_embeddings=True)
    fit(v1, (x_train[:64], y_train[:64]), epochs=5, batch_size=32, progress=False,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    v2 = make_v2()
    plain = make_v2()
    fit(plain, (x_train, y_train), epochs=3, batch_size=64, progress=False,
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    with torch.no_grad():
        v1_emb = v1.forward_features(torch.from_numpy(x_items)).numpy()
        v2_emb = plain.forward_features(torch.from_numpy(x_items)).numpy()
        v2_queries = plain.forward_features(torch.from_numpy(x_test)).numpy()
    item_ids = np.arange(1000, 1000 + len(x_items), dtype=np.int64)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
                        batch_size=64, shuffle=True)
    return dict(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
        y_test=y_test, x_items=x_items, y_items=y_items, v1=v1, v2=v2, make_v2=make_v2,
        loader=loader,
        # scores on a test set (flip metrics, blends)
        y=y_test, old_logits=predict_logits(v1, x_test), new_logits=predict_logits(plain, x_test),
        distilled_logits=predict_logits(v1, x_test) + predict_logits(plain, x_test),
        v1_val_logits=predict_logits(v1, x_val), v2_val_logits=predict_logits(plain, x_val),
        v1_test_logits=predict_logits(v1, x_test), v2_test_logits=predict_logits(plain, x_test),
        # retrieval: queries and gallery items, their embeddings and ids
        x_query=x_test, y_query=y_test, x_gallery=x_items, y_gallery=y_items,
        v1_embeddings=v1_emb, v2_queries=v2_queries, item_ids=item_ids,
        some_ids=item_ids[:10], v2_embeddings_of_them=v2_emb[:10],
        v1_emb=v1_emb, v2_emb=v2_emb, paired=np.arange(30),
    )


def test_readme_has_the_blocks_it_promises():
    blocks = [code for _, code in python_blocks()]
    assert len(blocks) >= 7
    own_loop = next(code for code in blocks if "for inputs, labels in loader" in code)
    assert "fd(logits, old_logits, labels)" in own_loop and "bct(embeddings, labels)" in own_loop
    assert not [code for code in blocks if re.search(r"\(\.\.\.|, \.\.\.\)", code)]


def _run_blocks(path: Path, namespace: dict) -> None:
    for line, code in python_blocks(path):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as err:  # name the block: the traceback points into the markdown
            pytest.fail(f"{path.name} block at line {line} failed: {type(err).__name__}: {err}")


def test_every_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write caches, galleries and pages
    monkeypatch.setenv("TQDM_DISABLE", "1")
    namespace = _user_namespace()
    v1_before = {k: v.clone() for k, v in namespace["v1"].state_dict().items()}
    _run_blocks(README, namespace)
    # the blocks train v2 (fit, the own loop): v1, whose head BCT uses, never moves
    for name, value in namespace["v1"].state_dict().items():
        assert torch.equal(value, v1_before[name]), name
    assert len(namespace["history"]) == 30 and np.isfinite(namespace["loss"].item())
    assert 0.0 <= namespace["p"] <= 1.0


def test_the_loss_page_blocks_run_and_leave_v1_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = ROOT / "docs" / "losses.md"
    assert len(python_blocks(page)) == 3
    namespace: dict = {}
    _run_blocks(page, namespace)
    v1, v2 = namespace["v1"], namespace["v2"]
    assert all(p.grad is None for p in v1.parameters())
    assert not torch.equal(v1.head.weight, v2.head.weight)
    assert set(namespace["history"].epochs[0].terms) == {"norm"}
