"""The PCT study's term specs (experiments/pct_study): labels, families, records, and the runs
of the table, without training anything."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from pct_study.analysis import noisy_check_runs, table_runs  # noqa: E402
from pct_study.recipes import (  # noqa: E402
    Elodi,
    FocalDistillation,
    KnowledgeDistillation,
    NoisyFocalDistillation,
    Run,
    TopKInhibition,
    run_from_record,
)
from pct_study.settings import QUICK  # noqa: E402
from regfree.pctraining import FocalDistillationLoss  # noqa: E402


def test_table_runs_are_the_nine_recipes_per_seed_with_their_labels_and_families():
    runs = table_runs(QUICK, sweep=None)
    assert len(runs) == 9 * len(QUICK.seeds)
    fd = FocalDistillationLoss()
    lm = FocalDistillationLoss(kind="logit")
    first = runs[:9]
    assert [r.label() for r in first] == [
        "plain",
        f"KD T={fd.temperature:g} w={fd.weight:g}",
        f"FD-KL defaults (a={fd.alpha:g} b={fd.beta:g} T={fd.temperature:g} w={fd.weight:g})",
        f"FD-LM defaults (a={lm.alpha:g} b={lm.beta:g} w={lm.weight:g})",
        "ELODI w=0.01",
        "ens-KD T=4 w=0.5",
        "FD-KL defaults + ens-KD T=4 w=0.5",
        "FD-KL defaults + noisy FD 0.3 std w=0.02",
        "FD-KL defaults + ens-KD T=4 w=0.5 + noisy FD 0.3 std w=0.02",
    ]
    assert [r.family for r in first] == [
        "plain", "KD", "FD-KL", "FD-LM", "ELODI", "ens-KD", "FD-KL+ens-KD", "FD-KL+noisy",
        "FD-KL+ens-KD+noisy"]
    assert {r.seed for r in runs} == set(QUICK.seeds)


def test_noisy_check_runs_plain_the_grid_and_one_without_ens_kd():
    runs = noisy_check_runs(QUICK)
    assert [r.family for r in runs] == ["plain", "FD-KL+ens-KD+noisy", "FD-KL+noisy"]
    assert runs[1].spec(NoisyFocalDistillation) == NoisyFocalDistillation(*QUICK.noisy_grid[0])


@pytest.mark.parametrize("run", [
    Run(3),
    Run(3, (FocalDistillation("kl", 1, 5, 4, 0.01),)),
    Run(3, (FocalDistillation("logit", 0, 1, weight=0.003),)),
    Run(3, (FocalDistillation("kl"), KnowledgeDistillation(4.0, 0.5, "v2 ensemble"),
            NoisyFocalDistillation(0.3, 0.02))),
    Run(3, (Elodi(0.003),)),
    Run(3, (TopKInhibition(2, 0.5, 0.03),)),
    Run(3, (FocalDistillation("kl", weight=0.02, ramp=True),)),
])
def test_a_run_survives_its_json_record(run):
    assert run_from_record(run.record()) == run


def test_flat_records_of_earlier_result_files_still_read():
    legacy = {"family": "FD-LM", "seed": 100, "temperature": None, "weight": 0.003,
              "alpha": 0.0, "beta": 1.0, "defaults": False, "noise": None, "noise_weight": None}
    run = run_from_record(legacy)
    assert run == Run(100, (FocalDistillation("logit", 0.0, 1.0, None, 0.003),))
    assert run.label() == "FD-LM a=0 b=1 w=0.003"
    assert run_from_record({"family": "KD", "seed": 1, "temperature": 4.0, "weight": 0.1}
                           ).label() == "KD T=4 w=0.1"
    with pytest.raises(ValueError, match="cannot read a run of family 'FD-KL\\+noisy'"):
        run_from_record({"family": "FD-KL+noisy", "seed": 1})


def test_the_library_defaults_are_recognised():
    d = FocalDistillationLoss()
    assert FocalDistillation("kl", d.alpha, d.beta, d.temperature, d.weight
                             ).matches_library_defaults()
    assert not FocalDistillation("kl", d.alpha, d.beta, d.temperature, d.weight * 2
                                 ).matches_library_defaults()


def test_cheap_recipe_specs_say_what_they_train():
    ramped = Run(0, (FocalDistillation("kl", weight=0.02, ramp=True),))
    assert ramped.label() == "FD-KL w=0.02, ramped 0->w"
    assert ramped.family == "FD-KL"
    topk = Run(0, (TopKInhibition(2, 0.5, 0.03),))
    assert (topk.label(), topk.family) == ("LDI top-2 vs v1 m=0.5 w=0.03", "LDI-topk")


def test_cheap_tables_keep_only_seeds_whose_every_run_finished():
    from pct_study.cheap import TABLE_RECIPES, complete

    results = [{"run": Run(0, terms)} for terms in TABLE_RECIPES] + [{"run": Run(1)}]
    assert {r["run"].seed for r in complete(results, len(TABLE_RECIPES))} == {0}


def test_a_cheap_run_is_claimed_by_one_process_only(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from pct_cheap import claim, run_path

    run = Run(0, (TopKInhibition(2, 0.5, 0.03),))
    assert claim(tmp_path, run)
    assert not claim(tmp_path, run)  # a second process skips it
    run_path(tmp_path, Run(1)).write_bytes(b"saved")
    assert not claim(tmp_path, Run(1))  # already saved


def test_a_claim_whose_process_died_is_taken_over_and_no_other(tmp_path):
    from pct_cheap import claim, run_path

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    here = socket.gethostname()
    marks = {2: f"{here} {finished.stdout.strip()}",  # a process that has exited
             3: f"{here} {os.getpid()}",  # a live one
             4: f"another-host {finished.stdout.strip()}",  # cannot be checked from here
             5: ""}  # an earlier version's claim names no process
    for seed, text in marks.items():
        run_path(tmp_path, Run(seed)).with_suffix(".claim").write_text(text)
    assert [claim(tmp_path, Run(seed)) for seed in marks] == [True, False, False, False]
    assert run_path(tmp_path, Run(2)).with_suffix(".claim").read_text() == f"{here} {os.getpid()}"


def test_a_learning_rate_floor_is_a_fit_option_beside_the_average():
    from pct_study.recipes import LearningRateFloor, WeightAveraging

    run = Run(1, (FocalDistillation("kl"), WeightAveraging(0.998), LearningRateFloor(0.2)))
    assert run.label() == "FD-KL defaults + EMA 0.998 + LR cosine to 0.2x"
    assert run.family == "FD-KL+EMA+LR floor"
    assert run.fit_options(75 * 30) == {"ema_decay": 0.998, "lr_floor": 0.2}
    assert Run(1, (LearningRateFloor(0.1),)).fit_options(480) == {"lr_floor": 0.1}
    assert LearningRateFloor(0.2).build(context=None) is None
    assert run_from_record(run.record()) == run


def test_a_sweep_reusing_saved_rows_picks_among_them_against_plain_trained_here():
    from types import SimpleNamespace

    from pct_study.cheap import CANDIDATES, sweep_pick

    y = np.zeros(100, dtype=int)
    old = np.zeros(100, dtype=int)  # v1 right everywhere: every error of v2 is a negative flip
    new_terms = [t for t in CANDIDATES[-5:-2]]
    wrong = {(): 4, new_terms[0]: 3, new_terms[1]: 5, new_terms[2]: 9}
    results = []
    for terms, errors in wrong.items():
        val = y.copy()
        val[:errors] = 1
        results.append({"run": Run(7, terms), "val": val, "seconds": 1.0})
    scores = {"error": 0.02, "nfr": 0.02, "pfr": 0.0, "relative_nfr": 1.0, "negative_flips": 4,
              "n": 200}
    saved = [{"run": Run(0, terms).label(), "val": {**scores, "nfr": 0.035 + 0.001 * i},
              "seconds": 2.0} for i, terms in enumerate(CANDIDATES[1:-5] + CANDIDATES[-2:])]
    saved.append({"run": "plain", "val": {**scores, "error": 0.5}, "seconds": 2.0})
    data = SimpleNamespace(y_val=y, y_test=y)
    sweep = sweep_pick(results, data, {"v1_val": old}, saved)
    assert len(sweep["runs"]) == len(CANDIDATES)
    assert sweep["plain"]["val"].error == pytest.approx(0.04)  # trained here, not the saved 0.5
    assert sum(bool(r.get("saved")) for r in sweep["runs"]) == len(CANDIDATES) - 4
    # within plain + 0.3 points: the 3-error new candidate (NFR 3%) beats every saved row
    assert sweep["pick"]["run"].terms == new_terms[0]
    assert sweep["seeds"] == [7]
    # without plain trained here there is no reference: no sweep yet
    assert sweep_pick(results[1:], data, {"v1_val": old}, saved) is None


def test_the_second_stage_picks_among_its_own_candidates_and_its_pick_reads_back():
    from types import SimpleNamespace

    from pct_study.cheap import (
        CHEAP_TABLE,
        CONFIRM_CANDIDATES,
        STAGES,
        own_pick,
        sweep_pick,
        sweep_runs,
        table_recipes,
    )

    assert STAGES["confirm"] is CONFIRM_CANDIDATES and CONFIRM_CANDIDATES[0] == ()
    runs = sweep_runs([100, 101], CONFIRM_CANDIDATES)
    assert len(runs) == 2 * len(CONFIRM_CANDIDATES)
    y = np.zeros(100, dtype=int)
    old = np.zeros(100, dtype=int)  # every error of v2 is a negative flip
    # plain 4 errors; the first candidates 2, 6 (over plain + 0.3 points), 3, then 5s
    wrong = [4, 2, 6, 3] + [5] * (len(CONFIRM_CANDIDATES) - 4)
    results = []
    for terms, errors in zip(CONFIRM_CANDIDATES, wrong):
        val = y.copy()
        val[:errors] = 1
        results.append({"run": Run(100, terms), "val": val, "seconds": 1.0})
    data = SimpleNamespace(y_val=y, y_test=y)
    sweep = sweep_pick(results, data, {"v1_val": old}, candidates=CONFIRM_CANDIDATES)
    assert sweep["pick"]["run"].terms == CONFIRM_CANDIDATES[1]
    # one run missing: that seed is incomplete, so there is no pick yet
    assert sweep_pick(results[:-1], data, {"v1_val": old}, candidates=CONFIRM_CANDIDATES) is None
    # every stage's pick is found again from its label, and joins the test table once
    for terms in CONFIRM_CANDIDATES:
        assert own_pick(Run(0, terms).label()) == terms
    new = CONFIRM_CANDIDATES[-1]
    assert table_recipes(new, CHEAP_TABLE[1], new) == CHEAP_TABLE + (new,)


@pytest.mark.parametrize("argv", [["--split", "test", "--stage", "confirm", "--seeds", "0"],
                                  ["--split", "val", "--stage", "confirm", "--reuse-saved",
                                   "--seeds", "0"]])
def test_the_second_stage_is_refused_outside_a_fresh_validation_sweep(argv, capsys):
    from pct_cheap import main

    assert main(["--dataset", "mnist5k", *argv]) == 2
    assert "--stage confirm needs --split val" in capsys.readouterr().err


def test_an_own_pick_of_a_stage_not_run_is_refused_before_anything_trains(tmp_path, capsys,
                                                                          monkeypatch):
    import pct_cheap

    monkeypatch.setattr(pct_cheap, "ROOT", tmp_path)
    argv = ["--dataset", "mnist5k", "--split", "test", "--own-pick", "confirm", "--seeds", "0"]
    assert pct_cheap.main(argv) == 2
    assert "pct_cheap_mnist5k_confirm.json: run that stage first" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*"))  # no run folder, no v1 trained


@pytest.mark.parametrize("dataset", ["mnist5k", "digits"])
def test_noisy_focal_distillation_runs_the_setups_own_v1_on_noisy_copies(tmp_path, dataset):
    from dataclasses import replace

    import torch

    from pct_study.models import cosine_model
    from pct_study.recipes import V1_WEIGHTS, TermContext
    from pct_study.settings import DIGITS, MNIST5K, Data

    setup = replace(MNIST5K if dataset == "mnist5k" else DIGITS, v1_classes=5)
    shape = (1, 28, 28) if dataset == "mnist5k" else (64,)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, *shape)).astype(np.float32)
    y = np.arange(12) % 10
    data = Data(x, y, x, y, x, y, np.arange(6))
    v1 = cosine_model(setup.v1_width, setup, 0, setup.v1_classes)
    torch.save(v1.state_dict(), tmp_path / V1_WEIGHTS)
    term = NoisyFocalDistillation(0.3, 0.02).build(TermContext(setup, tmp_path, data))
    v2 = cosine_model(setup.v2_width, setup, 1)
    inputs = torch.as_tensor(x[:4])
    torch.manual_seed(0)
    loss = term(v2, inputs, torch.as_tensor(y[:4]))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert term.noise_std.shape == shape  # one noise scale per input feature (pixel)
    torch.manual_seed(0)  # the noise comes from torch's generator: the same draw, the same loss
    assert torch.isclose(term(v2, inputs, torch.as_tensor(y[:4])), loss)


def test_the_three_term_ensemble_replaces_a_v1_cache_link_left_by_step_cost_timing(tmp_path,
                                                                                   monkeypatch):
    import pct_cheap

    (tmp_path / "v1_cache").mkdir()
    (tmp_path / "v2_ensemble_cache").symlink_to(tmp_path / "v1_cache")
    built = []
    monkeypatch.setattr(pct_cheap, "build_v2_ensemble",
                        lambda setup, data, workdir, jobs, teachers: built.append(workdir)
                        or (workdir / "v2_ensemble_cache").mkdir())
    pct_cheap.v2_ensemble_for(QUICK, None, tmp_path, {})
    pct_cheap.v2_ensemble_for(QUICK, None, tmp_path, {})  # the second time: built already
    assert built == [tmp_path]
    assert not (tmp_path / "v2_ensemble_cache").is_symlink()


def test_three_term_rows_are_refused_outside_the_test_split(capsys):
    from pct_cheap import main

    assert main(["--dataset", "mnist5k", "--split", "val", "--three-term", "--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "--three-term needs --split test"


def test_skipping_v1s_training_samples_marks_v1_wrong_there_and_only_there(tmp_path):
    from dataclasses import replace

    import torch

    from pct_study.recipes import V1_CACHE, TermContext, marked_wrong
    from pct_study.settings import MNIST5K, Data
    from regfree.pctraining import OldLogitCache

    rng = np.random.default_rng(0)
    y = np.arange(8) % 4
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    logits[np.arange(8), y] += 5.0  # v1 right everywhere
    x = np.zeros((8, 1, 28, 28), np.float32)
    cache = OldLogitCache(tmp_path, logits, {})
    skipped = np.array([1, 4, 6])
    marked = marked_wrong(cache, skipped, y)
    right = marked.logits.argmax(1) == y
    assert not right[skipped].any() and right[np.setdiff1d(np.arange(8), skipped)].all()
    np.testing.assert_array_equal(cache.logits[0], marked.logits[0])  # the cache is not changed
    assert (cache.logits.argmax(1) == y).all()

    x[np.arange(8), 0, 0, y] = 1.0  # a v1 that reads the label off the first pixels: right
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:, :4] = 10 * torch.eye(4)
    OldLogitCache.build(model, (x, y), tmp_path / V1_CACHE, progress=False)
    context = TermContext(replace(MNIST5K, v1_classes=4), tmp_path,
                          Data(x, y, x, y, x, y, skipped))
    with pytest.raises(ValueError, match="alpha=0"):
        FocalDistillation("kl", 1.0, 5.0, 100.0, 0.04, skip_v1_training=True).build(context)
    spec = FocalDistillation("kl", 0.0, 5.0, 100.0, 0.04, skip_v1_training=True)
    term = spec.build(context)
    teacher = term.cache.lookup(np.arange(8)).numpy()
    right = teacher.argmax(1) == y
    assert right.sum() == 5 and not right[skipped].any()  # the focal weight there is alpha = 0
    assert Run(0, (spec,)).label() == "FD-KL a=0 b=5 T=100 w=0.04, not on v1's training samples"
    assert run_from_record(Run(0, (spec,)).record()).terms == (spec,)
