"""`regfree demo`: its knobs, its closing sentences (they follow the run's numbers) and one tiny
end-to-end run."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from regfree import cli
from regfree.demo import DemoConfig
from regfree.demo.report import POSTHOC_VARIANTS, DemoRow, changed, conclusion


def _rows(**changes):
    """A run where v2 improves, PC cuts the flips significantly and only BCT is compatible;
    ``changes`` maps a variant to the fields it overrides."""
    plain = DemoRow("plain", error=0.10, nfr=0.040, nfr_ci=(0.03, 0.05), mcnemar_p=1e-4,
                    nfr_vs_plain_p=None, top1_new_old=0.08, top1_new_new=0.92,
                    top1_old_old=0.80, old_error=0.20)
    rows = {"plain": plain,
            "pc": replace(plain, variant="pc", nfr=0.020, nfr_vs_plain_p=0.001),
            "bct+pc": replace(plain, variant="bct+pc", nfr=0.022, nfr_vs_plain_p=0.002,
                              top1_new_old=0.85)}
    return [replace(rows[v], **changes.get(v, {})) for v in ("plain", "pc", "bct+pc")]


def test_conclusion_of_a_good_run_says_cut_significant_and_only_bct_compatible():
    text = conclusion(_rows())
    assert "Plain v2 lowers the error from 20.0% to 10.0% and breaks 4.0%" in text
    assert "brings that to 2.0% (a significant cut, McNemar p = 0.001 against plain)" in text
    assert "plain v2 reaches 8.0% top-1 and BCT + PC v2 85.0%, against 80.0% for v1" in text
    assert "only the backward-compatible v2 meets the compatibility criterion" in text


def test_conclusion_of_a_tiny_run_does_not_claim_what_its_numbers_deny():
    # the run that once read "BCT searches v1's gallery at 14%" while v1 reached 27%
    text = conclusion(_rows(plain={"error": 0.875, "old_error": 0.817, "nfr": 0.158},
                            pc={"nfr": 0.150, "nfr_vs_plain_p": 1.0},
                            **{"bct+pc": {"top1_new_old": 0.14, "top1_old_old": 0.27}},
                            ))
    assert "Plain v2 raises the error from 81.7% to 87.5%" in text
    assert "a cut that is not significant, McNemar p = 1 against plain" in text
    assert "neither meets the compatibility criterion" in text
    assert "searches it" not in text and "only the backward" not in text


@pytest.mark.parametrize(("pc_nfr", "phrase"), [(0.040, "breaks no fewer of them (4.0%"),
                                                 (0.050, "breaks more of them (5.0%")])
def test_conclusion_when_pc_does_not_lower_the_flips(pc_nfr, phrase):
    text = conclusion(_rows(pc={"nfr": pc_nfr, "nfr_vs_plain_p": 0.3}))
    assert phrase in text and "brings that to" not in text


def test_conclusion_names_which_v2_meets_the_criterion():
    both = conclusion(_rows(plain={"top1_new_old": 0.81}))
    assert "both meet the compatibility criterion" in both
    plain_only = conclusion(_rows(plain={"top1_new_old": 0.81}, **{"bct+pc": {"top1_new_old": 0.5}}))
    assert "plain v2 meets the compatibility criterion (v2/v1 above v1/v1) and the " \
           "backward-compatible v2 does not" in plain_only
    equal = conclusion(_rows(**{"bct+pc": {"top1_new_old": 0.80}}))  # equal is not above
    assert "neither meets" in equal


def _posthoc_rows(gallery=0.83, query=0.84, blend=None):
    """The three rows the known-good run of ``_rows`` gains: both adapters above v1/v1 (80%),
    a blend that halves plain's 4% of flips at 10.4% error; ``blend`` overrides its fields."""
    plain = _rows()[0]
    retrieval = replace(plain, error=None, nfr=None, nfr_ci=None, mcnemar_p=None,
                        top1_new_new=None)
    return [replace(retrieval, variant="adapter: gallery", top1_new_old=gallery),
            replace(retrieval, variant="adapter: query", top1_new_old=query),
            replace(plain, **{"variant": "blend", "error": 0.104, "nfr": 0.020,
                              "nfr_ci": (0.015, 0.026), "nfr_vs_plain_p": 0.003,
                              "top1_new_old": None, "top1_new_new": None, **(blend or {})})]


def test_conclusion_adds_the_post_hoc_sentences_after_the_trained_ones():
    text = conclusion(_rows() + _posthoc_rows(), DemoConfig(adapter_pairs=0.05))
    assert text.startswith(conclusion(_rows()))
    assert ("adapters fit on 5% of the gallery (re-embedded by v2) let plain v2 search v1's "
            "gallery at 84.0% top-1 with its queries mapped into v1's space, and at 83.0% with "
            "v1's gallery mapped into v2's space (the paired 5% as v2 embeds them), against "
            "80.0% for v1 itself: both meet the compatibility criterion with no backfill beyond the paired "
            "items") in text
    assert "the error allowed to rise by up to 0.5 points), raises the error from 10.0% to " \
           "10.4% and brings the negative flips from 4.0% to 2.0% (a significant cut, " \
           "McNemar p = 0.003 against plain); v1 keeps running beside v2 to serve it." in text


