"""Backfill planning and backfill curves on real galleries."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from regfree.reporting.plots import plot_backfill_curves
from regfree.retrieval import Gallery, backfill_curve, evaluate, plan_backfill


def _gallery(n=6, ids=None):
    gallery = Gallery(3, device="cpu")
    ids = np.arange(n) if ids is None else ids
    gallery.add(np.random.default_rng(0).normal(size=(n, 3)), ids, version="v1")
    return gallery


def test_random_plan_is_a_seeded_permutation():
    gallery = _gallery(50)
    first = plan_backfill(gallery, "random", seed=3)
    assert sorted(first.tolist()) == list(range(50))
    np.testing.assert_array_equal(first, plan_backfill(gallery, "random", seed=3))
    assert not np.array_equal(first, plan_backfill(gallery, "random", seed=4))


def test_informed_plans_follow_v1_uncertainty():
    gallery = _gallery(4, ids=np.array([40, 10, 30, 20]))
    logits = np.array([[4.0, 0.0, 0.0],    # id 10: confident
                       [1.0, 0.9, 0.0],    # id 20: two classes close -> smallest margin
                       [1.0, 1.0, 1.0],    # id 30: uniform -> highest entropy, margin 0
                       [2.0, 0.0, 1.5]])   # id 40
    assert plan_backfill(gallery, "margin", logits=logits).tolist() == [30, 20, 40, 10]
    assert plan_backfill(gallery, "entropy", logits=logits).tolist() == [30, 20, 40, 10]
    # rows can be given in any id order
    shuffled = plan_backfill(gallery, "margin", logits=logits[::-1], ids=[40, 30, 20, 10])
    assert shuffled.tolist() == [30, 20, 40, 10]
    priority = plan_backfill(gallery, "scores", scores=[1.0, 5.0, 3.0, 2.0], ids=[10, 20, 30, 40])
    assert priority.tolist() == [20, 30, 40, 10]


def test_plan_only_covers_the_requested_version():
    gallery = _gallery(6)
    gallery.replace(np.ones((2, 3)), [1, 4], version="v2")
    logits = np.random.default_rng(1).normal(size=(6, 5))
    plan = plan_backfill(gallery, "margin", version="v1", logits=logits)
    assert sorted(plan.tolist()) == [0, 2, 3, 5]
    assert sorted(plan_backfill(gallery, "random", version="v1").tolist()) == [0, 2, 3, 5]


def test_plan_backfill_rejects_bad_input():
    gallery = _gallery(4)
    with pytest.raises(ValueError, match="order must be one of"):
        plan_backfill(gallery, "fastest")
    with pytest.raises(ValueError, match="order='margin' needs logits"):
        plan_backfill(gallery, "margin")
    with pytest.raises(ValueError, match="order='scores' needs scores"):
        plan_backfill(gallery, "scores")
    with pytest.raises(ValueError, match="logits has 3 rows but ids has 4"):
        plan_backfill(gallery, "margin", logits=np.ones((3, 2)))
    with pytest.raises(ValueError, match="ids does not cover every item to backfill"):
        plan_backfill(gallery, "entropy", logits=np.ones((4, 2)), ids=[0, 1, 2, 9])
    with pytest.raises(ValueError, match="no items of version 'v9'"):
        plan_backfill(gallery, version="v9")
    with pytest.raises(ValueError, match="the gallery is empty: nothing to backfill"):
        plan_backfill(Gallery(3, device="cpu"))


def _update_scenario(seed=0, n=400, n_queries=120, dim=8, classes=5):
    """v2 embeds every item near its class centre; v1 is good on most items but scrambles a
    third of them, and v1's classifier is unsure exactly there."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = rng.integers(0, classes, size=n)
    new = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    scrambled = rng.random(n) < 0.35
    old = new + 0.3 * rng.normal(size=new.shape).astype(np.float32)
    old[scrambled] = rng.normal(size=(scrambled.sum(), dim)).astype(np.float32) * 3
    logits = np.where(scrambled[:, None], 0.1, 5.0) * np.eye(classes)[labels]
    logits += 0.01 * rng.normal(size=logits.shape)
    query_labels = rng.integers(0, classes, size=n_queries)
    queries = (centres[query_labels] + rng.normal(size=(n_queries, dim))).astype(np.float32)
    return queries, query_labels, old, new, labels, logits


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_backfill_curve_endpoints_are_old_and_new_gallery_accuracy(index_type):
    queries, query_labels, old, new, labels, logits = _update_scenario()
    ids = np.arange(len(labels)) * 2 + 11
    gallery = Gallery(8, device="cpu")
    gallery.add(old, ids, version="old")
    orders = {"random": plan_backfill(gallery, "random", seed=0),
              "margin": plan_backfill(gallery, "margin", logits=logits)}
    curve = backfill_curve(queries, query_labels, old, new, labels, orders,
                           fractions=(0.0, 0.25, 0.5, 1.0), gallery_ids=ids, index_type=index_type,
                           ks=(1, 5), progress=False)
    assert curve.fractions.tolist() == [0.0, 0.25, 0.5, 1.0]
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    at_zero = evaluate(queries, query_labels, gallery, label_of, ks=(1, 5))
    fresh = Gallery(8, device="cpu")
    fresh.add(new, ids, version="new")
    at_full = evaluate(queries, query_labels, fresh, label_of, ks=(1, 5))
    tolerance = 1e-9 if index_type == "flat" else 0.05  # hnsw is approximate
    for name in orders:
        for key in ("top1", "top5", "mAP"):
            assert curve.scores[name][key][0] == pytest.approx(at_zero[key], abs=tolerance)
            assert curve.scores[name][key][-1] == pytest.approx(at_full[key], abs=tolerance)
    assert at_full["mAP"] > at_zero["mAP"] + 0.1, "the scenario must leave room to gain"
    # re-embedding the scrambled items first gains accuracy earlier than a random order
    assert curve.area("margin", "mAP") > curve.area("random", "mAP") + 0.02
    table = curve.to_markdown("top1")
    assert table.splitlines()[0] == "| order | 0% | 25% | 50% | 100% | area |"


