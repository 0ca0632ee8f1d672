"""Post-hoc embedding adapters: exact recoveries, round trips and refusals."""

import numpy as np
import pytest
import torch

from regfree.compat import ADAPTER_KINDS, EmbeddingAdapter, fit_adapter


def rotation(dim, seed):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))[0]


def pairs(n=120, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim))


def test_procrustes_recovers_an_exact_rotation():
    source = pairs()
    true = rotation(6, 1)
    adapter = fit_adapter(source, source @ true, kind="orthogonal", normalize=False)
    np.testing.assert_allclose(adapter.params["weight"], true, atol=1e-5)
    np.testing.assert_allclose(adapter.transform(source), source @ true, atol=1e-4)


def test_procrustes_with_different_widths_recovers_a_rotation_plus_padding():
    source = pairs(dim=4)
    true = rotation(6, 2)[:4]  # 4 -> 6: a rotation of the zero-padded source
    target = source @ true
    adapter = fit_adapter(source, target, kind="orthogonal", normalize=False)
    assert adapter.params["weight"].shape == (4, 6)
    np.testing.assert_allclose(adapter.transform(source), target, atol=1e-4)
    # and back: 6 -> 4 is the transpose, with orthonormal columns
    back = fit_adapter(target, source, kind="orthogonal", normalize=False)
    np.testing.assert_allclose(back.params["weight"].T @ back.params["weight"], np.eye(4),
                               atol=1e-5)
    np.testing.assert_allclose(back.transform(target), source, atol=1e-4)


def test_affine_recovers_a_linear_map_with_bias_and_rank_limits_it():
    source = pairs(n=300, dim=5)
    weight = np.random.default_rng(3).normal(size=(5, 3))
    target = source @ weight + np.array([1.0, -2.0, 0.5])
    adapter = fit_adapter(source, target, kind="affine", normalize=False, ridge=0.0)
    np.testing.assert_allclose(adapter.transform(source), target, atol=1e-3)
    low = fit_adapter(source, target, kind="affine", normalize=False, rank=1)
    assert np.linalg.matrix_rank(low.params["weight"], tol=1e-4) == 1