@pytest.mark.parametrize(("gallery", "query", "verdict"), [
    (0.79, 0.81, "the adapted query meets the compatibility criterion and the transformed "
                 "gallery does not"),
    (0.81, 0.80, "the transformed gallery meets the compatibility criterion and the adapted "
                 "query does not"),  # equal to v1/v1 is not above it
    (0.30, 0.20, "neither meets the compatibility criterion, so plain v2 should not search "
                 "v1's gallery through them before a backfill")])
def test_conclusion_says_which_adapter_meets_the_criterion(gallery, query, verdict):
    text = conclusion(_rows() + _posthoc_rows(gallery, query))
    assert verdict in text and "both meet the compatibility criterion" not in text


@pytest.mark.parametrize(("blend", "phrase"), [
    ({"nfr_vs_plain_p": 0.2}, "to 2.0% (a cut that is not significant, McNemar p = 0.2"),
    ({"nfr": 0.040, "nfr_vs_plain_p": 1.0}, "leaves the negative flips at 4.0% (McNemar p = 1"),
    ({"nfr": 0.050, "nfr_vs_plain_p": 0.4}, "raises the negative flips from 4.0% to 5.0% ("),
    ({"error": 0.09}, "lowers the error from 10.0% to 9.0%")])
def test_conclusion_of_the_blend_follows_its_numbers(blend, phrase):
    text = conclusion(_rows() + _posthoc_rows(blend=blend))
    assert phrase in text and "v1 keeps running beside v2" in text


def test_changed_says_which_way_at_the_printed_precision():
    assert changed("error", 0.2, 0.1) == "lowers the error from 20.0% to 10.0%"
    assert changed("error", 0.1, 0.2) == "raises the error from 10.0% to 20.0%"
    assert changed("error", 0.1, 0.10004) == "leaves the error at 10.0%"


def test_demo_rejects_bad_knobs_in_one_line(tmp_path, capsys):
    assert cli.main(["demo", "--samples", "5", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == "regfree demo: error: samples must be at least 100, got 5\n"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--adapter-pairs", "0", "adapter_pairs must be in (0, 1], got 0.0"),
    ("--blend-max-error-increase", "-0.1", "blend_max_error_increase must be in [0, 1], got -0.1")])
