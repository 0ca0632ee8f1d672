import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from regfree.compat import (
    EmbeddingAdapter,
    ProjectedModel,
    compatibility_report,
    embedder,
    fit_adapter,
)
from regfree.data.images import as_tensor_dataset
from regfree.metrics import flip_report
from regfree.models import MLP
from regfree.reporting.upgrade_page import upgrade_page
from regfree.retrieval import evaluate
from regfree.retrieval.cross_version import exact_gallery
from regfree.upgrade import GALLERY_TRANSFORMED, QUERY_ADAPTED, evaluate_upgrade, run_model


@pytest.fixture()
def toy():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 3
    y = np.arange(90) % 3
    x = (centers[y] + rng.normal(size=(90, 6))).astype(np.float32)
    torch.manual_seed(0)
    old, new = MLP(6, 3, hidden=16, embedding_dim=8), MLP(6, 3, hidden=16, embedding_dim=8)
    return x, y, old, new


def test_flips_match_direct_predictions_and_gate(toy):
    x, y, old, new = toy
    report = evaluate_upgrade(old, new, (x, y), max_nfr=0.0, progress=False)
    with torch.no_grad():
        expected = flip_report(y, old(torch.as_tensor(x)), new(torch.as_tensor(x)))
    assert report.flips.to_dict() == expected.to_dict()
    assert report.negative_flip_mask.shape == (len(y),)
    assert report.negative_flip_mask.mean() == expected.nfr
    assert report.retrieval is None and report.backfill is None
    assert report.passed == (expected.nfr == 0.0)
    assert evaluate_upgrade(old, new, (x, y), max_nfr=1.0, progress=False).passed


def test_retrieval_matches_compatibility_report_and_backfill_ends(toy):
    x, y, old, new = toy
    queries, gallery = (x[:30], y[:30]), (x[30:], y[30:])
    report = evaluate_upgrade(old, new, queries, gallery=gallery, progress=False,
                              backfill_fractions=(0.0, 0.5, 1.0))

    def features(model):
        return lambda inputs: model.forward_features(torch.as_tensor(inputs)).detach().numpy()

    direct = compatibility_report(x[:30], x[30:], {"v1": features(old), "v2": features(new)},
                                  y[:30], y[30:])
    np.testing.assert_allclose(report.retrieval.matrix("top1"), direct.matrix("top1"))
    np.testing.assert_allclose(report.retrieval.matrix("mAP"), direct.matrix("mAP"),
                               rtol=1e-6)
    curve = report.backfill
    assert set(curve.scores) == {"random", "margin"}
    for order in curve.scores:  # 0% backfilled is v2 on v1's gallery; 100% is v2 on v2's
        assert curve.scores[order]["top1"][0] == pytest.approx(direct.value("v2", "v1"))
        assert curve.scores[order]["top1"][-1] == pytest.approx(direct.value("v2", "v2"))
    payload = json.loads(report.to_json())
    assert payload["gate"] == {"max_nfr": None, "passed": True}
    assert payload["retrieval"]["versions"] == ["v1", "v2"]


def test_projected_v2_searches_old_gallery_in_projected_space(toy):
    x, y, old, _ = toy
    torch.manual_seed(1)
    new = ProjectedModel(MLP(6, 3, hidden=16, embedding_dim=12), projection=8)
    report = evaluate_upgrade(old, new, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder="compatible_embeddings",
                              new_native_embedder="native_embeddings", backfill_orders=(),
                              progress=False)
    assert report.retrieval.protocol["gallery"] == 60
    assert not np.isnan(report.retrieval.value("v2", "v1"))
    with pytest.raises(ValueError, match="new_embedder gives 12-d embeddings but v1's gallery is 8-d"):
        evaluate_upgrade(old, new, (x, y), gallery=(x, y), new_embedder="native_embeddings",
                         new_native_embedder=None, progress=False)