def test_backfill_curve_rejects_bad_input():
    queries, query_labels, old, new, labels, _ = _update_scenario(n=40, n_queries=5)
    good = {"random": np.arange(40)}
    with pytest.raises(ValueError, match="permutation of the gallery ids"):
        backfill_curve(queries, query_labels, old, new, labels, {"bad": np.arange(1, 41)},
                       progress=False)
    with pytest.raises(ValueError, match="fractions must be a non-empty ascending sequence"):
        backfill_curve(queries, query_labels, old, new, labels, good, fractions=(0.5, 0.2),
                       progress=False)
    with pytest.raises(ValueError, match="orders is empty"):
        backfill_curve(queries, query_labels, old, new, labels, {}, progress=False)
    with pytest.raises(ValueError, match="new_embeddings has 39 rows, old_embeddings 40"):
        backfill_curve(queries, query_labels, old, new[:39], labels, good, progress=False)


def test_ivf_backfill_curve_trains_on_the_old_gallery():
    queries, query_labels, old, new, labels, _ = _update_scenario(n=200, n_queries=30)
    curve = backfill_curve(queries, query_labels, old, new, labels,
                           {"random": np.random.default_rng(0).permutation(200)},
                           fractions=(0.0, 1.0), index_type="ivf",
                           index_params={"nlist": 4, "nprobe": 4}, ks=(1,), progress=False)
    assert curve.scores["random"]["top1"][-1] > curve.scores["random"]["top1"][0]


def test_plot_returns_a_figure_and_writes_png(tmp_path):
    queries, query_labels, old, new, labels, logits = _update_scenario(n=60, n_queries=10)
    curve = backfill_curve(queries, query_labels, old, new, labels,
                           {"random": np.arange(60)}, fractions=(0.0, 0.5, 1.0), ks=(1,),
                           progress=False)
    path = tmp_path / "plots" / "curve.png"
    figure = plot_backfill_curves(curve, metric="mAP", path=str(path))
    assert isinstance(figure, Figure)
    assert figure.axes[0].get_ylabel() == "mAP" and len(figure.axes[0].lines) == 1
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]
    with pytest.raises(ValueError, match=r"metric must be one of \['mAP', 'top1'\], got 'top5'"):
        plot_backfill_curves(curve, metric="top5")


class _Linear:
    """A duck-typed adapter: anything with transform(x) will do (no regfree.compat needed)."""

    def __init__(self, weight, rows=None):
        self.weight, self.rows = weight, rows

    def transform(self, x):
        return (x @ self.weight)[: self.rows]


def test_backfill_curve_with_adapter_starts_on_the_transformed_gallery():
    queries, query_labels, old, new, labels, logits = _update_scenario()
    lift = np.random.default_rng(1).normal(size=(8, 12)).astype(np.float32)  # v2's space: 12-d
    new_queries, new_items = queries @ lift, new @ lift
    order = np.argsort(-logits.max(axis=1), kind="stable")[::-1]  # any permutation
    curve = backfill_curve(new_queries, query_labels, old, new_items, labels, {"o": order},
                           fractions=(0.0, 0.5, 1.0), adapter=_Linear(lift), ks=(1,),
                           progress=False)
    expected = []
    for done in (0, 200, 400):  # the same galleries by hand: first `done` items re-embedded
        stored = old @ lift
        stored[order[:done]] = new_items[order[:done]]
        by_hand = Gallery(12, device="cpu")
        by_hand.add(stored, np.arange(400), version="mixed")
        expected.append(evaluate(new_queries, query_labels, by_hand, labels, ks=(1,))["mAP"])
    np.testing.assert_allclose(curve.scores["o"]["mAP"], expected, atol=1e-9)
    assert expected[-1] > expected[0] + 0.05, "the scenario must leave room to gain"


