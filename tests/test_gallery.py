"""Gallery: exact search against numpy, approximate indexes, ids, versions, persistence, bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import faiss
import numpy as np
import pytest
import torch

from regfree.retrieval import Gallery, index_types

INDEX_TYPES = ("flat", "hnsw", "ivf")


def _clustered(n, dim=16, clusters=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    return (centres[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def _build(kind, similarity="cosine", n=400, dim=16, seed=0, ids=None):
    x = _clustered(n, dim, seed=seed)
    gallery = Gallery(dim, similarity=similarity, index_type=kind, device="cpu", nlist=8,
                      nprobe=8)
    gallery.train(x)
    gallery.add(x, np.arange(n) * 7 + 3 if ids is None else ids, version="v1")
    return gallery, x


def _reference_scores(queries, vectors, metric):
    if metric == "cosine":
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return q @ v.T  # higher is closer
    return ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)  # lower is closer


def assert_knn_equal_with_ties(scores, ids, reference, row_ids, metric, atol=1e-4):
    """Tie-aware comparison (the idea of faiss contrib/evaluation.py): each returned id must be
    a distinct gallery item whose true score equals the reference's score at that rank, so any
    order among equal scores is accepted but no worse item may take a better one's place."""
    k = ids.shape[1]
    best_first = np.sort(reference, axis=1)
    best_first = best_first[:, ::-1][:, :k] if metric == "cosine" else best_first[:, :k]
    position = {int(i): p for p, i in enumerate(row_ids)}
    for q in range(ids.shape[0]):
        assert len(set(ids[q].tolist())) == k, "an item was returned twice"
        true_scores = reference[q, [position[int(i)] for i in ids[q]]]
        np.testing.assert_allclose(true_scores, best_first[q], atol=atol)
        np.testing.assert_allclose(scores[q], best_first[q], atol=atol)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_search_equals_numpy_brute_force_with_ties(metric):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(150, 12)).astype(np.float32)
    vectors = np.concatenate([base, base[:50], 2 * base[50:80]])  # exact and cosine ties
    row_ids = rng.integers(0, 2**62, size=len(vectors))  # large 64-bit ids
    assert np.unique(row_ids).size == len(vectors)
    gallery = Gallery(12, similarity=metric, index_type="flat", device="cpu")
    gallery.add(vectors, row_ids, version="v1")
    queries = np.concatenate([rng.normal(size=(20, 12)), base[:10]]).astype(np.float32)
    scores, ids = gallery.search(queries, k=15)
    assert scores.shape == ids.shape == (30, 15) and ids.dtype == np.int64
    assert_knn_equal_with_ties(scores, ids, _reference_scores(queries, vectors, metric), row_ids,
                               metric)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_recall_against_flat(kind):
    flat, x = _build("flat")
    approx, _ = _build(kind)
    queries = _clustered(50, seed=5)
    _, exact = flat.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_faiss_index_is_visible_and_returns_caller_ids(kind):
    gallery, x = _build(kind)
    queries = x[:5].copy()
    faiss.normalize_L2(queries)
    _, raw_ids = gallery.index.search(queries, 4)
    _, ids = gallery.search(x[:5], 4)
    np.testing.assert_array_equal(raw_ids, ids)
    assert ids[0, 0] == 3  # item 0 has caller id 0 * 7 + 3 and is its own nearest neighbour


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_versions_replace_and_remove_counts(kind):
    gallery, x = _build(kind, n=300)
    all_ids = gallery.ids()
    assert len(gallery) == 300 and gallery.versions() == {"v1": 300}
    backfilled = all_ids[:120]
    gallery.replace(x[:120] * -1.0, backfilled, version="v2")
    assert gallery.versions() == {"v1": 180, "v2": 120} and len(gallery) == 300
    assert gallery.index.ntotal == 300
    assert set(gallery.ids("v2").tolist()) == set(backfilled.tolist())
    assert gallery.version_of(all_ids[[0, 200]]) == ["v2", "v1"]
    gallery.replace(x[:20], backfilled[:20], version=3)
    assert gallery.versions() == {"v1": 180, "v2": 100, 3: 20}
    gallery.remove(all_ids[200:])
    assert gallery.versions() == {"v1": 80, "v2": 100, 3: 20} and len(gallery) == 200
    assert gallery.index.ntotal == 200
    _, ids = gallery.search(x[200:230], 10)
    assert not np.isin(ids, all_ids[200:]).any(), "removed items must not be found"
    # the replaced vectors are what the index now holds: -x[5] finds item 5 first
    _, ids = gallery.search(-x[25:26], 1)
    assert ids[0, 0] == all_ids[25]
    gallery.remove(gallery.ids("v2"))
    assert gallery.versions() == {"v1": 80, 3: 20}