def test_run_model_reads_datasets_like_arrays(toy):
    x, y, old, _ = toy
    from_arrays = run_model(old, (x, y), embedder="forward_features", batch_size=7,
                            progress=False)
    from_dataset = run_model(old, as_tensor_dataset(x, y), embedder="forward_features",
                             batch_size=64, progress=False)
    np.testing.assert_allclose(from_arrays.logits, from_dataset.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_arrays.embeddings, from_dataset.embeddings, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(from_dataset.labels, y)


def test_one_embedder_type_serves_run_model_and_compatibility_report(toy):
    x, y, old, _ = toy
    by_name = run_model(old, (x, y), embedder="forward_features", progress=False)
    by_callable = run_model(old, (x, y), embedder=embedder(old), progress=False)  # numpy out
    np.testing.assert_allclose(by_callable.embeddings, by_name.embeddings, rtol=1e-5, atol=1e-6)


def test_upgrade_page_takes_its_parts():
    flips = flip_report([0, 1, 1], [0, 1, 1], [0, 0, 1])
    page = upgrade_page(flips, max_nfr=0.5, passed=True)
    assert "<b>PASS</b>" in page and "Retrieval across versions" not in page
    with pytest.raises(ValueError, match="passed must be given with max_nfr"):
        upgrade_page(flips, max_nfr=0.5)


def test_bad_arguments_are_named(toy):
    x, y, old, new = toy
    with pytest.raises(ValueError, match=r"max_nfr must be a number in \[0, 1\]"):
        evaluate_upgrade(old, new, (x, y), max_nfr=2.0, progress=False)
    with pytest.raises(ValueError, match="old must be a torch.nn.Module"):
        evaluate_upgrade("v1", new, (x, y), progress=False)
    with pytest.raises(ValueError, match=r"old_embedder='nope': MLP has no method 'nope'; pass "
                                         r"old_embedder= .* or a callable on an input batch"):
        evaluate_upgrade(old, new, (x, y), gallery=(x, y), old_embedder="nope", progress=False)


def test_upgrade_page_has_all_sections(toy, tmp_path):
    x, y, old, new = toy
    report = evaluate_upgrade(old, new, (x[:30], y[:30]), gallery=(x[30:], y[30:]), max_nfr=0.5,
                              backfill_fractions=(0.0, 1.0), progress=False)
    path = tmp_path / "upgrade.html"
    report.to_html(str(path))
    page = path.read_text()
    for heading in ("Gate", "Negative flips", "Retrieval across versions", "Partial backfill"):
        assert f"<h2>{heading}" in page
    assert page.count("data:image/png;base64,") == 3


def test_top_level_api_is_lazy_so_metrics_and_report_stay_torch_free():
    code = ("import sys, regfree, regfree.metrics, regfree.cli; regfree.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from regfree import evaluate_upgrade; assert 'torch' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _rotation_adapters(rng, dim):
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    zero = np.zeros(dim, np.float32)
    forward = EmbeddingAdapter("orthogonal", {"weight": rotation, "bias": zero}, normalize=False)
    back = EmbeddingAdapter("orthogonal", {"weight": rotation.T.copy(), "bias": zero},
                            normalize=False)
    return rotation, forward, back


def test_exact_rotation_adapter_recovers_v2_on_v2(toy):
    x, y, old, _ = toy
    rotation, adapter, query_adapter = _rotation_adapters(np.random.default_rng(3), 8)

    def rotated(inputs):  # v2 = v1 rotated: the same retrieval, another space
        return old.forward_features(torch.as_tensor(inputs)) @ torch.as_tensor(rotation)

    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=rotated, adapter=adapter, query_adapter=query_adapter,
                              backfill_fractions=(0.0, 0.5, 1.0), progress=False)
    c = report.retrieval
    assert c.value("v2", "v1", "mAP") < c.value("v1", "v1", "mAP") - 0.1  # raw: another space
    for metric in ("top1", "top5", "mAP"):
        for entry in (QUERY_ADAPTED, GALLERY_TRANSFORMED):
            assert report.adapted[entry][metric] == pytest.approx(c.value("v2", "v2", metric),
                                                                  abs=1e-6), (entry, metric)
    curve = report.backfill
    assert set(curve.scores) == {"random", "margin", "random + adapter", "margin + adapter",
                                 "random + query adapter", "margin + query adapter"}
    for order in ("random", "margin"):
        raw, adapted = curve.scores[order]["mAP"], curve.scores[order + " + adapter"]["mAP"]
        assert raw[0] == pytest.approx(c.value("v2", "v1", "mAP"))
        # the transformed items are v2's own embeddings here: flat at v2/v2 all the way
        np.testing.assert_allclose(adapted, c.value("v2", "v2", "mAP"), atol=1e-6)
        # and the adapted queries meet v1's items exactly as v2's queries meet v2's
        np.testing.assert_allclose(curve.scores[order + " + query adapter"]["mAP"],
                                   c.value("v2", "v2", "mAP"), atol=1e-6)
    assert report.to_dict()["adapter"]["pairs"] is None


def test_fitted_adapters_report_the_share_of_the_full_backfill_gain(toy):
    x, y, old, _ = toy

    def inputs(batch):  # a 6-d v2 that separates the classes better than v1's 8-d features
        return torch.as_tensor(batch)

    report = evaluate_upgrade(old, old, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              new_embedder=inputs, adapter="fit", query_adapter="fit",
                              adapter_pairs=0.25, backfill_fractions=(0.0, 0.5, 1.0),
                              progress=False)
    c = report.retrieval
    old_old, new_new = c.value("v1", "v1", "mAP"), c.value("v2", "v2", "mAP")
    assert new_new > old_old + 0.05
    assert np.isnan(c.value("v2", "v1"))  # 6-d queries cannot search the 8-d index raw
    assert report.adapter_pairs == 15  # a quarter of the 60 gallery items
    # the transformed gallery, rebuilt by hand from the first 15 items' pairs; those 15 items
    # are re-embedded already, so they stay as v2 embeds them
    v1_items = old.forward_features(torch.as_tensor(x[30:])).detach().numpy()
    transformed = fit_adapter(v1_items[:15], x[30:45], progress=False).transform(v1_items)
    transformed[:15] = x[30:45]
    expected = evaluate(x[:30], y[:30], exact_gallery(transformed, "v1", "cosine"), y[30:])
    assert report.adapted[GALLERY_TRANSFORMED]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    for entry in (QUERY_ADAPTED, GALLERY_TRANSFORMED):
        share = (report.adapted[entry]["mAP"] - old_old) / (new_new - old_old)
        assert report.gain_recovered(entry, "mAP") == pytest.approx(share)
        payload = json.loads(report.to_json())["adapter"]["entries"][entry]
        assert payload["gain_recovered"]["mAP"] == pytest.approx(share)
    top1_share = report.gain_recovered(GALLERY_TRANSFORMED)
    assert f"{top1_share:.0%} of the full-backfill gain" in report.summary()
    # only adapted curves: a raw mixed gallery cannot hold 6-d and 8-d vectors
    curve = report.backfill
    assert set(curve.scores) == {"random + adapter", "margin + adapter",
                                 "random + query adapter", "margin + query adapter"}
    for order, scores in curve.scores.items():
        if order.endswith(" + adapter"):
            assert scores["mAP"][0] == pytest.approx(expected["mAP"], abs=1e-6)
        assert scores["mAP"][-1] == pytest.approx(new_new, abs=1e-6)


def test_upgrade_page_says_the_share_the_adapter_recovers(toy, tmp_path):
    x, y, old, new = toy
    report = evaluate_upgrade(old, new, (x[:30], y[:30]), gallery=(x[30:], y[30:]),
                              adapter="fit", adapter_pairs=0.5, backfill_fractions=(0.0, 1.0),
                              progress=False)
    page = upgrade_page(report.flips, retrieval=report.retrieval, backfill=report.backfill,
                        adapted=report.adapted)
    assert "<td>v2/v1 transformed</td>" in page
    share = report.gain_recovered(GALLERY_TRANSFORMED)
    said = "n/a" if np.isnan(share) else f"{100 * share:.0f}%"
    assert f"<b>v2/v1 transformed</b> recovers {said} in top-1" in page
    assert "<td>random + adapter</td>" in page and "<td>random</td>" in page


def test_adapter_arguments_are_refused_with_their_name(toy):
    x, y, old, new = toy
    gallery = (x[30:], y[30:])
    with pytest.raises(ValueError, match="adapter needs gallery="):
        evaluate_upgrade(old, new, (x, y), adapter="fit", progress=False)
    with pytest.raises(ValueError, match="query_adapter must be 'fit', an EmbeddingAdapter"):
        evaluate_upgrade(old, new, (x, y), gallery=gallery, query_adapter="fitt", progress=False)
    with pytest.raises(TypeError, match="adapter must have a transform"):
        evaluate_upgrade(old, new, (x, y), gallery=gallery, adapter=np.eye(8), progress=False)
    with pytest.raises(ValueError, match=r"adapter_pairs must be a share in \(0, 1\]"):
        evaluate_upgrade(old, new, (x, y), gallery=gallery, adapter="fit", adapter_pairs=0.0,
                         progress=False)
    with pytest.raises(ValueError, match=r"adapter='fit' on the first 1 gallery items failed "
                                         r"\(kind 'affine' needs at least 2 pairs"):
        evaluate_upgrade(old, new, (x, y), gallery=gallery, adapter="fit", adapter_pairs=0.01,
                         progress=False)
    _, wrong, _ = _rotation_adapters(np.random.default_rng(0), 5)
    with pytest.raises(ValueError, match="adapter must map 8-d embeddings to 8-d ones here, "
                                         "got an adapter for 5-d -> 5-d"):
        evaluate_upgrade(old, new, (x, y), gallery=gallery, adapter=wrong, progress=False)
    report = evaluate_upgrade(old, new, (x[:30], y[:30]), gallery=gallery, backfill_orders=(),
                              progress=False)
    with pytest.raises(ValueError, match="no adapter was evaluated"):
        report.gain_recovered(GALLERY_TRANSFORMED)
