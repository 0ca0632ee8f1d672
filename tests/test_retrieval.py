"""Retrieval metrics (numpy), evaluate, cross-model tables, embedding in batches."""


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from regfree.metrics.retrieval import RetrievalScores, retrieval_scores
from regfree.models import MLP
from regfree.retrieval import Gallery, cross_model_table, embed, evaluate


def test_retrieval_scores_by_hand():
    # query 0 (label 1): hits at ranks 2 and 3 of 3 relevant -> AP = (1/2 + 2/3) / 3
    # query 1 (label 0): hit at rank 1, one relevant -> AP = 1
    ranked = [[0, 1, 1, 2], [0, 2, 2, -1]]
    scores = retrieval_scores([1, 0], ranked, ks=(1, 2), num_relevant=[3, 1])
    assert scores["top1"] == pytest.approx(0.5)
    assert scores["top2"] == pytest.approx(1.0)
    assert scores["mAP"] == pytest.approx(((0.5 + 2 / 3) / 3 + 1.0) / 2)
    # without num_relevant, AP is normalised by the hits in the list
    assert retrieval_scores([1], [[0, 1, 1, 2]], ks=(1,))["mAP"] == pytest.approx((0.5 + 2 / 3) / 2)
    # a query whose class is absent has AP 0, and missing neighbours (-1) never match
    assert retrieval_scores([3], [[-1, -1]], ks=(1,), num_relevant=[0]) == {"top1": 0.0, "mAP": 0.0}


def test_full_ranking_ap_matches_sklearn():
    rng = np.random.default_rng(0)
    gallery_labels = rng.integers(0, 4, size=60)
    similarity = rng.normal(size=(10, 60))
    query_labels = rng.integers(0, 4, size=10)
    ranked = gallery_labels[np.argsort(-similarity, axis=1)]
    expected = np.mean([average_precision_score(gallery_labels == y, s)
                        for y, s in zip(query_labels, similarity)])
    relevant = (gallery_labels[None, :] == query_labels[:, None]).sum(axis=1)
    got = retrieval_scores(query_labels, ranked, ks=(1,), num_relevant=relevant)["mAP"]
    assert got == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 8), st.integers(1, 5), st.integers(0, 10_000))
def test_streaming_equals_one_shot(n_queries, depth, n_batches, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n_queries)
    ranked = rng.integers(-1, 3, size=(n_queries, depth))
    one_shot = retrieval_scores(labels, ranked, ks=(1, 3))
    cuts = np.sort(rng.integers(0, n_queries + 1, size=n_batches - 1))
    parts = [RetrievalScores(ks=(1, 3)).update(lab, r) for lab, r in
             zip(np.split(labels, cuts), np.split(ranked, cuts)) if len(lab)]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.compute() == pytest.approx(one_shot)
    torch_scores = retrieval_scores(torch.from_numpy(labels), torch.from_numpy(ranked), ks=(1, 3))
    assert torch_scores == pytest.approx(one_shot)


def test_retrieval_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="ks must be"):
        retrieval_scores([0], [[0]], ks=())
    with pytest.raises(ValueError, match="neighbour_labels must have shape"):
        retrieval_scores([0, 1], [[0]])
    with pytest.raises(ValueError, match="num_relevant is smaller"):
        retrieval_scores([0], [[0, 0]], num_relevant=[1])
    with pytest.raises(ValueError, match="no queries"):
        RetrievalScores().compute()


