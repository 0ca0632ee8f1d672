"""evaluate_upgrade's post-hoc adapters: the kind 'fit' fits, SLERP query adapters, and the
one meaning of the transformed gallery (paired items stay as v2 embeds them)."""

import numpy as np
import pytest
import torch

from regfree.compat import fit_adapter
from regfree.models import MLP
from regfree.retrieval import evaluate
from regfree.retrieval.cross_version import exact_gallery
from regfree.upgrade import GALLERY_TRANSFORMED, QUERY_ADAPTED, evaluate_upgrade


@pytest.fixture()
def setup():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 6)) * 3
    y = np.arange(90) % 3
    x = (centers[y] + rng.normal(size=(90, 6))).astype(np.float32)
    torch.manual_seed(0)
    old = MLP(6, 3, hidden=16, embedding_dim=8)
    v1 = {part: old.forward_features(torch.as_tensor(x[rows])).detach().numpy()
          for part, rows in (("q", slice(0, 30)), ("g", slice(30, 90)))}
    return x, y, old, v1


def _identity(batch):  # v2's native embedding: the 6-d input itself
    return torch.as_tensor(batch)


def _scores(queries, y, gallery, gallery_labels):
    return evaluate(queries, y, exact_gallery(gallery, "v1", "cosine"), gallery_labels)


def test_adapter_kind_picks_what_fit_fits(setup):
    x, y, old, v1 = setup
    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=_identity, adapter="fit", query_adapter="fit",
                              adapter_pairs=0.5, adapter_kind="orthogonal", backfill_orders=(),
                              progress=False)
    back = fit_adapter(x[30:60], v1["g"][:30], kind="orthogonal", progress=False)
    expected = _scores(back.transform(x[:30]), y[:30], v1["g"], y[30:])
    assert report.adapted[QUERY_ADAPTED]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    default = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                               new_embedder=_identity, query_adapter="fit", adapter_pairs=0.5,
                               backfill_orders=(), progress=False)
    affine = fit_adapter(x[30:60], v1["g"][:30], progress=False)
    by_default = _scores(affine.transform(x[:30]), y[:30], v1["g"], y[30:])
    assert default.adapted[QUERY_ADAPTED]["mAP"] == pytest.approx(by_default["mAP"], abs=1e-6)


def test_transformed_gallery_keeps_the_paired_items_native(setup):
    x, y, old, v1 = setup
    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=_identity, adapter="fit", adapter_pairs=0.2,
                              backfill_fractions=(0.0, 1.0), backfill_orders=("random",),
                              progress=False)
    assert report.adapter_pairs == 12
    forward = fit_adapter(v1["g"][:12], x[30:42], progress=False)
    stored = forward.transform(v1["g"])
    stored[:12] = x[30:42]  # re-embedded to fit the adapter: stored as v2 embeds them
    expected = _scores(x[:30], y[:30], stored, y[30:])
    assert report.adapted[GALLERY_TRANSFORMED]["mAP"] == pytest.approx(expected["mAP"],
                                                                        abs=1e-6)
    # the adapter curve starts on that same gallery
    assert report.backfill.scores["random + adapter"]["mAP"][0] == pytest.approx(
        expected["mAP"], abs=1e-6)
    # a fitted adapter passed in knows no re-embedded items: every item goes through it
    given = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                             new_embedder=_identity, adapter=forward, backfill_orders=(),
                             progress=False)
    every = _scores(x[:30], y[:30], forward.transform(v1["g"]), y[30:])
    assert given.adapted[GALLERY_TRANSFORMED]["mAP"] == pytest.approx(every["mAP"], abs=1e-6)
    assert given.adapter_pairs is None


def test_slerp_query_adapter_blends_with_v1s_query(setup):
    x, y, old, v1 = setup
    slerp = fit_adapter(x[30:60], v1["g"][:30], kind="orthogonal", blend=0.5)
    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=_identity, query_adapter=slerp,
                              backfill_fractions=(0.0, 1.0), backfill_orders=("random",),
                              progress=False)
    queries = slerp.transform(x[:30], anchor=v1["q"])
    expected = _scores(queries, y[:30], v1["g"], y[30:])
    assert report.adapted[QUERY_ADAPTED]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    curve = report.backfill.scores["random + query adapter"]["mAP"]
    assert curve[0] == pytest.approx(expected["mAP"], abs=1e-6)
    with pytest.raises(ValueError, match=r"adapter is a SLERP adapter \(blend=0.5\).*pass it as "
                                         "query_adapter"):
        evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                         new_embedder=_identity, adapter=fit_adapter(
                             v1["g"], x[30:], kind="orthogonal", blend=0.5), progress=False)


def test_adapter_kind_is_checked_before_any_model_runs(setup):
    x, y, old, _ = setup
    gallery = (x[30:], y[30:])
    with pytest.raises(ValueError, match=r"adapter_kind must be one of \('orthogonal', "
                                         r"'affine', 'mlp'\).*got 'ridge'"):
        evaluate_upgrade(old, old, (x, y), gallery=gallery, adapter="fit",
                         adapter_kind="ridge", progress=False)
    with pytest.raises(ValueError, match="adapter_kind chooses the kind that adapter='fit'"):
        evaluate_upgrade(old, old, (x, y), gallery=gallery, adapter_kind="mlp", progress=False)


def test_page_explains_the_query_adapter_curve(setup, tmp_path):
    x, y, old, _ = setup
    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=_identity, query_adapter="fit", adapter_pairs=0.5,
                              backfill_fractions=(0.0, 1.0), backfill_orders=("random",),
                              progress=False)
    report.to_html(str(tmp_path / "page.html"))
    page = (tmp_path / "page.html").read_text()
    assert "<td>random + query adapter</td>" in page
    assert "Orders marked <i>+ query adapter</i> leave the items not yet re-embedded" in page
