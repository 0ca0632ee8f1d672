"""`regfree blend` and `regfree report --blend`, in process, on a hand-made validation set.

Six samples, two classes; P(class 0) of v1 and v2, and where a weighted blend
``(1 - w) * p_new + w * p_old`` crosses 0.5:
  A  y=0  v1 0.92  v2 0.45   negative flip, undone for w >= 0.15 (crossing at 0.106)
  B  y=1  v1 0.80  v2 0.27   positive flip, broken for w >= 0.45 (0.434)
  C  y=0  v1 0.60  v2 0.15   negative flip, undone for w >= 0.80 (0.778)
  D  y=1  v1 0.20  v2 0.10   both right always
  E  y=1  v1 0.70  v2 0.05   positive flip, broken for w >= 0.70 (0.692)
  F  y=0  v1 0.30  v2 0.90   positive flip, broken for w >= 0.70 (0.667)
v2 alone: A, C wrong (error 2/6, NFR 2/6). w in [0.15, 0.4]: C wrong (1/6, 1/6); w >= 0.8: B, E,
F wrong (3/6, NFR 0). The gate (v1's class where v1 is surer by more than the margin; v1 - v2
confidence: A 0.37, B 0.07, others < 0) at margins 0.1..0.35 takes v1 on A only (1/6, 1/6).
Least NFR within +0 error: 1/6, the smallest knob first: gate 0.1. Within +0.2 error: weighted 0.8.
"""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regfree import __version__, cli
from regfree.pctraining.blend import LogitBlend

Y = np.array([0, 1, 0, 1, 1, 0])
P_OLD = np.array([0.92, 0.80, 0.60, 0.20, 0.70, 0.30])
P_NEW = np.array([0.45, 0.27, 0.15, 0.10, 0.05, 0.90])


def logits(p0):
    return np.log(np.column_stack([p0, 1 - p0]))


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("y.npy", Y)
    np.save("old.npy", logits(P_OLD))
    np.save("new.npy", logits(P_NEW))
    return tmp_path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out):
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    return [row for row in rows if row]


VAL = ["--labels", "y.npy", "--old", "old.npy", "--new", "new.npy"]