def test_backfill_curve_refuses_a_bad_adapter():
    queries, query_labels, old, new, labels, _ = _update_scenario(n=40, n_queries=5)
    good = {"random": np.arange(40)}
    with pytest.raises(TypeError, match="adapter must have a transform"):
        backfill_curve(queries, query_labels, old, new, labels, good, adapter=np.eye(8),
                       progress=False)
    narrow = _Linear(np.eye(5, dtype=np.float32))
    narrow.source_dim = 5
    with pytest.raises(ValueError, match=r"adapter must map 8-d embeddings here, got an adapter "
                                         r"for 5-d -> \?-d \(old_embeddings\)"):
        backfill_curve(queries, query_labels, old, new, labels, good, adapter=narrow,
                       progress=False)
    with pytest.raises(ValueError, match=r"adapter.transform\(old_embeddings\) gave 39 rows"):
        backfill_curve(queries, query_labels, old, new, labels, good,
                       adapter=_Linear(np.eye(8, dtype=np.float32), rows=39), progress=False)
    with pytest.raises(ValueError, match="new_embeddings has dimension 8, the gallery expects 4"):
        backfill_curve(queries, query_labels, old, new, labels, good,
                       adapter=_Linear(np.eye(8, 4, dtype=np.float32)), progress=False)


def _merged_by_hand(native_q, adapted_q, query_labels, new_items, old_items, labels, done):
    """Top-1 and mAP of ranking the per-space cosine scores together, in numpy."""
    from regfree.metrics import retrieval_scores

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    rest = np.setdiff1d(np.arange(len(labels)), done)
    sims = np.hstack([unit(native_q) @ unit(new_items[done]).T,
                      unit(adapted_q) @ unit(old_items[rest]).T])
    ranked = np.concatenate([labels[done], labels[rest]])[np.argsort(-sims, axis=1)]
    return retrieval_scores(query_labels, ranked, ks=(1,),
                            num_relevant=(labels == query_labels[:, None]).sum(1))


def test_backfill_curve_with_query_adapter_merges_the_two_spaces_on_cosine():
    queries, query_labels, old, new, labels, logits = _update_scenario()
    lift = np.random.default_rng(1).normal(size=(8, 12)).astype(np.float32)  # v2's space: 12-d
    new_queries, new_items = queries @ lift, new @ lift
    back = _Linear(np.linalg.pinv(lift).astype(np.float32))  # 12-d queries into the 8-d space
    order = np.random.default_rng(2).permutation(400)
    curve = backfill_curve(new_queries, query_labels, old, new_items, labels, {"o": order},
                           fractions=(0.0, 0.5, 1.0), query_adapter=back, ks=(1,),
                           progress=False)
    adapted_queries = back.transform(new_queries)
    for step, done in enumerate((0, 200, 400)):
        expected = _merged_by_hand(new_queries, adapted_queries, query_labels, new_items, old,
                                   labels, order[:done])
        for metric in ("top1", "mAP"):
            assert curve.scores["o"][metric][step] == pytest.approx(expected[metric], abs=1e-6)
    # the ends: adapted queries on v1's gallery as stored, native queries on v2's
    stored = Gallery(8, device="cpu")
    stored.add(old, np.arange(400), version="v1")
    start = evaluate(adapted_queries, query_labels, stored, labels, ks=(1,))
    assert curve.scores["o"]["mAP"][0] == pytest.approx(start["mAP"], abs=1e-6)
    assert curve.scores["o"]["mAP"][-1] > curve.scores["o"]["mAP"][0] + 0.05


def test_backfill_curve_backfilled_items_start_re_embedded():
    queries, query_labels, old, new, labels, _ = _update_scenario()
    order = np.random.default_rng(3).permutation(400)
    plain = backfill_curve(queries, query_labels, old, new, labels, {"o": order},
                           fractions=(0.0, 0.5), ks=(1,), progress=False)
    early = backfill_curve(queries, query_labels, old, new, labels, {"o": order},
                           fractions=(0.0, 0.5), ks=(1,), backfilled=order[:200],
                           progress=False)
    np.testing.assert_allclose(early.scores["o"]["mAP"], plain.scores["o"]["mAP"][[1, 1]],
                               atol=1e-9)


def test_backfill_curve_refuses_bad_query_adapter_arguments():
    queries, query_labels, old, new, labels, _ = _update_scenario(n=40, n_queries=5)
    good = {"random": np.arange(40)}
    eye = _Linear(np.eye(8, dtype=np.float32))
    with pytest.raises(ValueError, match="pass adapter .* or query_adapter .*, not both"):
        backfill_curve(queries, query_labels, old, new, labels, good, adapter=eye,
                       query_adapter=eye, progress=False)
    with pytest.raises(ValueError, match="query_adapter needs similarity='cosine'"):
        backfill_curve(queries, query_labels, old, new, labels, good, query_adapter=eye,
                       similarity="l2", progress=False)
    with pytest.raises(ValueError, match=r"query_adapter must map 8-d embeddings to 8-d ones "
                                         r"here, got an adapter for 8-d -> 3-d"):
        backfill_curve(queries, query_labels, old, new, labels, good,
                       query_adapter=_Linear(np.eye(8, 3, dtype=np.float32)), progress=False)
    with pytest.raises(ValueError, match=r"backfilled must be ids of the gallery"):
        backfill_curve(queries, query_labels, old, new, labels, good, backfilled=[3, 99],
                       progress=False)