def test_mlp_fits_a_nonlinear_map_better_than_its_affine_start():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(400, 6))
    target = np.tanh(2 * source @ rng.normal(size=(6, 6)))

    def cosine(adapter):
        out, goal = adapter.transform(source), target / np.linalg.norm(target, axis=1,
                                                                          keepdims=True)
        return float((out * goal).sum(1).mean())

    affine = fit_adapter(source, target, kind="affine")
    mlp = fit_adapter(source, target, kind="mlp", epochs=60, lr=1e-2, seed=0, progress=False)
    assert cosine(mlp) > cosine(affine) + 0.02
    again = fit_adapter(source, target, kind="mlp", epochs=60, lr=1e-2, seed=0, progress=False)
    for name, value in mlp.params.items():
        np.testing.assert_array_equal(value, again.params[name])  # same seed, same process


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_every_kind_round_trips_through_save_and_load(tmp_path, kind):
    source, target = pairs(dim=5), pairs(dim=3, seed=9)
    adapter = fit_adapter(source, target, kind=kind, epochs=3, progress=False)
    adapter.save(tmp_path / "a.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]
    loaded = EmbeddingAdapter.load(tmp_path / "a.npz")
    assert loaded.to_dict() == adapter.to_dict()
    assert loaded.to_dict()["kind"] == kind and loaded.source_dim == 5
    np.testing.assert_array_equal(loaded.transform(source), adapter.transform(source))


def test_transform_on_tensors_is_differentiable_and_keeps_dtype():
    source, target = pairs(dim=4), pairs(dim=4, seed=5)
    adapter = fit_adapter(source, target, kind="mlp", epochs=2, progress=False)
    x = torch.tensor(source[:7], dtype=torch.float64, requires_grad=True)
    out = adapter.transform(x)
    assert out.dtype == torch.float64 and out.shape == (7, 4)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    np.testing.assert_allclose(out.detach().numpy(), adapter.transform(source[:7]), atol=1e-5)
    assert adapter.transform(source).dtype == np.float32


def test_bad_inputs_name_the_argument(tmp_path):
    good = pairs(dim=3)
    with pytest.raises(ValueError, match="source and target must pair the same items: got 120 and 10"):
        fit_adapter(good, good[:10])
    nan = good.copy()
    nan[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match="target has NaN or inf in 2 rows"):
        fit_adapter(good, nan)
    with pytest.raises(ValueError, match="source must be a non-empty 2-D array"):
        fit_adapter(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="kind 'affine' needs at least 4 pairs, got 3"):
        fit_adapter(good[:3], good[:3], kind="affine", ridge=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        fit_adapter(good, good, kind="procrustes")
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        fit_adapter(good, good, kind="affine", ridge=-1)
    adapter = fit_adapter(good, good)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        adapter.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        adapter.transform(nan)
    (tmp_path / "junk.npz").write_bytes(b"not an adapter")
    with pytest.raises(ValueError, match="junk.npz' is not a saved EmbeddingAdapter"):
        EmbeddingAdapter.load(tmp_path / "junk.npz")


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_slerp_blend_spans_the_anchor_to_plain_procrustes():
    new, old = pairs(dim=6), pairs(dim=4, seed=11)
    plain = fit_adapter(new, old, kind="orthogonal")
    end = fit_adapter(new, old, kind="orthogonal", blend=1.0)
    np.testing.assert_allclose(end.transform(new, anchor=old), plain.transform(new), atol=1e-5)
    np.testing.assert_allclose(end.transform(new), plain.transform(new), atol=1e-6)
    start = fit_adapter(new, old, kind="orthogonal", blend=0.0)
    np.testing.assert_allclose(start.transform(new, anchor=old), unit(old), atol=1e-5)
    half = fit_adapter(new, old, kind="orthogonal", blend=0.5)
    out, mapped = half.transform(new, anchor=old), plain.transform(new)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the spherical midpoint: the same angle to the anchor and to the mapped query, half the arc
    to_anchor, to_mapped = (out * unit(old)).sum(1), (out * mapped).sum(1)
    np.testing.assert_allclose(to_anchor, to_mapped, atol=1e-5)
    whole = np.arccos(np.clip((unit(old) * mapped).sum(1), -1, 1))
    np.testing.assert_allclose(np.arccos(np.clip(to_anchor, -1, 1)), whole / 2, atol=1e-3)
    tensor = half.transform(torch.tensor(new, requires_grad=True), anchor=torch.tensor(old))
    tensor.sum().backward()
    np.testing.assert_allclose(tensor.detach().numpy(), out, atol=1e-5)


def test_slerp_adapter_round_trips_with_its_blend(tmp_path):
    new, old = pairs(dim=5), pairs(dim=3, seed=9)
    adapter = fit_adapter(new, old, kind="orthogonal", blend=0.3)
    adapter.save(tmp_path / "slerp.npz")
    loaded = EmbeddingAdapter.load(tmp_path / "slerp.npz")
    assert loaded.to_dict() == adapter.to_dict() and loaded.blend == 0.3
    np.testing.assert_array_equal(loaded.transform(new, anchor=old),
                                  adapter.transform(new, anchor=old))


def test_slerp_bad_inputs_name_the_argument():
    new, old = pairs(dim=5), pairs(dim=3, seed=9)
    with pytest.raises(ValueError, match=r"blend must be a finite number in \[0, 1\], got 1.5"):
        fit_adapter(new, old, kind="orthogonal", blend=1.5)
    with pytest.raises(ValueError, match="blend must be a finite number >= 0, got -0.1"):
        fit_adapter(new, old, kind="orthogonal", blend=-0.1)
    with pytest.raises(ValueError, match="blend .SLERP. applies to kind='orthogonal' with "
                                         "normalize=True, got kind='affine'"):
        fit_adapter(new, old, kind="affine", blend=0.5)
    with pytest.raises(ValueError, match="normalize=True, got kind='orthogonal', normalize=False"):
        fit_adapter(new, old, kind="orthogonal", blend=0.5, normalize=False)
    slerp = fit_adapter(new, old, kind="orthogonal", blend=0.5)
    with pytest.raises(ValueError, match="anchor is required: this adapter blends"):
        slerp.transform(new)
    with pytest.raises(ValueError, match=r"anchor must have shape \(120, 3\)"):
        slerp.transform(new, anchor=old[:10])
    bad = old.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="anchor contains NaN or inf"):
        slerp.transform(new, anchor=bad)
    with pytest.raises(ValueError, match="anchor is only for a blended .SLERP. adapter"):
        fit_adapter(new, old, kind="orthogonal").transform(new, anchor=old)
    with pytest.raises(ValueError, match=r"settings\['blend'\] .SLERP. needs kind 'orthogonal'"):
        EmbeddingAdapter(kind="affine", params=dict(slerp.params), settings={"blend": 0.5})


def _blurred_world(n, seed):
    """Source embeddings that separate four classes; a target space that barely tells classes 2
    and 3 apart (their centres 0.8 apart under noise of 0.5)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    source = np.eye(6)[y] * 3 + rng.normal(scale=0.3, size=(n, 6))
    centres = np.eye(6)[[0, 1, 2, 2]] * 3
    centres[3, 3] = 0.8
    return source, centres[y] + rng.normal(scale=0.5, size=(n, 6)), y


def _top1(queries, query_labels, gallery, gallery_labels):
    scores = unit(queries) @ unit(gallery).T
    return float((gallery_labels[scores.argmax(1)] == query_labels).mean())


def test_labels_train_the_mlp_to_search_the_target_gallery_better_than_it_searches_itself():
    source, target, labels = _blurred_world(400, 0)
    query_source, query_target, query_labels = _blurred_world(200, 1)
    _, gallery, gallery_labels = _blurred_world(400, 2)
    copy = fit_adapter(source, target, kind="mlp", seed=0, progress=False)
    neighbours = fit_adapter(source, target, kind="mlp", labels=labels, seed=0, progress=False)
    assert neighbours.settings["objective"] == "neighbours"
    own = _top1(query_target, query_labels, gallery, gallery_labels)
    copied = _top1(copy.transform(query_source), query_labels, gallery, gallery_labels)
    found = _top1(neighbours.transform(query_source), query_labels, gallery, gallery_labels)
    # copying the target model inherits its blur between classes 2 and 3; asking for
    # same-class neighbours does not
    assert found > copied + 0.05
    assert found > own + 0.1


def test_labels_temperature_reaches_the_neighbourhood_objective(monkeypatch):
    import regfree.compat.adapter_fit as adapter_fit

    made = []

    class Spy(adapter_fit.CrossModelNCALoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.temperature)

    monkeypatch.setattr(adapter_fit, "CrossModelNCALoss", Spy)
    source, target, labels = _blurred_world(60, 0)
    for temperature, expected in ((0.03, 0.03), (None, adapter_fit._LABELLED_TEMPERATURE)):
        adapter = fit_adapter(source, target, kind="mlp", labels=labels, temperature=temperature,
                              epochs=2, seed=0, progress=False)
        assert made[-1] == expected
        assert adapter.settings["temperature"] == expected
    assert "temperature" not in fit_adapter(source, target, kind="mlp", epochs=2,
                                            progress=False).settings


def test_labels_anchor_weight_keeps_mapped_rows_near_the_target_rows():
    source, target, labels = _blurred_world(200, 0)
    closeness = {}
    for anchor in (0.0, 10.0):
        adapter = fit_adapter(source, target, kind="mlp", labels=labels, anchor_weight=anchor,
                              epochs=30, seed=0, progress=False)
        assert adapter.settings["anchor_weight"] == anchor
        closeness[anchor] = float((unit(adapter.transform(source)) * unit(target)).sum(1).mean())
    # the neighbourhood objective alone is free to move rows away from their own target row
    assert closeness[10.0] > closeness[0.0] + 0.05, closeness


def test_labels_bad_inputs_name_the_argument():
    source, target, labels = _blurred_world(40, 0)
    with pytest.raises(ValueError, match="labels .* kind='mlp'"):
        fit_adapter(source, target, kind="affine", labels=labels)
    with pytest.raises(ValueError, match="normalize=False"):
        fit_adapter(source, target, kind="mlp", labels=labels, normalize=False)
    with pytest.raises(ValueError, match=r"labels must be \(40,\) integer class ids"):
        fit_adapter(source, target, kind="mlp", labels=labels[:5])
    with pytest.raises(ValueError, match="labels must be"):
        fit_adapter(source, target, kind="mlp", labels=labels.astype(float))
    with pytest.raises(ValueError, match="temperature applies to the neighbourhood objective"):
        fit_adapter(source, target, kind="mlp", temperature=0.1)
    with pytest.raises(ValueError, match="anchor_weight applies to the neighbourhood objective"):
        fit_adapter(source, target, kind="mlp", anchor_weight=1.0)
    with pytest.raises(ValueError, match="anchor_weight must be a finite number >= 0"):
        fit_adapter(source, target, kind="mlp", labels=labels, anchor_weight=-1)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        fit_adapter(source, target, kind="mlp", labels=labels, temperature=0)
