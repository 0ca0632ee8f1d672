"""Retrieval metrics (numpy), evaluate, cross-model tables, embedding in batches."""


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from regfree.metrics.retrieval import RetrievalScores, retrieval_scores
from regfree.models import MLP
from regfree.retrieval import Gallery, cross_model_table, embed, evaluate, retrieval_matrix


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
    parts = []
    for lab, r in zip(np.split(labels, cuts), np.split(ranked, cuts)):
        if len(lab):
            parts.append(RetrievalScores(ks=(1, 3)))
            assert parts[-1].update(lab, r) is None
    merged = parts[0]
    for part in parts[1:]:
        assert merged.merge(part) is merged
    assert merged.compute() == pytest.approx(one_shot)
    merged.reset()
    merged.update(labels, ranked)
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
    with pytest.raises(ValueError, match=r"one entry per gallery version \['old', 'new'\]; "
                                         r"missing \['new'\]"):
        cross_model_table({"old": q_old}, q_labels, {"old": old_x, "new": new_x}, labels)


def test_different_embedding_sizes_raise_unless_the_pairs_are_named():
    old_x, labels = _labelled_clusters(50, dim=8)
    new_x, _ = _labelled_clusters(50, dim=6)
    q8, q_labels = _labelled_clusters(10, dim=8, seed=1)
    q6, _ = _labelled_clusters(10, dim=6, seed=1)
    galleries = {"old": old_x, "new": new_x}
    # the same error from the matrix and from the table: a mismatch is never skipped silently
    message = r"query_embeddings\['new'\] are 6-d but gallery 'old' is 8-d"
    with pytest.raises(ValueError, match=message):
        retrieval_matrix({"old": q8, "new": q6}, q_labels, galleries, labels)
    with pytest.raises(ValueError, match=message):
        cross_model_table({"old": q8, "new": q6}, q_labels, galleries, labels,
                          mixed_fractions=())
    # naming the galleries a version searches leaves the others empty, on purpose
    queries = {"old": q8, "new": {"new": q6}}
    table = cross_model_table(queries, q_labels, galleries, labels, ks=(1,), mixed_fractions=())
    assert [(r["query"], r["gallery"]) for r in table.rows] == [("old", "old"), ("new", "new")]
    matrix = retrieval_matrix(queries, q_labels, galleries, labels, ks=(1,))
    assert np.isnan(matrix.value("new", "old")) and matrix.pairs() == [("old", "old"),
                                                                        ("new", "new")]
    with pytest.raises(ValueError, match=r"mixed galleries need query_embeddings\['new'\] as one"):
        cross_model_table(queries, q_labels, galleries, labels, ks=(1,))


def test_matrix_is_what_evaluate_gives_per_pair_and_reuses_one_gallery_per_version():
    old_x, labels = _labelled_clusters(60, seed=5)
    new_x = old_x[::-1].copy()
    q_old, q_labels = _labelled_clusters(15, seed=6)
    matrix = retrieval_matrix({"v1": q_old, "v2": q_old * 2}, q_labels,
                              {"v1": old_x, "v2": new_x}, labels, ks=(1, 3), similarity="l2",
                              map_k=10, ap_denominator="hits")
    for query, gallery_version, queries in [("v1", "v1", q_old), ("v2", "v1", q_old * 2),
                                            ("v2", "v2", q_old * 2)]:
        gallery = Gallery(8, similarity="l2", device="cpu")
        gallery.add({"v1": old_x, "v2": new_x}[gallery_version], np.arange(60), version="x")
        expected = evaluate(queries, q_labels, gallery, labels, ks=(1, 3), map_k=10,
                            ap_denominator="hits")
        for key, value in expected.items():
            assert matrix.value(query, gallery_version, key) == pytest.approx(value)
    assert np.isnan(matrix.value("v1", "v2"))
    assert matrix.protocol["similarity"] == "l2" and matrix.protocol["map_k"] == 10
    with pytest.raises(ValueError, match="similarity must be one of"):
        retrieval_matrix({"v1": q_old}, q_labels, {"v1": old_x}, labels, similarity="dot")
    with pytest.raises(ValueError, match="leave_one_out needs the queries to be the gallery"):
        retrieval_matrix({"v1": q_old}, q_labels, {"v1": old_x}, labels, leave_one_out=True)


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
    with pytest.raises(ValueError, match=r"model output must be \(batch, dim\) embeddings"):
        embed(lambda batch: batch.sum(axis=1), x, progress=False)


