"""`regfree demo`: its knobs, its closing sentences (they follow the run's numbers) and one tiny
end-to-end run."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from regfree import cli
from regfree.demo.report import DemoRow, changed, conclusion


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


def test_changed_says_which_way_at_the_printed_precision():
    assert changed("error", 0.2, 0.1) == "lowers the error from 20.0% to 10.0%"
    assert changed("error", 0.1, 0.2) == "raises the error from 10.0% to 20.0%"
    assert changed("error", 0.1, 0.10004) == "leaves the error at 10.0%"


def test_demo_rejects_bad_knobs_in_one_line(tmp_path, capsys):
    assert cli.main(["demo", "--samples", "5", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == "regfree demo: error: samples must be at least 100, got 5\n"
    assert not (tmp_path / "x").exists()


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
    assert [row["variant"] for row in summary["rows"]] == ["plain", "pc", "bct+pc"]
    for row in summary["rows"]:
        assert 0.0 <= row["nfr_ci"][0] <= row["nfr"] <= row["nfr_ci"][1] <= 1.0
    assert {p.name for p in out.iterdir()} == {
        "summary.json", "demo.png", "report_plain.html", "report_pc.html", "report_bct_pc.html"}
    # the printed sentences are the ones this run's numbers give (rich wraps the lines)
    rows = [DemoRow(**{**row, "nfr_ci": tuple(row["nfr_ci"])}) for row in summary["rows"]]
    assert " ".join(conclusion(rows).split()) in " ".join(result.stdout.split())


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
