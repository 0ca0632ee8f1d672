"""Gallery embedding spaces and transform: like is compared with like, transforms are all or
nothing, and both survive save/load."""

import json

import faiss
import numpy as np
import pytest

from regfree.retrieval import Gallery
from regfree.retrieval.stored import stored_vectors

INDEX_TYPES = ("flat", "hnsw", "ivf")


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rotation(dim, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q.astype(np.float32)


class _Linear:
    """A duck-typed adapter: x @ matrix, optionally failing or misbehaving on the nth call."""

    def __init__(self, matrix, fail_on_call=None, output=None):
        self.matrix = np.asarray(matrix, dtype=np.float32)
        self.source_dim, self.target_dim = self.matrix.shape
        self.fail_on_call, self.output, self.calls = fail_on_call, output, 0

    def transform(self, x):
        self.calls += 1
        if self.calls == self.fail_on_call:
            if self.output is None:
                raise RuntimeError("adapter broke on this batch")
            return self.output(x @ self.matrix)
        return x @ self.matrix


def _two_version_gallery(kind, dim=16, n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    gallery = Gallery(dim, index_type=kind, device="cpu", nlist=4, nprobe=4)
    gallery.train(x)
    gallery.add(x[: n // 2], ids=np.arange(n // 2), version="v1")
    gallery.add(x[n // 2:], ids=np.arange(n // 2, n), version="keep")
    return gallery, x


def _snapshot(gallery):
    ids, vectors = stored_vectors(gallery._index)  # not .index, which would compact hnsw
    return (gallery.dim, gallery.stale_count, gallery.versions(), gallery.spaces(), ids, vectors)


def _assert_same_snapshot(before, after):
    assert before[:4] == after[:4]
    np.testing.assert_array_equal(before[4], after[4])
    np.testing.assert_array_equal(before[5], after[5])


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_transform_rotates_the_chosen_version_only(kind):
    gallery, x = _two_version_gallery(kind)
    rotation = _rotation(16)
    gallery.transform(_Linear(rotation), version="v1", new_version="v2", batch_size=7,
                      progress=False)
    assert gallery.versions() == {"keep": 60, "v2": 60}
    assert gallery.spaces() == {"shared": 60, "v2": 60}
    ids, vectors = stored_vectors(gallery.index)
    np.testing.assert_array_equal(ids, np.arange(120))
    np.testing.assert_allclose(vectors[:60], _unit(x[:60]) @ rotation, atol=1e-5)
    np.testing.assert_allclose(vectors[60:], _unit(x[60:]), atol=1e-6)  # untouched
    # a rotated query finds its own item among the transformed ones only
    scores, found = gallery.search(x[:60] @ rotation, k=3, space="v2")
    assert (found[:, 0] == np.arange(60)).all() and (found < 60).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_transform_changes_the_dimension_when_the_version_holds_every_item(kind):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    gallery = Gallery(16, index_type=kind, device="cpu", nlist=4, nprobe=4)
    gallery.train(x)
    gallery.add(x, ids=np.arange(200) * 3, version="v1")
    lift = _rotation(24, seed=2)[:16]  # 16 -> 24, orthonormal rows: cosines are kept
    gallery.transform(_Linear(lift), version="v1", new_version="v2", progress=False)
    assert (gallery.dim, gallery.versions(), len(gallery)) == (24, {"v2": 200}, 200)
    assert gallery.index.d == 24
    scores, found = gallery.search(x[:20] @ lift, k=1)  # one space: no space= needed
    np.testing.assert_array_equal(found[:, 0], np.arange(20) * 3)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_transform_to_another_dimension_refuses_when_other_versions_stay():
    gallery, _ = _two_version_gallery("flat")
    before = _snapshot(gallery)
    with pytest.raises(ValueError, match=r"adapter maps to 24-d but items of \{'keep': 60\} stay"):
        gallery.transform(_Linear(_rotation(24)[:16]), version="v1", new_version="v2",
                          progress=False)
    _assert_same_snapshot(before, _snapshot(gallery))


@pytest.mark.parametrize("output, message", [
    (None, "adapter broke on this batch"),
    (lambda y: np.where(np.arange(y.shape[1]) == 0, np.nan, y), "returned NaN or inf"),
    (lambda y: y[:, :-1], r"returned shape \(7, 15\) for a batch of 7"),
    (lambda y: np.zeros_like(y), "returned zero vectors"),
])
@pytest.mark.parametrize("kind", ("flat", "hnsw"))
def test_a_failing_adapter_leaves_the_gallery_unchanged(kind, output, message):
    gallery, _ = _two_version_gallery(kind)
    gallery.remove([61])  # hnsw: a stale node, which a transform must neither keep nor lose
    before = _snapshot(gallery)
    adapter = _Linear(_rotation(16), fail_on_call=3, output=output)
    with pytest.raises((RuntimeError, ValueError), match=message):
        gallery.transform(adapter, version="v1", new_version="v2", batch_size=7,
                          progress=False)
    assert adapter.calls == 3  # it failed mid-way, after two good batches
    _assert_same_snapshot(before, _snapshot(gallery))
    assert gallery.search(np.ones((1, 16)), k=2)[1].shape == (1, 2)  # still one space


def test_transform_reports_progress_over_batches(capsys):
    gallery, _ = _two_version_gallery("flat")
    gallery.transform(_Linear(_rotation(16)), version="v1", new_version="v2", batch_size=20)
    err = capsys.readouterr().err
    assert "transform: 100%" in err and "3/3" in err
    gallery.transform(_Linear(_rotation(16)), version="v2", new_version="v3", progress=False)
    assert capsys.readouterr().err == ""


def test_transform_joins_an_existing_version_and_its_space():
    gallery, x = _two_version_gallery("flat")
    gallery.replace(x[:10] * 2 + 1, ids=np.arange(10), version="new", space="new-model")
    gallery.transform(_Linear(_rotation(16)), version="v1", new_version="new", progress=False)
    assert gallery.versions() == {"keep": 60, "new": 60}
    assert gallery.spaces() == {"shared": 60, "new-model": 60}
    with pytest.raises(ValueError, match="version 'new' is in space 'new-model', not 'other'"):
        gallery.transform(_Linear(_rotation(16)), version="keep", new_version="new",
                          space="other", progress=False)


class _NoDims:
    def transform(self, x):
        return x


def test_bad_transform_arguments_name_the_problem():
    gallery, _ = _two_version_gallery("flat")
    rotation = _Linear(_rotation(16))
    cases = [
        (lambda: gallery.transform(object(), version="v1", new_version="v2"),
         TypeError, "adapter must have a transform"),
        (lambda: gallery.transform(_Linear(np.eye(8)), version="v1", new_version="v2"),
         ValueError, r"adapter must map 16-d embeddings here, got an adapter for 8-d -> 8-d "
                     r"\(the gallery stores 16-d vectors\)"),
        (lambda: gallery.transform(_NoDims(), version="v1", new_version="v2"),
         TypeError, "adapter.source_dim must be a positive int, got None"),
        (lambda: gallery.transform(rotation, version="v1", new_version="v1"),
         ValueError, "new_version must differ from version"),
        (lambda: gallery.transform(rotation, version="v9", new_version="v2"),
         ValueError, "no items of version 'v9' to transform"),
        (lambda: gallery.transform(rotation, version="v1", new_version="v2", batch_size=0),
         ValueError, "batch_size must be a positive integer"),
        (lambda: gallery.transform(rotation, version="v1", new_version="v2", space=""),
         ValueError, "space must be a non-empty string"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert gallery.versions() == {"v1": 60, "keep": 60}


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_search_never_mixes_spaces(kind):
    rng = np.random.default_rng(3)
    v1 = rng.normal(size=(80, 16)).astype(np.float32)
    v2 = rng.normal(size=(30, 16)).astype(np.float32)  # an unrelated model, same dimension
    gallery = Gallery(16, index_type=kind, device="cpu", nlist=4, nprobe=4)
    gallery.train(v1)
    gallery.add(v1, ids=np.arange(80), version="v1")
    gallery.replace(v2, ids=np.arange(30), version="v2", space="v2")  # a partial backfill
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"holds items in 2 embedding spaces .* pass space="):
        gallery.search(queries, k=3)
    with pytest.raises(ValueError, match="space 'v3' holds no items"):
        gallery.search(queries, k=3, space="v3")
    for space, vectors, ids in (("v2", v2, np.arange(30)), ("shared", v1[30:], np.arange(30, 80))):
        scores, found = gallery.search(queries, k=4, space=space)
        reference = _unit(queries) @ _unit(vectors).T
        expected = ids[np.argsort(-reference, axis=1)[:, :4]]
        assert np.isin(found, ids).all()  # never an item of the other space
        if kind == "flat":
            np.testing.assert_array_equal(found, expected)
            np.testing.assert_allclose(scores, np.sort(reference, axis=1)[:, ::-1][:, :4],
                                       atol=1e-5)
    # k beyond the space's items: padded with -1, never filled from the other space
    _, found = gallery.search(queries, k=40, space="v2")
    assert set(found[0][found[0] >= 0]) <= set(range(30)) and (found[:, 30:] == -1).all()


def test_a_version_keeps_its_space():
    gallery, x = _two_version_gallery("flat")
    with pytest.raises(ValueError, match="version 'v1' is in space 'shared', not 'v2'"):
        gallery.replace(x[:3], ids=[0, 1, 2], version="v1", space="v2")
    with pytest.raises(ValueError, match="space must be a non-empty string"):
        gallery.add(x[:1], ids=[500], version="v5", space=5)
    assert gallery.versions() == {"v1": 60, "keep": 60} and 500 not in gallery.ids()
    assert gallery.space_of("keep") == "shared"
    with pytest.raises(ValueError, match="version 'v7' is not in the gallery"):
        gallery.space_of("v7")


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_save_load_keeps_spaces(kind, tmp_path):
    gallery, x = _two_version_gallery(kind)
    gallery.transform(_Linear(_rotation(16)), version="v1", new_version=2, space="m2",
                      progress=False)
    gallery.save(tmp_path / "g.gallery")
    loaded = Gallery.load(tmp_path / "g.gallery", device="cpu")
    assert loaded.versions() == {"keep": 60, 2: 60}
    assert loaded.spaces() == {"shared": 60, "m2": 60} and loaded.space_of(2) == "m2"
    with pytest.raises(ValueError, match="pass space="):
        loaded.search(x[:2], k=2)
    for space in ("m2", "shared"):
        np.testing.assert_array_equal(loaded.search(x[:5], 3, space=space)[1],
                                      gallery.search(x[:5], 3, space=space)[1])


def test_format_version_2_files_load_into_one_shared_space(tmp_path):
    gallery, x = _two_version_gallery("flat")
    old = tmp_path / "v2.gallery"  # what regfree wrote before embedding spaces
    meta = {"format": "regfree.Gallery", "format_version": 2, "dim": 16, "similarity": "cosine",
            "index_type": "flat", "params": gallery.params, "versions": ["v1", "keep"]}
    with open(old, "wb") as handle:
        np.savez(handle, index=faiss.serialize_index(gallery.index), ids=gallery.ids(),
                 codes=np.repeat(np.array([0, 1], np.int32), 60),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    loaded = Gallery.load(old, device="cpu")
    assert loaded.spaces() == {"shared": 120} and loaded.versions() == {"v1": 60, "keep": 60}
    np.testing.assert_array_equal(loaded.search(x[:4], 3)[1], gallery.search(x[:4], 3)[1])


def test_a_fitted_embedding_adapter_transforms_a_gallery():
    from regfree.compat import fit_adapter  # compat imports retrieval, never the reverse

    rng = np.random.default_rng(4)
    v1 = rng.normal(size=(300, 16)).astype(np.float32)
    lift = _rotation(24, seed=5)[:16]
    v2 = v1 @ lift
    adapter = fit_adapter(v1[:100], v2[:100], kind="orthogonal")
    gallery = Gallery(16, device="cpu")
    gallery.add(v1, ids=np.arange(300), version="v1")
    gallery.transform(adapter, version="v1", new_version="v2", progress=False)
    _, found = gallery.search(v2[100:150], k=1)
    np.testing.assert_array_equal(found[:, 0], np.arange(100, 150))