def _labelled_clusters(n, dim=8, classes=4, noise=1.5, seed=0):
    centres = np.random.default_rng(100 + dim).normal(size=(classes, dim)) * 2  # shared classes
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    return (centres[labels] + noise * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_evaluate_equals_numpy_brute_force():
    gallery_x, gallery_y = _labelled_clusters(300)
    queries, query_y = _labelled_clusters(50, seed=1)
    gallery_ids = np.arange(300) * 3 + 1
    gallery = Gallery(8, device="cpu")
    gallery.add(gallery_x, gallery_ids, version="v1")
    labels_by_id = dict(zip(gallery_ids.tolist(), gallery_y.tolist()))
    got = evaluate(queries, query_y, gallery, labels_by_id, ks=(1, 5))
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery_x / np.linalg.norm(gallery_x, axis=1, keepdims=True)
    ranked = gallery_y[np.argsort(-(q @ g.T), axis=1, kind="stable")]
    relevant = (gallery_y[None, :] == query_y[:, None]).sum(axis=1)
    expected = retrieval_scores(query_y, ranked, ks=(1, 5), num_relevant=relevant)
    assert got == pytest.approx(expected)
    assert 0.3 < got["top1"] <= got["top5"] <= 1.0
    # mAP over the first 20 only, and chunked queries give the same as one chunk
    short = evaluate(queries, query_y, gallery, labels_by_id, ks=(1,), map_k=20)
    expected_short = retrieval_scores(query_y, ranked[:, :20], ks=(1,), num_relevant=relevant)
    assert short == pytest.approx(expected_short)


def test_evaluate_rejects_bad_input():
    gallery = Gallery(2, device="cpu")
    with pytest.raises(ValueError, match="gallery is empty"):
        evaluate(np.ones((1, 2)), [0], gallery, [0])
    gallery.add(np.eye(2), [0, 5], version="v1")
    with pytest.raises(ValueError, match="query_labels must be 1 integer"):
        evaluate(np.ones((1, 2)), [0, 1], gallery, [0] * 6)
    with pytest.raises(ValueError, match="gallery_labels has 2 entries but the gallery holds id 5"):
        evaluate(np.ones((1, 2)), [0], gallery, [0, 1])
    with pytest.raises(ValueError, match="no label for some gallery ids"):
        evaluate(np.ones((1, 2)), [0], gallery, {0: 1})
    with pytest.raises(ValueError, match="query_embeddings has dimension 3"):
        evaluate(np.ones((1, 3)), [0], gallery, [0] * 6)


def test_cross_model_table_rows_match_evaluate():
    old_x, labels = _labelled_clusters(200, seed=2)
    rng = np.random.default_rng(3)
    new_x = old_x + 0.3 * rng.normal(size=old_x.shape).astype(np.float32)  # a compatible update
    q_old, q_labels = _labelled_clusters(40, seed=4)
    q_new = q_old + 0.3 * rng.normal(size=q_old.shape).astype(np.float32)
    table = cross_model_table({"old": q_old, "new": q_new}, q_labels,
                              {"old": old_x, "new": new_x}, labels, ks=(1, 5),
                              mixed_fractions=(0.0, 0.5, 1.0))
    names = [(row["query"], row["gallery"]) for row in table.rows]
    assert names == [("old", "old"), ("new", "old"), ("new", "new"), ("new", "old+new@0%"),
                     ("new", "old+new@50%"), ("new", "old+new@100%")]
    gallery = Gallery(8, device="cpu")
    gallery.add(old_x, np.arange(200), version="old")
    new_old = evaluate(q_new, q_labels, gallery, labels, ks=(1, 5))
    assert {k: table.get("new", "old")[k] for k in new_old} == pytest.approx(new_old)
    for key in ("top1", "mAP"):  # 0% mixed is the old gallery, 100% the new one
        assert table.get("new", "old+new@0%")[key] == pytest.approx(table.get("new", "old")[key])
        assert table.get("new", "old+new@100%")[key] == pytest.approx(table.get("new", "new")[key])
    markdown = table.to_markdown()
    assert markdown.splitlines()[0] == "| query | gallery | top1 | top5 | mAP |"
    assert len(markdown.splitlines()) == 2 + len(table.rows)
    with pytest.raises(KeyError):
        table.get("old", "new")
    with pytest.raises(ValueError, match="no entry for gallery version"):
        cross_model_table({"old": q_old}, q_labels, {"old": old_x, "new": new_x}, labels)


def test_cross_model_table_skips_pairs_of_different_sizes():
    old_x, labels = _labelled_clusters(50, dim=8)
    new_x, _ = _labelled_clusters(50, dim=6)
    q8, q_labels = _labelled_clusters(10, dim=8, seed=1)
    q6, _ = _labelled_clusters(10, dim=6, seed=1)
    table = cross_model_table({"old": q8, "new": q6}, q_labels, {"old": old_x, "new": new_x},
                              labels, ks=(1,))
    assert [(r["query"], r["gallery"]) for r in table.rows] == [("old", "old"), ("new", "new")]


def test_embed_module_and_callable_in_batches():
    torch.manual_seed(0)
    model = MLP(in_features=6, hidden=8, embedding_dim=5)
    model.train()
    x = np.random.default_rng(0).normal(size=(23, 6)).astype(np.float32)
    out = embed(model, x, batch_size=4, progress=False)
    with torch.no_grad():
        expected = model.forward_features(torch.from_numpy(x)).numpy()
    assert out.shape == (23, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert model.training, "embed restores the module's training flag"
    logits = embed(model, torch.from_numpy(x), batch_size=7, method=None, progress=False)
    assert logits.shape == (23, 10)
    calls = []
    doubled = embed(lambda batch: calls.append(len(batch)) or batch * 2, x, batch_size=10,
                    progress=False)
    assert calls == [10, 10, 3]
    np.testing.assert_allclose(doubled, x * 2)
    with pytest.raises(ValueError, match="no method 'embed_me'"):
        embed(model, x, method="embed_me", progress=False)
    with pytest.raises(ValueError, match="inputs is empty"):
        embed(model, x[:0], progress=False)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        embed(lambda batch: batch.sum(axis=1), x, progress=False)