@pytest.mark.parametrize("kind", INDEX_TYPES)
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_save_load_round_trip_searches_identically(tmp_path, kind, metric):
    gallery, x = _build(kind, similarity=metric, n=300)
    gallery.replace(x[:50] + 0.5, gallery.ids()[:50], version="v2")
    path = tmp_path / "sub" / "gallery.bin"
    gallery.save(path)
    loaded = Gallery.load(path)
    assert (loaded.dim, loaded.similarity, loaded.index_type) == (16, metric, kind)
    assert loaded.versions() == gallery.versions() == {"v1": 250, "v2": 50}
    np.testing.assert_array_equal(loaded.ids(), gallery.ids())
    assert loaded.params == gallery.params
    queries = _clustered(40, seed=9)
    before, after = gallery.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert [p.name for p in path.parent.iterdir()] == ["gallery.bin"], "no temporary file left"
    loaded.add(x[:2], [10**15, 10**15 + 1], version="v3")  # the loaded gallery stays usable
    assert loaded.versions()["v3"] == 2


def test_search_pads_missing_results_and_accepts_tensors():
    gallery = Gallery(4, device="cpu")
    gallery.add(torch.eye(4)[:3], torch.tensor([5, 6, 7]), version="v1")
    scores, ids = gallery.search(torch.eye(4)[:1], k=5)
    assert ids[0, 0] == 5 and set(ids[0, 1:3].tolist()) == {6, 7}  # 6 and 7 tie at cosine 0
    assert ids[0, 3:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 3:]).all() and scores[0, 0] == pytest.approx(1.0)
    l2 = Gallery(4, similarity="l2", device="cpu")
    l2.add(np.eye(4), [1, 2, 3, 4], version=1)
    scores, ids = l2.search(np.zeros((1, 4)), k=6)
    assert np.isposinf(scores[0, 4:]).all() and scores[0, 0] == pytest.approx(1.0)


def test_add_does_not_modify_the_callers_array():
    x = np.full((2, 3), 2.0, dtype=np.float32)
    Gallery(3, device="cpu").add(x, [0, 1], version="v1")
    assert (x == 2.0).all()