def test_blend_chooses_and_prints_the_pareto_table(files, capsys):
    code, out, err = run(capsys, "blend", *VAL, "--json", "b.json", "--html", "b.html")
    assert (code, err) == (0, "")
    assert table_rows(out) == [["weighted", "0.8", "50.00%", "0.00%", ""],
                               ["gate", "0.1", "16.67%", "16.67%", "chosen"],
                               ["weighted", "0", "33.33%", "33.33%", "v2 alone"]]
    assert ("chosen: gate 0.1 (scores: logits): validation NFR 16.67% (v2 alone 33.33%), "
            "error 16.67% (v2 alone 33.33%, allowed +0.00%)") in out
    assert "v1 keeps running beside v2" in out
    record = json.loads((files / "b.json").read_text())
    assert record["blend"] == LogitBlend("gate", 0.1).to_dict()
    validation = record["validation"]
    assert validation["n"] == 6 and validation["max_error_increase"] == 0.0
    np.testing.assert_allclose([validation["chosen"]["error_rate"], validation["chosen"]["nfr"],
                                validation["v2_alone"]["error_rate"],
                                validation["v2_alone"]["nfr"]], [1 / 6, 1 / 6, 2 / 6, 2 / 6])
    assert [(p["kind"], p["knob"]) for p in validation["pareto_front"]] == [
        ("weighted", 0.8), ("gate", 0.1)]
    assert record["inputs"] == {"labels": "y.npy", "old": "old.npy", "new": "new.npy"}
    assert record["regfree_version"] == __version__
    page = (files / "b.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "Validation Pareto front" in page


def test_allowed_error_increase_buys_zero_nfr(files, capsys):
    code, out, _ = run(capsys, "blend", *VAL, "--max-error-increase", "0.2", "--json", "b.json")
    assert code == 0
    assert ["weighted", "0.8", "50.00%", "0.00%", "chosen"] in table_rows(out)
    assert json.loads((files / "b.json").read_text())["blend"]["knob"] == 0.8


def test_report_applies_the_saved_blend(files, capsys):
    assert run(capsys, "blend", *VAL, "--json", "b.json")[0] == 0
    code, out, err = run(capsys, "report", *VAL, "--blend", "b.json", "--json", "r.json",
                         "--html", "r.html", "--max-nfr", "0.17")
    assert (code, err) == (0, "")
    assert "new predictions: the blend of --old and --new scores (gate 0.1" in out
    record = json.loads((files / "r.json").read_text())
    # the blend takes v1 on A only: C stays the one negative flip; v1 is wrong on B, E, F
    expected_new = LogitBlend("gate", 0.1).predict(logits(P_OLD), logits(P_NEW))
    assert expected_new.tolist() == [0, 1, 1, 1, 1, 0]
    assert sum(c["negative_flips"] for c in record["per_class"]) == 1
    np.testing.assert_allclose([record["nfr"], record["error_rate_old"],
                                record["error_rate_new"]], [1 / 6, 3 / 6, 1 / 6])
    assert record["blend"] == LogitBlend("gate", 0.1).to_dict()
    assert record["inputs"]["blend"] == "b.json"
    assert "Blend applied" in (files / "r.html").read_text()
    # without the blend, v2 alone fails the same gate (NFR 2/6)
    assert run(capsys, "report", *VAL, "--max-nfr", "0.17")[0] == 1


def test_tables_joined_by_id_give_the_same_blend(files, capsys):
    order = [3, 0, 5, 1, 4, 2]
    ids = [f"r{i}" for i in range(6)]
    (files / "y.csv").write_text("id,label\n" + "".join(f"{ids[i]},{Y[i]}\n" for i in range(6)))
    (files / "old.csv").write_text("id,cat,dog\n" + "".join(
        f"{ids[i]},{row[0]:.17g},{row[1]:.17g}\n" for i, row in zip(order, logits(P_OLD)[order])))
    pq.write_table(pa.table({"id": [ids[i] for i in order[::-1]],
                             "scores": [list(r) for r in logits(P_NEW)[order[::-1]]]}),
                   str(files / "new.parquet"))
    code, out, err = run(capsys, "blend", "--labels", "y.csv", "--old", "old.csv", "--new",
                         "new.parquet", "--id", "id", "--json", "b.json")
    assert (code, err) == (0, "")
    assert json.loads((files / "b.json").read_text())["blend"] == LogitBlend("gate",
                                                                             0.1).to_dict()
    code, _, err = run(capsys, "blend", "--labels", "y.csv", "--old", "old.csv", "--new",
                       "new.parquet")
    assert code == 2 and "rows are in another order than --labels" in err
    assert "pass --id id to join the inputs by it" in err


@pytest.mark.parametrize("argv, message", [
    (["--old", "y.npy"], "--old y.npy: holds class ids, not scores; a blend combines "
                         "per-class scores"),
    (["--new", "three.npy"], "--new three.npy: 3 score columns do not match the 2 of --old "
                             "old.npy; a blend needs the same classes in both"),
    (["--new", "short.npy"], "--new short.npy: has 4 rows but --labels y.npy has 6"),
    (["--old", "gone.npy"], "--old gone.npy: no such file"),
    (["--max-error-increase", "-0.1"], "argument --max-error-increase: expected a share in "
                                       "[0, 1] such as 0.005, got '-0.1'"),
    (["--max-error-increase", "nan"], "argument --max-error-increase: expected a share"),
    (["--scores", "probabilities"], "--old old.npy: --scores probabilities needs non-negative "
                                    "rows summing to 1; pass --scores logits for raw scores"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(files, capsys, argv, message):
    np.save("three.npy", np.zeros((6, 3)))
    np.save("short.npy", logits(P_NEW)[:4])
    options = dict(zip(VAL[::2], VAL[1::2]))
    options.update(dict(zip(argv[::2], argv[1::2])))
    flat = [part for pair in options.items() for part in pair]
    code, out, err = run(capsys, "blend", *flat, "--json", "b.json", "--html", "b.html")
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (files / "b.json").exists() and not (files / "b.html").exists()


def test_score_columns_naming_other_classes_are_refused(files, capsys):
    (files / "y.csv").write_text("label\n" + "".join(f"{['cat', 'dog'][c]}\n" for c in Y))
    (files / "o.csv").write_text("cat,dog\n" + "0.5,0.5\n" * 6)
    (files / "n.csv").write_text("cat,eel\n" + "0.5,0.5\n" * 6)
    code, out, err = run(capsys, "blend", "--labels", "y.csv", "--old", "o.csv", "--new",
                         "n.csv")
    assert (code, out) == (2, "")
    assert err == ("regfree blend: error: --new n.csv: score columns name other classes than "
                   "--old o.csv; a blend needs the same classes in both\n")


@pytest.mark.parametrize("blend_text, message", [
    (None, "--blend b.json: no such file"),
    ("{not json", "--blend b.json: Expecting property name"),
    ('{"kind": "gate"}', "--blend b.json: data is not a regfree LogitBlend"),
    ('{"format": "regfree.LogitBlend/1", "kind": "gate", "knob": 2, "scores": "logits"}',
     "--blend b.json: knob must be a number in [0, 1], got 2.0"),
])
def test_report_refuses_a_bad_blend_file(files, capsys, blend_text, message):
    if blend_text is not None:
        (files / "b.json").write_text(blend_text)
    code, out, err = run(capsys, "report", *VAL, "--blend", "b.json", "--json", "r.json")
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
    assert not (files / "r.json").exists()


def test_report_blend_refuses_class_ids(files, capsys):
    (files / "b.json").write_text(LogitBlend("gate", 0.1).to_json())
    np.save("old_ids.npy", logits(P_OLD).argmax(1))
    code, out, err = run(capsys, "report", "--labels", "y.npy", "--old", "old_ids.npy",
                         "--new", "new.npy", "--blend", "b.json", "--json", "r.json")
    assert code == 2 and out == ""
    assert err.startswith("regfree report: error: --old old_ids.npy: holds class ids, not "
                          "scores; a blend combines per-class scores")
    assert not (files / "r.json").exists()


def test_blend_console_script_imports_neither_torch_nor_matplotlib(files):
    code = ("import sys; from regfree.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules; sys.exit(rc)")
    for argv in (["blend", *VAL, "--json", "b.json"], ["report", *VAL, "--blend", "b.json"]):
        result = subprocess.run([sys.executable, "-c", code, *argv], cwd=files,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert "chosen" not in result.stdout and "blend of --old and --new" in result.stdout


def test_every_pctraining_name_still_imports_from_the_package():
    import regfree.pctraining as pctraining

    for name in pctraining.__all__:
        assert getattr(pctraining, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        pctraining.no_such_name  # noqa: B018