def test_demo_rejects_bad_post_hoc_knobs(tmp_path, capsys, flag, value, message):
    assert cli.main(["demo", flag, value, "--output", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"regfree demo: error: {message}\n"


def test_demo_checks_its_knobs_before_importing_torch(tmp_path):
    code = ("import sys; from regfree import cli; "
            f"code = cli.main(['demo', '--old-fraction', '0', '--output', {str(tmp_path)!r}]); "
            "assert code == 2, code; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "regfree demo: error: old_fraction must be in (0, 1], got 0.0\n"


def test_demo_cli_runs_end_to_end_on_tiny_settings(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "regfree.cli", "demo", "--samples", "300", "--old-epochs", "1",
         "--new-epochs", "1", "--new-width", "8", "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [row["variant"] for row in summary["rows"]] == ["plain", "pc", "bct+pc",
                                                          *POSTHOC_VARIANTS]
    by = {row["variant"]: row for row in summary["rows"]}
    for name in ("plain", "pc", "bct+pc", "blend"):
        row = by[name]
        assert 0.0 <= row["nfr_ci"][0] <= row["nfr"] <= row["nfr_ci"][1] <= 1.0
    for name in ("adapter: gallery", "adapter: query"):  # retrieval only
        assert by[name]["nfr"] is None and by[name]["top1_new_new"] is None
        assert 0.0 <= by[name]["top1_new_old"] <= 1.0
    assert by["blend"]["top1_new_old"] is None
    # 240 training samples: the adapters were fit on 10% of them, the blend chosen twice
    assert summary["posthoc"]["adapter_pairs"] == 24
    assert len(summary["posthoc"]["blends"]) == 2
    assert {p.name for p in out.iterdir()} == {
        "summary.json", "demo.png", "report_plain.html", "report_pc.html", "report_bct_pc.html"}
    # the printed sentences are the ones this run's numbers give (rich wraps the lines)
    rows = [DemoRow(**{**row, "nfr_ci": row["nfr_ci"] and tuple(row["nfr_ci"])})
            for row in summary["rows"]]
    config = DemoConfig(**summary["config"])
    assert " ".join(conclusion(rows, config).split()) in " ".join(result.stdout.split())


def test_cosine_convnet1d_is_the_seeded_convnet_with_a_cosine_head():
    import torch

    from regfree.compat import CosineClassifier
    from regfree.models import ConvNet1D, cosine_convnet1d

    model = cosine_convnet1d(8, 16, seed=3, scale=10.0, return_embeddings=True)
    torch.manual_seed(3)  # what the demo and experiments wrote by hand before
    by_hand = ConvNet1D(width=8, embedding_dim=16, return_embeddings=True)
    by_hand.head = CosineClassifier(16, 10, scale=10.0)
    assert model.head.scale == 10.0
    for (name, a), (_, b) in zip(model.state_dict().items(), by_hand.state_dict().items()):
        assert torch.equal(a, b), name
    logits, embeddings = model(torch.zeros(2, 40))
    assert logits.shape == (2, 10) and embeddings.shape == (2, 16)


def _clustered(rng, n, dim=8, classes=4, noise=0.9):
    """Items around one random centre per class (noisy enough that top-1 is below 100%)."""
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    return (centres[labels] + noise * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_adapters_undo_a_rotation_between_v1_and_v2():
    from scipy.stats import special_ortho_group

    from regfree.demo.posthoc import adapter_top1
    from regfree.retrieval import retrieval_matrix

    rng = np.random.default_rng(0)
    old_g, y_g = _clustered(rng, 400)
    old_q, y_q = _clustered(np.random.default_rng(0), 400)  # same centres, same noise law
    old_q, y_q = old_q[:100] + 0.3 * rng.normal(size=(100, 8)).astype(np.float32), y_q[:100]
    rotation = special_ortho_group.rvs(8, random_state=1).astype(np.float32)
    new_g, new_q = old_g @ rotation, old_q @ rotation  # v2: v1's space rotated
    top1 = adapter_top1(old_q, new_q, y_q, old_g, new_g, y_g, share=0.1, seed=0)
    raw = retrieval_matrix({"v1": old_q, "v2": new_q}, y_q, {"v1": old_g, "v2": new_g}, y_g)
    assert top1.pairs == 40
    assert 0.3 < top1.old_old < 1.0
    np.testing.assert_allclose(top1.old_old, raw.value("v1", "v1"), atol=1e-9)  # full ranking
    assert raw.value("v2", "v1") < top1.old_old - 0.2  # raw v2 cannot search v1's gallery
    # 40 pairs pin down an 8-d rotation: both adapters give v1's own ranking back
    np.testing.assert_allclose([top1.query, top1.gallery], top1.old_old, atol=0.02)
    assert set(top1.adapters) == {"gallery", "query"}


def test_cross_fit_blend_chooses_each_half_on_the_other():
    from regfree.demo.posthoc import cross_fit_blend
    from regfree.pctraining import fit_blend

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=60)
    old = rng.normal(size=(60, 3)) + 2.0 * np.eye(3)[y]
    new = rng.normal(size=(60, 3)) + 2.5 * np.eye(3)[y]
    predictions, blends = cross_fit_blend(y, old, new, max_error_increase=0.05, seed=7)
    order = np.random.default_rng(7).permutation(60)
    first, second = order[:30], order[30:]
    assert blends[0] == fit_blend(y[first], old[first], new[first], max_error_increase=0.05)
    assert blends[1] == fit_blend(y[second], old[second], new[second], max_error_increase=0.05)
    np.testing.assert_array_equal(predictions[second], blends[0].predict(old[second], new[second]))
    np.testing.assert_array_equal(predictions[first], blends[1].predict(old[first], new[first]))
    with pytest.raises(ValueError, match="y needs at least 2 samples to cross-fit a blend"):
        cross_fit_blend(y[:1], old[:1], new[:1])


def test_blend_numbers_count_flips_against_v1_and_plain_on_the_same_samples():
    from regfree.demo.posthoc import blend_numbers

    y = np.array([0, 1, 0, 1] * 4)
    old = np.eye(2)[y] * 4.0  # v1 right everywhere and sure of it
    new = np.eye(2)[y] * 1.0
    new[:4] = np.eye(2)[1 - y[:4]] * 0.5  # v2 wrong (unsure) on one sample in each class pair
    plain_flips = (new.argmax(1) != y)
    numbers = blend_numbers(y, old, new, plain_flips, max_error_increase=0.0, seed=0)
    # any weight on v1 fixes v2's unsure mistakes, so each half's blend removes every flip
    assert numbers["error"] == 0.0 and numbers["nfr"] == 0.0
    assert numbers["nfr_vs_plain_p"] == pytest.approx(0.125)  # 4 discordant pairs, all one way
    assert numbers["mcnemar_p"] == 1.0
    assert [b["kind"] for b in numbers["blends"]] and len(numbers["blends"]) == 2
