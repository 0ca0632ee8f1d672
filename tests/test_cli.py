"""`regfree report` end to end through a subprocess: outputs, gate exit codes, bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_metrics import NEW, OLD, Y  # the hand-computed case (NFR 0.3)

from regfree.metrics import flip_report


def regfree(*args, cwd):
    return subprocess.run([sys.executable, "-m", "regfree.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def files(tmp_path):
    np.save(tmp_path / "y.npy", np.array(Y))
    (tmp_path / "old.csv").write_text("pred\n" + "\n".join(map(str, OLD)) + "\n")
    pq.write_table(pa.table({"id": np.arange(10), "new": NEW}), tmp_path / "new.parquet")
    (tmp_path / "names.txt").write_text("cat\ndog\neel\n")
    return tmp_path


def _report_args(labels="y.npy", old="old.csv", new="new.parquet:new", *extra):
    return ["report", "--labels", labels, "--old", old, "--new", new, *extra]


def test_report_prints_table_and_writes_json_and_html(files):
    result = regfree(*_report_args(), "--json", "r.json", "--html", "r.html",
                     "--class-names", "names.txt", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "30.00% [10.78%, 60.32%]" in result.stdout and "cat" in result.stdout
    written = json.loads((files / "r.json").read_text())
    assert written == json.loads(flip_report(Y, OLD, NEW).to_json())
    page = (files / "r.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) == 2
    assert sorted(p.name for p in files.iterdir()) == [
        "names.txt", "new.parquet", "old.csv", "r.html", "r.json", "y.npy"]  # no temp files


def test_gate_exit_codes(files):
    passed = regfree(*_report_args(), "--max-nfr", "0.3", cwd=files)
    assert passed.returncode == 0 and "gate passed" in passed.stdout
    failed = regfree(*_report_args(), "--max-nfr", "0.29", "--json", "r.json", cwd=files)
    assert failed.returncode == 1 and "gate FAILED" in failed.stdout
    assert failed.stderr == ""
    assert json.loads((files / "r.json").read_text())["nfr"] == 0.3  # report still written


def test_scores_from_several_csv_columns(files):
    scores = np.eye(3)[NEW] + 0.05
    np.savetxt(files / "scores.csv", scores, delimiter=",", header="a,b,c", comments="")
    result = regfree(*_report_args(new="scores.csv"), "--json", "r.json", cwd=files)
    assert result.returncode == 0, result.stderr
    assert json.loads((files / "r.json").read_text())["nfr"] == 0.3


def _setup_bad(files, case):
    """Make one bad input; returns the arguments that use it and the expected message."""
    if case == "missing file":
        return _report_args(labels="nope.npy"), r"--labels nope\.npy: no such file"
    if case == "unreadable file":
        (files / "broken.npy").write_bytes(b"\x93NUMPY garbage")
        return _report_args(old="broken.npy"), r"--old broken\.npy: cannot read \.npy"
    if case == "empty file":
        (files / "empty.csv").write_text("")
        return _report_args(new="empty.csv"), r"--new empty\.csv: file is empty"
    if case == "non-numeric content":
        (files / "words.csv").write_text("pred\n0\n1\nbanana\n")
        return _report_args(old="words.csv"), r"--old words\.csv: non-numeric content"
    if case == "length mismatch":
        np.save(files / "short.npy", np.array(OLD[:-1]))
        return _report_args(old="short.npy"), r"--old short\.npy: has 9 rows but --labels has 10"
    if case == "NaN scores":
        scores = np.eye(3)[NEW]
        scores[4, 1] = np.nan
        np.save(files / "nan.npy", scores)
        return _report_args(new="nan.npy"), r"--new nan\.npy: scores contain NaN or inf"
    if case == "inf scores":
        scores = np.eye(3)[OLD]
        scores[0, 0] = np.inf
        np.save(files / "inf.npy", scores)
        return _report_args(old="inf.npy"), r"--old inf\.npy: scores contain NaN or inf"
    if case == "labels out of range of the scores":
        np.save(files / "narrow.npy", np.eye(2)[[0] * 10])
        return (_report_args(old="narrow.npy"),
                r"--labels y\.npy: class id 2 is out of range for 2 classes \(from --old\)")
    if case == "labels out of range of the class names":
        (files / "two.txt").write_text("cat\ndog\n")
        return (_report_args() + ["--class-names", "two.txt"],
                r"--labels y\.npy: class id 2 is out of range for 2 classes")
    if case == "negative labels":
        np.save(files / "neg.npy", np.array([-1] + Y[1:]))
        return _report_args(labels="neg.npy"), r"--labels neg\.npy: class ids must be >= 0"
    if case == "missing parquet column":
        return _report_args(new="new.parquet:nope"), r"--new new\.parquet: no column 'nope'"
    if case == "output directory missing":
        return _report_args() + ["--json", "no/such/dir/r.json"], r"--json .*does not exist"
    if case == "bad --max-nfr":
        return _report_args() + ["--max-nfr", "1.5"], r"--max-nfr: .*expected a number in \[0, 1\]"
    raise AssertionError(case)


BAD_CASES = ["missing file", "unreadable file", "empty file", "non-numeric content",
             "length mismatch", "NaN scores", "inf scores", "labels out of range of the scores",
             "labels out of range of the class names", "negative labels",
             "missing parquet column", "output directory missing", "bad --max-nfr"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_no_output(files, case):
    args, message = _setup_bad(files, case)
    if "--json" not in args:
        args = args + ["--json", "r.json"]
    result = regfree(*args, "--html", "r.html", cwd=files)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (files / "r.json").exists() and not (files / "r.html").exists()
    assert not list(files.glob(".r.*"))  # no temp files left behind


def test_console_script_and_help(files):
    script = subprocess.run([sys.executable, "-c",
                             "import sys; from regfree.cli import main; sys.exit(main())",
                             "report", "--help"], capture_output=True, text=True, cwd=files)
    assert script.returncode == 0 and "--max-nfr" in script.stdout
    no_command = regfree(cwd=files)
    assert no_command.returncode == 2 and len(no_command.stderr.splitlines()) == 1


def test_report_does_not_import_torch_or_matplotlib_without_html(files):
    code = ("import sys; from regfree.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, *_report_args()], cwd=files,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
