"""`regfree report` end to end, in process (`cli.main(argv)`), on every input format.

Every case checks exact numbers of the hand-computed case in test_metrics (NFR 0.3: negative
flips at rows 2, 5, 8; churn 0.6); one subprocess test covers the console entry point.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_metrics import NEW, OLD, Y

from regfree import __version__, cli
from regfree.metrics import flip_report

NAMES = ["cat", "dog", "eel"]
GROUPS = ["fr", "de"] * 5  # fr: rows 0 2 4 6 8 (1 negative flip), de: 1 3 5 7 9 (2)
FORMATS = ["csv", "tsv", "jsonl", "parquet", "categorical.parquet"]


def write(path, columns):
    """Write ``{name: values}`` as csv, tsv, jsonl or parquet (categorical: dictionary columns)."""
    name = str(path)
    if name.endswith(".parquet"):
        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        if name.endswith("categorical.parquet"):
            table = pa.table({k: (pa.array(v).dictionary_encode() if isinstance(v[0], str)
                                  else pa.array(v)) for k, v in columns.items()})
        pq.write_table(table, name)
    elif name.endswith(".jsonl"):
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        lines = [sep.join(columns)] + [sep.join("" if v is None else str(v) for v in row)
                                       for row in zip(*columns.values())]
        path.write_text("\n".join(lines) + "\n")
    return path.name


def run(tmp_path, monkeypatch, capsys, *argv):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def export(tmp_path, fmt, named=False, order=None, extra_new=None):
    """labels/old/new files with an id column (ids 101..110), as a team would export them."""
    order = list(range(10)) if order is None else order
    ids = [101 + i for i in range(10)]
    as_value = (lambda c: NAMES[c]) if named else int
    labels = write(tmp_path / f"labels.{fmt}", {"id": ids, "label": [as_value(c) for c in Y]})
    old = write(tmp_path / f"old.{fmt}", {"id": ids, "pred": [as_value(c) for c in OLD]})
    new_rows = {"id": [ids[i] for i in order], "pred": [as_value(NEW[i]) for i in order]}
    for key, values in (extra_new or {}).items():
        new_rows[key] = values
    new = write(tmp_path / f"new.{fmt}", new_rows)
    return labels, old, new


def expect_hand_case(record, named=False):
    assert record["n"] == 10 and record["nfr"] == 0.3 and record["pfr"] == 0.2
    assert [c["negative_flips"] for c in record["per_class"]] == [1, 1, 1]
    assert record["class_names"] == (NAMES if named else None)
    assert record["churn"]["changed"] == 6 and record["churn"]["churn"] == 0.6


@pytest.mark.parametrize("named", [False, True], ids=["ids", "names"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_exports_with_ids_and_names_in_every_format(tmp_path, monkeypatch, capsys, fmt, named):
    labels, old, new = export(tmp_path, fmt, named)
    code, out, err = run(tmp_path, monkeypatch, capsys, "--labels", labels, "--old", old,
                         "--new", new, "--json", "r.json", "--max-nfr", "0.3")
    assert (code, err) == (0, "")
    assert "30.00% [10.78%, 60.32%]" in out and "gate passed" in out
    record = json.loads((tmp_path / "r.json").read_text())
    expect_hand_case(record, named)
    assert record["gate"] == {"max_nfr": 0.3, "passed": True, "failed": []}
    assert record["inputs"] == {"labels": labels, "old": old, "new": new}
    assert record["regfree_version"] == __version__


@pytest.mark.parametrize("fmt", FORMATS)
def test_shuffled_rows_need_id_and_join_by_it(tmp_path, monkeypatch, capsys, fmt):
    order = [3, 0, 9, 1, 7, 2, 8, 4, 6, 5]
    labels, old, new = export(tmp_path, fmt, named=True, order=order)
    args = ["--labels", labels, "--old", old, "--new", new, "--json", "r.json"]
    code, out, err = run(tmp_path, monkeypatch, capsys, *args)
    assert code == 2 and out == "" and not (tmp_path / "r.json").exists()
    assert err == ("regfree report: error: --new: rows are in another order than --labels "
                   "(data row 1 has id 104 in --new but 101 in --labels); pass --id id to "
                   "join the inputs by it\n")
    code, out, err = run(tmp_path, monkeypatch, capsys, *args, "--id", "id")
    assert (code, err) == (0, "")
    expect_hand_case(json.loads((tmp_path / "r.json").read_text()), named=True)


def test_the_silent_wrong_gate_of_id_pred_files_is_gone(tmp_path, monkeypatch, capsys):
    # Two classes, id,pred columns: the id column was read as a second score column (NFR 0%).
    y = [0, 1, 1, 0, 1, 0, 1, 1]
    write(tmp_path / "y.csv", {"label": y})
    write(tmp_path / "old.csv", {"id": list(range(1, 9)), "pred": [0, 1, 1, 0, 1, 0, 1, 0]})
    write(tmp_path / "new.csv", {"id": list(range(1, 9)), "pred": [0, 1, 0, 0, 1, 1, 1, 0]})
    code, out, _ = run(tmp_path, monkeypatch, capsys, "--labels", "y.csv", "--old", "old.csv",
                       "--new", "new.csv", "--max-nfr", "0.05")
    assert code == 1
    assert "gate FAILED: NFR 25.0000% > --max-nfr 5.0000%" in out


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_and_repeated_ids_exit_2_with_counts(tmp_path, monkeypatch, capsys, fmt):
    labels, old, _ = export(tmp_path, fmt)
    new = write(tmp_path / f"new.{fmt}", {"id": [101, 102, 102, 104, 105, 106, 107, 108, 109,
                                                 200], "pred": NEW})
    code, out, err = run(tmp_path, monkeypatch, capsys, "--labels", labels, "--old", old,
                         "--new", new, "--id", "id")
    assert code == 2 and out == ""
    assert err == (f"regfree report: error: --id id: 1 ids missing from --labels {labels} "
                   f"(e.g. 200); 1 ids missing from --old {old} (e.g. 200); 2 ids missing "
                   f"from --new {new} (e.g. 103, 110); 1 ids repeated in --new {new} "
                   f"(e.g. 102)\n")


def test_duplicates_alone_stop_the_join(tmp_path, monkeypatch, capsys):
    rows = {"id": [1, 1, 2, 3], "label": [0, 1, 0, 1]}
    for name in ("l", "o", "n"):
        write(tmp_path / f"{name}.csv", rows)
    code, _, err = run(tmp_path, monkeypatch, capsys, "--labels", "l.csv", "--old", "o.csv:label",
                       "--new", "n.csv:label", "--id", "id")
    assert code == 2
    assert err == ("regfree report: error: --id id: 1 ids repeated in --labels l.csv (e.g. 1); "
                   "1 ids repeated in --old o.csv (e.g. 1); 1 ids repeated in --new n.csv "
                   "(e.g. 1)\n")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_missing_values_are_counted_with_1_based_rows(tmp_path, monkeypatch, capsys, fmt):
    labels, _, new = export(tmp_path, fmt)
    old = write(tmp_path / f"gaps.{fmt}", {"pred": [None, 0, 1, 1, 1, 0, None, 2, 0, None]})
    code, _, err = run(tmp_path, monkeypatch, capsys, "--labels", labels, "--old", old,
                       "--new", new)
    assert code == 2
    assert err == (f"regfree report: error: --old {old}: 3 missing values (in data rows "
                   "(1-based) 1, 7, 10); fill or drop them before comparing\n")


def test_missing_values_with_id_name_the_ids(tmp_path, monkeypatch, capsys):
    labels, old, _ = export(tmp_path, "parquet", named=True)
    preds = [NAMES[c] for c in NEW]
    preds[4] = None
    new = write(tmp_path / "gaps.parquet", {"id": [101 + i for i in range(10)], "pred": preds})
    code, _, err = run(tmp_path, monkeypatch, capsys, "--labels", labels, "--old", old,
                       "--new", new, "--id", "id")
    assert code == 2
    assert err == (f"regfree report: error: --new {new}: 1 missing values (at id 105); fill or "
                   "drop them before comparing\n")


def test_one_based_labels_get_a_hint(tmp_path, monkeypatch, capsys):
    write(tmp_path / "y.csv", {"label": [c + 1 for c in Y]})
    np.save(tmp_path / "old.npy", np.eye(3)[OLD])
    write(tmp_path / "new.csv", {"pred": NEW})
    code, _, err = run(tmp_path, monkeypatch, capsys, "--labels", "y.csv", "--old", "old.npy",
                       "--new", "new.csv")
    assert code == 2
    assert err == ("regfree report: error: --labels y.csv: class id 3 is out of range for 3 "
                   "classes (from --old); the labels look 1-based (1..3): subtract 1\n")
    write(tmp_path / "old.csv", {"pred": OLD})
    code, out, _ = run(tmp_path, monkeypatch, capsys, "--labels", "y.csv", "--old", "old.csv",
                       "--new", "new.csv", "--json", "r.json")
    assert code == 0
    note = ("the labels never use class 0 but the predictions do: if the labels are 1-based, "
            "subtract 1 from them")
    assert "note: " + note in out
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == [
        "classes only in the predictions, never in the labels (1): 0", note]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "categorical.parquet"])
def test_groups_report_and_gate_every_large_group(tmp_path, monkeypatch, capsys, fmt):
    labels, old, new = export(tmp_path, fmt, named=True)
    groups = write(tmp_path / f"groups.{fmt}", {"id": [101 + i for i in range(10)],
                                                 "country": GROUPS})
    args = ["--labels", labels, "--old", old, "--new", new, "--group", f"{groups}:country",
            "--json", "r.json", "--max-group-nfr", "0.3"]
    code, out, _ = run(tmp_path, monkeypatch, capsys, *args, "--min-group-size", "5")
    assert code == 1
    assert "gate FAILED: group de NFR 40.0000% > --max-group-nfr 30.0000%" in out
    record = json.loads((tmp_path / "r.json").read_text())
    de, fr = record["groups"]
    assert (de["name"], de["n"], de["negative_flips"], de["nfr"]) == ("de", 5, 2, 0.4)
    assert (fr["name"], fr["n"], fr["negative_flips"], fr["nfr"]) == ("fr", 5, 1, 0.2)
    np.testing.assert_allclose(fr["nfr_ci"], [0.0362, 0.6245], atol=1e-4)
    assert record["gate"]["min_group_size"] == 5 and not record["gate"]["passed"]
    code, _, _ = run(tmp_path, monkeypatch, capsys, *args, "--min-group-size", "6")
    assert code == 0  # both groups are smaller than 6: nothing to gate


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_no_labels_reports_churn_and_gates_on_it(tmp_path, monkeypatch, capsys, fmt):
    _, old, new = export(tmp_path, fmt, named=True)
    code, out, _ = run(tmp_path, monkeypatch, capsys, "--old", old, "--new", new,
                       "--max-churn", "0.5", "--json", "r.json", "--html", "r.html")
    assert code == 1 and "gate FAILED: churn 60.0000% > --max-churn 50.0000%" in out
    assert "Flip report" not in out
    record = json.loads((tmp_path / "r.json").read_text())
    assert "nfr" not in record and record["churn"]["changed"] == 6
    # old -> new changes (0-based rows): cat->dog (1), cat->eel (5, 8), dog->eel (4, 9), eel->cat (7)
    assert record["churn"]["change_confusion"] == [[0, 1, 2], [0, 0, 2], [1, 0, 0]]
    page = (tmp_path / "r.html").read_text()
    assert "Gate FAILED" in page and old in page and "UTC" in page


def test_npy_inputs_ids_scores_and_names(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "y.npy", np.array([NAMES[c] for c in Y]))
    np.save(tmp_path / "old.npy", np.array([NAMES[c] for c in OLD]))
    write(tmp_path / "new.csv", {"cat": [1.0 * (c == 0) for c in NEW],
                                 "eel": [1.0 * (c == 2) for c in NEW],
                                 "dog": [1.0 * (c == 1) for c in NEW]})
    code, _, err = run(tmp_path, monkeypatch, capsys, "--labels", "y.npy", "--old", "old.npy",
                       "--new", "new.csv", "--json", "r.json")
    assert (code, err) == (0, "")
    expect_hand_case(json.loads((tmp_path / "r.json").read_text()), named=True)


def test_class_names_file_fixes_the_order(tmp_path, monkeypatch, capsys):
    labels, old, new = export(tmp_path, "csv", named=True)
    (tmp_path / "names.txt").write_text("eel\ncat\ndog\nfox\n")
    code, _, _ = run(tmp_path, monkeypatch, capsys, "--labels", labels, "--old", old,
                     "--new", new, "--class-names", "names.txt", "--json", "r.json")
    assert code == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["class_names"] == ["eel", "cat", "dog", "fox"]
    assert [c["count"] for c in record["per_class"]] == [4, 3, 3, 0]
    assert record["nfr"] == 0.3


def _bad(tmp_path, case):
    """One bad input: the arguments that use it and the exact error line."""
    np.save(tmp_path / "y.npy", np.array(Y))
    write(tmp_path / "old.csv", {"pred": OLD})
    pq.write_table(pa.table({"id": np.arange(10), "new": NEW}), tmp_path / "new.parquet")
    base = ["--labels", "y.npy", "--old", "old.csv", "--new", "new.parquet:new"]

    def swap(option, value):
        args = list(base)
        args[args.index(option) + 1] = value
        return args

    if case == "missing file":
        return swap("--labels", "nope.npy"), "--labels nope.npy: no such file"
    if case == "unreadable npy":
        (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
        return swap("--old", "broken.npy"), "--old broken.npy: cannot read .npy (.*)"
    if case == "empty file":
        (tmp_path / "empty.csv").write_text("")
        return swap("--new", "empty.csv"), "--new empty.csv: file is empty"
    if case == "length mismatch":
        np.save(tmp_path / "short.npy", np.array(OLD[:-1]))
        return swap("--old", "short.npy"), "--old short.npy: has 9 rows but --labels y.npy has 10"
    if case == "NaN scores":
        scores = np.eye(3)[NEW]
        scores[4, 1] = np.nan
        np.save(tmp_path / "nan.npy", scores)
        return swap("--new", "nan.npy"), r"--new nan\.npy: scores contain NaN or inf \(data row 5\)"
    if case == "negative labels":
        np.save(tmp_path / "neg.npy", np.array([-1] + Y[1:]))
        return swap("--labels", "neg.npy"), "--labels neg.npy: class ids must be >= 0, found -1"
    if case == "fractional ids":
        write(tmp_path / "frac.csv", {"pred": [0.5] + OLD[1:]})
        return (swap("--old", "frac.csv"),
                "--old frac.csv: class ids must be whole numbers, found 0.5 in data row 1")
    if case == "missing column":
        return swap("--new", "new.parquet:nope"), "--new new.parquet: no column 'nope' (.*)"
    if case == "ambiguous columns":
        write(tmp_path / "two.csv", {"a": OLD, "b": NEW})
        return swap("--old", "two.csv"), (
            "--old two.csv: several columns could hold the predictions \\(a, b\\); pass "
            "two.csv:COLUMN with one of a, b \\(several columns are read as scores only when "
            "all are floating-point\\)")
    if case == "ids and names mixed":
        write(tmp_path / "named.csv", {"pred": [NAMES[c] for c in OLD]})
        return (swap("--old", "named.csv"),
                "--labels y.npy: holds class ids but --old holds class names; export both the "
                "same way")
    if case == "unknown class name":
        write(tmp_path / "named.csv", {"pred": [NAMES[c] for c in OLD]})
        write(tmp_path / "ny.csv", {"label": [NAMES[c] for c in Y]})
        write(tmp_path / "nn.csv", {"pred": ["fox"] + [NAMES[c] for c in NEW[1:]]})
        (tmp_path / "names.txt").write_text("cat\ndog\neel\n")
        return (["--labels", "ny.csv", "--old", "named.csv", "--new", "nn.csv",
                 "--class-names", "names.txt"],
                "--new nn.csv: 'fox' is not one of the --class-names \\(cat, dog, eel\\)")
    if case == "jsonl column suffix":
        write(tmp_path / "p.jsonl", {"pred": OLD})
        return swap("--old", "p.jsonl:nope"), "--old p.jsonl: no column 'nope' \\(columns: pred\\)"
    if case == "output directory missing":
        return base + ["--json", "no/such/r.json"], "--json no/such/r.json: directory .* exist"
    if case == "--max-nfr without labels":
        return (["--old", "old.csv", "--new", "new.parquet:new", "--max-nfr", "0.1"],
                "--max-nfr: needs --labels \\(without labels, gate on --max-churn\\)")
    if case == "--max-group-nfr without groups":
        return base + ["--max-group-nfr", "0.1"], "--max-group-nfr: needs --group FILE\\[:column\\]"
    raise AssertionError(case)


BAD = ["missing file", "unreadable npy", "empty file", "length mismatch", "NaN scores",
       "negative labels", "fractional ids", "missing column", "ambiguous columns",
       "ids and names mixed", "unknown class name", "jsonl column suffix",
       "output directory missing", "--max-nfr without labels", "--max-group-nfr without groups"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, monkeypatch, capsys, case):
    args, message = _bad(tmp_path, case)
    if "--json" not in args:
        args = args + ["--json", "r.json"]
    code, out, err = run(tmp_path, monkeypatch, capsys, *args, "--html", "r.html")
    assert code == 2 and out == ""
    assert re.fullmatch(f"regfree report: error: {message}\n", err), err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.html").exists()
    assert not list(tmp_path.glob(".r.*"))  # no temp files left behind


@pytest.mark.parametrize("argv, message", [
    (["--top", "-3"], r"argument --top: expected a whole number >= 1, got '-3'"),
    (["--max-nfr", "1.5"], r"argument --max-nfr: expected a number in \[0, 1\], got '1.5'"),
    (["--min-group-size", "0"], r"argument --min-group-size: expected a whole number >= 1"),
    (["--max-churn", "x"], r"argument --max-churn: expected a number in \[0, 1\], got 'x'"),
])
def test_numeric_options_are_range_checked(tmp_path, monkeypatch, capsys, argv, message):
    code, out, err = run(tmp_path, monkeypatch, capsys, "--old", "a.csv", "--new", "b.csv", *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert re.search(message, err), err


def test_version_and_no_command(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"regfree {__version__}\n"
    assert cli.main([]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(range(10)), st.permutations(range(10)))
def test_any_row_order_with_id_gives_the_same_report(tmp_path, monkeypatch, capsys, p_old, p_new):
    ids = [f"row{i}" for i in range(10)]
    write(tmp_path / "y.csv", {"id": ids, "label": Y})
    write(tmp_path / "o.jsonl", {"id": [ids[i] for i in p_old], "pred": [OLD[i] for i in p_old]})
    write(tmp_path / "n.parquet", {"id": [ids[i] for i in p_new], "pred": [NEW[i] for i in p_new]})
    code, _, _ = run(tmp_path, monkeypatch, capsys, "--labels", "y.csv", "--old", "o.jsonl",
                     "--new", "n.parquet", "--id", "id", "--json", "r.json")
    assert code == 0
    record = json.loads((tmp_path / "r.json").read_text())
    expected = json.loads(flip_report(Y, OLD, NEW).to_json())
    assert {k: record[k] for k in expected} == expected


def test_console_script_in_a_subprocess_imports_neither_torch_nor_matplotlib(tmp_path):
    write(tmp_path / "y.csv", {"label": Y})
    write(tmp_path / "o.csv", {"pred": OLD})
    write(tmp_path / "n.csv", {"pred": NEW})
    code = ("import sys; from regfree.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "report", "--labels", "y.csv", "--old",
                             "o.csv", "--new", "n.csv", "--max-nfr", "0.29"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "gate FAILED: NFR 30.0000% > --max-nfr 29.0000%" in result.stdout