def test_bad_input_raises_clear_value_errors(tmp_path):
    gallery, x = _build("flat", n=50)
    known = gallery.ids()
    cases = [
        (lambda: gallery.add(np.ones((2, 5)), [1000, 1001], version="v1"), "embeddings has dimension 5, the gallery expects 16"),
        (lambda: gallery.search(np.ones((1, 3)), 2), "queries has dimension 3"),
        (lambda: gallery.add(np.full((1, 16), np.nan), [1000], version="v1"), "embeddings contains NaN or inf"),
        (lambda: gallery.add(np.full((1, 16), np.inf), [1000], version="v1"), "embeddings contains NaN or inf"),
        (lambda: gallery.search(np.full((1, 16), np.nan), 2), "queries contains NaN or inf"),
        (lambda: gallery.add(np.ones((2, 16)), [1000, 1000], version="v1"), r"ids contains duplicates: \[1000\]"),
        (lambda: gallery.add(np.ones((1, 16)), known[:1], version="v1"), r"ids already in the gallery \(use replace\)"),
        (lambda: gallery.replace(np.ones((1, 16)), [999_999], version="v2"), r"unknown ids \(not in the gallery\): \[999999\]"),
        (lambda: gallery.replace(np.ones((2, 16)), known[[0, 0]], version="v2"), r"ids contains duplicates: \[3\]"),
        (lambda: gallery.remove([999_999]), r"unknown ids \(not in the gallery\): \[999999\]"),
        (lambda: gallery.remove([]), "ids is empty"),
        (lambda: gallery.add(np.ones((0, 16)), [], version="v1"), "embeddings is empty"),
        (lambda: gallery.search(np.ones((0, 16)), 2), "queries is empty"),
        (lambda: gallery.add(np.ones((2, 16)), [2000], version="v1"), "ids has 1 entries but there are 2 embeddings"),
        (lambda: gallery.add(np.ones((1, 16)), [-5], version="v1"), "ids must be non-negative"),
        (lambda: gallery.add(np.ones((1, 16)), [1.5], version="v1"), "ids must be integers"),
        (lambda: gallery.add(np.ones(16), [2000], version="v1"), r"embeddings must be 2-D \(n, dim\)"),
        (lambda: gallery.add(np.zeros((1, 16)), [2000], version="v1"), "embeddings has 1 zero vector"),
        (lambda: gallery.add(np.ones((1, 16)), [2000], version=None), "version must be a str or int"),
        (lambda: gallery.search(np.ones((1, 16)), 0), "k must be a positive integer"),
        (lambda: Gallery(0), "dim must be a positive integer"),
        (lambda: Gallery(4, similarity="dot"), "similarity must be one of"),
        (lambda: Gallery(4, index_type="lsh"), "index_type must be one of"),
        (lambda: Gallery(4, device="tpu"), "device must be 'auto', 'cpu' or 'cuda'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert len(gallery) == 50 and gallery.versions() == {"v1": 50}, "failed calls changed nothing"


def test_untrained_ivf_is_refused():
    gallery = Gallery(8, index_type="ivf", device="cpu", nlist=16)
    x = _clustered(100, dim=8)
    assert not gallery.is_trained
    with pytest.raises(ValueError, match="the ivf index is untrained"):
        gallery.add(x, np.arange(100), version="v1")
    with pytest.raises(ValueError, match="the ivf index is untrained"):
        gallery.search(x[:1], 3)
    with pytest.raises(ValueError, match="training an ivf index needs at least nlist=16"):
        gallery.train(x[:10])
    gallery.train(x)
    gallery.add(x, np.arange(100), version="v1")
    with pytest.raises(ValueError, match="the ivf index already holds items; train it before the first add"):
        gallery.train(x)


def test_load_rejects_files_that_are_not_galleries(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a gallery at all")
    with pytest.raises(ValueError, match="not a readable regfree gallery"):
        Gallery.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, index=np.zeros(3, np.uint8), ids=np.zeros(0), codes=np.zeros(0),
             meta=np.frombuffer(b'{"format": "x"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="not a regfree gallery file"):
        Gallery.load(other)
    with pytest.raises(FileNotFoundError):
        Gallery.load(tmp_path / "missing.bin")



def _exhaustive_hnsw(n=500, dim=16, similarity="cosine", seed=0):
    """An hnsw gallery whose search visits every node (efSearch above its size), so its results
    are exact and comparable with a fresh build's whatever the graph looks like."""
    x = _clustered(n, dim, seed=seed)
    gallery = Gallery(dim, similarity=similarity, index_type="hnsw", device="cpu", hnsw_m=16,
                      ef_search=4 * n)
    gallery.add(x, np.arange(n) * 5 + 1, version="v1")
    return gallery, x


@pytest.mark.parametrize("similarity", ["cosine", "l2"])
def test_hnsw_replace_and_remove_search_like_a_fresh_rebuild(similarity):
    gallery, x = _exhaustive_hnsw(similarity=similarity)
    ids = gallery.ids()
    rng = np.random.default_rng(3)
    content = dict(zip(ids.tolist(), x))
    for step in range(4):  # backfill steps, one removal, and ties (copies of other items)
        chosen = rng.choice(gallery.ids(), size=40, replace=False)
        new = _clustered(40, seed=10 + step)
        new[:5] = x[:5]
        gallery.replace(new, chosen, version="v2")
        content.update(zip(chosen.tolist(), new))
    removed = rng.choice(gallery.ids(), size=30, replace=False)
    gallery.remove(removed)
    for i in removed.tolist():
        del content[i]
    assert 0 < gallery.stale_count <= len(gallery) // 2, "stale nodes, not yet compacted"
    final_ids = np.array(sorted(content))
    final = np.stack([content[i] for i in final_ids.tolist()])
    fresh = Gallery(16, similarity=similarity, index_type="hnsw", device="cpu", hnsw_m=16,
                    ef_search=2000)
    fresh.add(final, final_ids, version="v2")
    queries = np.concatenate([_clustered(30, seed=99), x[:5]])
    reference = _reference_scores(queries, final, similarity)
    mutated_result, fresh_result = gallery.search(queries, 12), fresh.search(queries, 12)
    for scores, found in (mutated_result, fresh_result):
        assert_knn_equal_with_ties(scores, found, reference, final_ids, similarity)
    np.testing.assert_allclose(mutated_result[0], fresh_result[0], atol=1e-4)
    assert not np.isin(mutated_result[1], removed).any()
    gallery.compact()
    assert gallery.stale_count == 0 and gallery.index.ntotal == len(gallery) == final_ids.size
    assert_knn_equal_with_ties(*gallery.search(queries, 12), reference, final_ids, similarity)


def test_hnsw_stale_nodes_keep_recall_and_compact_past_half_the_gallery():
    gallery, x = _build("hnsw", n=400)
    ids = gallery.ids()
    flat = Gallery(16, device="cpu")
    flat.add(x, ids, version="v1")
    moved = x[:150][::-1].copy()  # items 0..149 trade places: every replaced node goes stale
    gallery.replace(moved, ids[:150], version="v2")
    flat.replace(moved, ids[:150], version="v2")
    assert gallery.stale_count == 150 and gallery.versions() == {"v1": 250, "v2": 150}
    queries = _clustered(50, seed=5)
    _, exact = flat.search(queries, 10)
    _, found = gallery.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= 0.9, recall
    gallery.remove(ids[300:351])  # 201 stale > half of the 349 items left: rebuilt
    assert gallery.stale_count == 0 and len(gallery) == 349
    assert gallery.version_of(ids[:1]) == ["v2"]


def test_replace_takes_adds_order_and_refuses_the_old_one():
    gallery, x = _build("flat", n=20)
    ids = gallery.ids()
    with pytest.raises(TypeError, match=r"replace takes \(embeddings, ids, \*, version=\.\.\.\)"):
        gallery.replace(ids[:3], x[:3], version="v2")  # the order before add's
    with pytest.raises(TypeError, match=r"add takes \(embeddings, ids, \*, version=\.\.\.\)"):
        gallery.add([100, 101], np.ones((2, 16)), version="v2")
    with pytest.raises(TypeError, match="takes 3 positional arguments but 4 were given"):  # version is keyword-only
        gallery.replace(x[:3], ids[:3], "v2")
    assert gallery.versions() == {"v1": 20}, "refused calls changed nothing"
    gallery.replace(torch.as_tensor(x[:3] + 1), torch.as_tensor(ids[:3]), version="v2")
    assert gallery.versions() == {"v1": 17, "v2": 3}


def test_index_types_are_data_a_new_entry_is_enough(monkeypatch):
    assert [(g.needs_training, g.is_trained) for g in
            (Gallery(4, index_type=kind, device="cpu") for kind in INDEX_TYPES)] == \
        [(False, True), (False, True), (True, False)]
    # one entry, nothing else: a flat index whose removals go through the stale-node path
    entry = dataclasses.replace(index_types.INDEX_TYPES["flat"], name="flat_stale",
                                removes_natively=False)
    monkeypatch.setitem(index_types.INDEX_TYPES, "flat_stale", entry)
    gallery, x = _build("flat_stale", n=50)
    gallery.replace(x[:10] * -1.0, gallery.ids()[:10], version="v2")
    gallery.remove(gallery.ids()[40:])
    assert gallery.stale_count == 20 and len(gallery) == 40
    final = np.concatenate([x[:10] * -1.0, x[10:40]])
    queries = np.concatenate([x[:10], x[40:], -x[:3]])  # the stale vectors' own places first
    scores, ids = gallery.search(queries, 5)
    assert_knn_equal_with_ties(scores, ids, _reference_scores(queries, final, "cosine"),
                               gallery.ids(), "cosine")


def test_load_reads_format_version_1_and_refuses_newer_files(tmp_path):
    gallery, x = _build("flat", similarity="l2", n=30)
    old = tmp_path / "v1.gallery"  # what regfree wrote before "metric" became "similarity"
    meta = {"format": "regfree.Gallery", "format_version": 1, "dim": 16, "metric": "l2",
            "index_type": "flat", "params": gallery.params, "versions": ["v1"]}
    with open(old, "wb") as handle:
        np.savez(handle, index=faiss.serialize_index(gallery.index), ids=gallery.ids(),
                 codes=np.zeros(30, np.int32),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    loaded = Gallery.load(old)
    assert (loaded.similarity, loaded.versions()) == ("l2", {"v1": 30})
    assert loaded.spaces() == {"shared": 30}  # before spaces, every version shared one
    np.testing.assert_array_equal(loaded.search(x[:4], 3)[1], gallery.search(x[:4], 3)[1])
    newer = tmp_path / "v4.npz"
    meta.update(format_version=4)
    np.savez(newer, index=np.zeros(3, np.uint8), ids=np.zeros(0), codes=np.zeros(0),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match="format version 4; this regfree reads versions"):
        Gallery.load(newer)


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from regfree.retrieval import Gallery
    path = sys.argv[1]
    small = Gallery(32, device="cpu")
    small.add(np.random.default_rng(0).normal(size=(100, 32)), np.arange(100), version="v1")
    small.save(path)
    print("saved", flush=True)
    big = Gallery(32, device="cpu")
    big.add(np.random.default_rng(1).normal(size=(400_000, 32)), np.arange(400_000),
            version="v2")
    print("saving", flush=True)
    while True:  # keep rewriting the file until killed
        big.save(path)
""")


def test_kill_during_save_leaves_the_previous_gallery_loadable(tmp_path):
    path = tmp_path / "gallery.bin"
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == "saved"
        assert child.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".gallery.bin.*.tmp")):  # wait until a save is under way
            assert time.monotonic() < deadline, "the child never started writing"
            assert child.poll() is None, "the child exited early"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".gallery.bin.*.tmp")), "killed mid-save: the temporary file remains"
    survivor = Gallery.load(path)
    assert survivor.versions() == {"v1": 100} and len(survivor) == 100
    _, ids = survivor.search(np.random.default_rng(0).normal(size=(1, 32)), 1)
    assert ids[0, 0] == 0