def test_tied_block_top_k_is_the_expected_hit_under_any_order_of_the_block():
    # four tied neighbours, one relevant: top-1 = 1/4, top-2 = 1 - C(3, 2) / C(4, 2) = 1/2
    tied = [[0.5, 0.5, 0.5, 0.5, 0.1]]
    for ranked in ([[0, 1, 0, 0, 1]], [[1, 0, 0, 0, 1]], [[0, 0, 0, 1, 1]]):
        scores = retrieval_scores([1], ranked, ks=(1, 2, 4), neighbour_scores=tied)
        assert scores["top1"] == pytest.approx(0.25)
        assert scores["top2"] == pytest.approx(0.5)
        assert scores["top4"] == 1.0
        # the block is one threshold step: its hit counts at precision 1/4, then 2/5
        assert scores["mAP"] == pytest.approx((1 / 4 + 2 / 5) / 2)
    # a hit before the block decides top-k whatever the block holds
    assert retrieval_scores([1], [[1, 0, 0]], ks=(2,), neighbour_scores=[[0.9, 0.5, 0.5]])[
        "top2"] == 1.0
    # tie_tolerance=0 ties only equal scores; the default also ties last-bit differences
    close = [[0.5, 0.5 + 1e-9, 0.1]]
    assert retrieval_scores([1], [[0, 1, 0]], ks=(1,), neighbour_scores=close)["top1"] == 0.5
    assert retrieval_scores([1], [[0, 1, 0]], ks=(1,), neighbour_scores=close,
                            tie_tolerance=0.0)["top1"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_tied_scores_give_sklearn_ap_whatever_the_order_within_ties(seed):
    rng = np.random.default_rng(seed)
    gallery_labels = rng.integers(0, 3, size=30)
    similarity = rng.integers(0, 5, size=(6, 30)).astype(np.float64)  # many ties
    query_labels = rng.integers(0, 3, size=6)
    relevant = (gallery_labels[None, :] == query_labels[:, None]).sum(axis=1)
    expected = np.mean([average_precision_score(gallery_labels == y, s) if r else 0.0
                        for y, s, r in zip(query_labels, similarity, relevant)])
    results = []
    for tiebreak in (rng.random(30), rng.random(30)):  # two orders within the tied blocks
        order = np.lexsort((np.broadcast_to(tiebreak, similarity.shape), -similarity), axis=1)
        results.append(retrieval_scores(query_labels, gallery_labels[order], ks=(1, 5),
                                        num_relevant=relevant,
                                        neighbour_scores=np.take_along_axis(similarity, order, 1)))
    assert results[0]["mAP"] == pytest.approx(expected, abs=1e-12)
    assert results[1] == pytest.approx(results[0], abs=1e-12)


def test_evaluate_on_a_duplicated_gallery_matches_sklearn_and_ignores_insertion_order():
    base, _ = _labelled_clusters(40, seed=7)
    vectors = np.repeat(base, 3, axis=0)  # every item three times, labels differ within a copy
    labels = np.random.default_rng(8).integers(0, 4, size=120)
    queries, query_y = _labelled_clusters(25, seed=9)
    # each base item's cosine repeated, not the copies' own: a BLAS may round identical rows
    # differently in the last bit, and sklearn would then rank the copies instead of tying them
    cosine = np.repeat((queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        base / np.linalg.norm(base, axis=1, keepdims=True)).T, 3, axis=1)
    expected = np.mean([average_precision_score(labels == y, s) for y, s in zip(query_y, cosine)])
    results, short = [], []
    for insertion in (np.arange(120), np.random.default_rng(10).permutation(120)):
        gallery = Gallery(8, device="cpu")
        ids = insertion * 7 + 3
        gallery.add(vectors[insertion], ids, version="v1")
        by_id = dict(zip(ids.tolist(), labels[insertion].tolist()))
        results.append(evaluate(queries, query_y, gallery, by_id, ks=(1, 2, 5)))
        # cut inside tied triples: the search looks past the cut until each block ends
        short.append(evaluate(queries, query_y, gallery, by_id, ks=(1, 2), map_k=4))
    assert results[0]["mAP"] == pytest.approx(expected, abs=1e-6)
    assert results[1] == pytest.approx(results[0], abs=1e-9)
    assert short[1] == pytest.approx(short[0], abs=1e-9)
    assert short[0]["top2"] == pytest.approx(results[0]["top2"], abs=1e-9)

def test_leave_one_out_excludes_each_querys_own_item():
    items, labels = _labelled_clusters(80, seed=11)
    gallery = Gallery(8, device="cpu")
    gallery.add(items, np.arange(80) + 100, version="v1")
    by_id = dict(zip((np.arange(80) + 100).tolist(), labels.tolist()))
    with_self = evaluate(items, labels, gallery, by_id, ks=(1, 5))
    assert with_self["top1"] == 1.0  # every query finds itself first
    left_out = evaluate(items, labels, gallery, by_id, ks=(1, 5), query_ids=np.arange(80) + 100)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    cosine = unit @ unit.T
    others = ~np.eye(80, dtype=bool)
    expected_ap = np.mean([average_precision_score(labels[others[i]] == labels[i],
                                                   cosine[i, others[i]]) for i in range(80)])
    nearest = np.array([labels[others[i]][np.argmax(cosine[i, others[i]])] for i in range(80)])
    assert left_out["mAP"] == pytest.approx(expected_ap, abs=1e-6)
    assert left_out["top1"] == pytest.approx(np.mean(nearest == labels))
    assert left_out["top1"] < 1.0
    # the same through the matrix and the table
    matrix = retrieval_matrix({"v1": items}, labels, {"v1": items}, labels, ks=(1, 5),
                              leave_one_out=True)
    assert matrix.value("v1", "v1", "mAP") == pytest.approx(left_out["mAP"])
    table = cross_model_table({"v1": items}, labels, {"v1": items}, labels, ks=(1, 5),
                              leave_one_out=True)
    assert table.get("v1", "v1")["top1"] == pytest.approx(left_out["top1"])
    with pytest.raises(ValueError, match="query_ids must be ids of gallery items"):
        evaluate(items[:2], labels[:2], gallery, by_id, query_ids=[100, 5])


def test_ap_at_k_divides_by_min_relevant_k_or_by_hits_in_the_top_k():
    # relevant at ranks 1 and 3 of the first 4; R = 3 relevant items in the gallery
    ranked, relevant = [[1, 0, 1, 0, 1]], [3]
    precision_sum = 1 + 2 / 3
    by_relevant = retrieval_scores([1], ranked, ks=(1,), num_relevant=relevant, map_k=4)
    by_hits = retrieval_scores([1], ranked, ks=(1,), num_relevant=relevant, map_k=4,
                               ap_denominator="hits")
    assert by_relevant["mAP"] == pytest.approx(precision_sum / 3)
    assert by_hits["mAP"] == pytest.approx(precision_sum / 2)
    # the full ranking gives the same under both (every relevant item is in the list)
    full = [retrieval_scores([1], ranked, ks=(1,), num_relevant=relevant, ap_denominator=d)
            for d in ("relevant", "hits")]
    assert full[0]["mAP"] == pytest.approx(full[1]["mAP"])
    with pytest.raises(ValueError, match="ap_denominator must be one of"):
        retrieval_scores([1], ranked, ap_denominator="found")
    with pytest.raises(ValueError, match="map_k must be a positive integer"):
        RetrievalScores(map_k=0)
