"""regfree.reporting: input files, atomic writes, terminal tables, HTML page with plots."""

import base64
import io
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from test_metrics import NEW, OLD, Y  # the hand-computed case (NFR 0.3)

from regfree.metrics import flip_report
from regfree.reporting import (
    HtmlSection,
    InputError,
    flip_report_page,
    flip_report_section,
    html_table,
    print_flip_report,
    read_array,
    read_class_names,
    render_html_page,
    split_spec,
    write_text_atomic,
)


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_read_npy_1d_and_2d(tmp_path):
    np.save(tmp_path / "ids.npy", np.array(Y))
    np.save(tmp_path / "scores.npy", np.eye(3)[OLD])
    assert read_array(str(tmp_path / "ids.npy")).tolist() == Y
    assert read_array(str(tmp_path / "scores.npy")).shape == (10, 3)


def test_read_csv_variants(tmp_path):
    assert read_array(_write(tmp_path / "a.csv", "label\n0\n2\n1\n")).tolist() == [0, 2, 1]
    assert read_array(_write(tmp_path / "b.csv", "0\n2\n1\n")).tolist() == [0, 2, 1]
    both = _write(tmp_path / "c.csv", "old,new\n0,1\n2,2\n1,0\n")
    assert read_array(both + ":new").tolist() == [1, 2, 0]
    assert read_array(both + ":0").tolist() == [0, 2, 1]
    with pytest.raises(InputError, match=r"c\.csv: several columns could hold the predictions "
                                         r"\(old, new\); pass .*c\.csv:COLUMN with one of old, new"):
        read_array(both)  # integer columns are never guessed to be scores
    floats = _write(tmp_path / "f.csv", "a,b\n0.1,0.9\n0.8,0.2\n")
    np.testing.assert_array_equal(read_array(floats), [[0.1, 0.9], [0.8, 0.2]])
    scores = _write(tmp_path / "d.txt", "0.1 0.9\n0.8 0.2\n")
    np.testing.assert_array_equal(read_array(scores), [[0.1, 0.9], [0.8, 0.2]])
    tsv = _write(tmp_path / "e.tsv", "id\tlabel\n7\tcat\n8\tdog\n")
    assert read_array(tsv).tolist() == ["cat", "dog"]  # the id column is never a value
    jsonl = _write(tmp_path / "g.jsonl", '{"index": 1, "p": 2}\n{"index": 2, "p": 0}\n')
    assert read_array(jsonl).tolist() == [2, 0] and read_array(jsonl + ":p").tolist() == [2, 0]


def test_read_parquet_variants(tmp_path):
    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"y": Y, "old": OLD, "p0": [0.5] * 10, "p1": [0.1] * 10}), path)
    assert read_array(path + ":old").tolist() == OLD
    with pytest.raises(InputError, match=r"several columns could hold the predictions "
                                         r"\(y, old, p0, p1\)"):
        read_array(path)
    scores = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({"p0": [0.5] * 10, "p1": [0.1] * 10}), scores)
    assert read_array(scores).shape == (10, 2)
    named = str(tmp_path / "c.parquet")
    pq.write_table(pa.table({"c": pa.array(["b", "a"]).dictionary_encode()}), named)
    assert read_array(named).tolist() == ["b", "a"]
    lists = str(tmp_path / "l.parquet")
    pq.write_table(pa.table({"scores": [[0.1, 0.9], [0.7, 0.3]]}), lists)
    np.testing.assert_array_equal(read_array(lists), [[0.1, 0.9], [0.7, 0.3]])


def test_split_spec_only_splits_known_suffixes(tmp_path):
    assert split_spec("x.parquet:col") == ("x.parquet", "col")
    assert split_spec("weird:name") == ("weird:name", None)
    odd = _write(tmp_path / "a.csv:1", "1\n")  # an existing file wins over the column syntax
    assert split_spec(odd) == (odd, None)


@pytest.mark.parametrize("name, content, match", [
    ("missing.npy", None, "no such file"),
    ("empty.csv", "", "file is empty"),
    ("blank.csv", "\n\n", "column 'column0' has 1 missing values"),
    ("header_only.csv", "label\n", "no data rows"),
    ("ragged.csv", "0,1\n2\n", r"cannot read csv \(Invalid Input Error: Error when sniffing"),
    ("bad.npy", "not really npy", r"cannot read \.npy"),
    ("bad.parquet", "not really parquet", r"cannot read parquet \("),
    ("data.xlsx", "0\n", "unsupported file type"),
])
def test_bad_files_raise_input_error_naming_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        read_array(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_bad_columns_and_parquet_content(tmp_path):
    csv = _write(tmp_path / "c.csv", "old,new\n0,1\n")
    with pytest.raises(InputError, match=r"no column 'x' \(columns: old, new\)"):
        read_array(csv + ":x")
    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"y": [0, None, 1], "name": ["a", "b", "c"]}), path)
    with pytest.raises(InputError, match="column 'y' has 1 missing values"):
        read_array(path + ":y")
    assert read_array(path + ":name").tolist() == ["a", "b", "c"]  # class names
    with pytest.raises(InputError, match=r"no column 'z' \(columns: y, name\)"):
        read_array(path + ":z")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    assert read_array(str(tmp_path / "s.npy")).tolist() == ["a", "b"]
    np.save(tmp_path / "c.npy", np.array([1 + 2j]))
    with pytest.raises(InputError, match=r"non-numeric content \(dtype complex128\)"):
        read_array(str(tmp_path / "c.npy"))
    (tmp_path / "sub.npy").mkdir()
    with pytest.raises(InputError, match=r"sub\.npy: is a directory, expected a file"):
        read_array(str(tmp_path / "sub.npy"))


def test_read_class_names(tmp_path):
    assert read_class_names(_write(tmp_path / "n.txt", "cat\ndog\n\n")) == ["cat", "dog"]
    assert read_class_names(_write(tmp_path / "n.json", '["cat", "dog"]')) == ["cat", "dog"]
    with pytest.raises(InputError, match="bad.json: expected a JSON list of class names"):
        read_class_names(_write(tmp_path / "bad.json", '{"a": 1}'))
    with pytest.raises(InputError, match=r"e\.txt: file is empty"):
        read_class_names(_write(tmp_path / "e.txt", ""))


def test_write_text_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    write_text_atomic(str(target), "new")
    assert target.read_text() == "new"

    with pytest.raises(TypeError):
        write_text_atomic(str(target), 123)  # write fails midway: the old file stays
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.json"]


def test_terminal_tables_show_metrics_and_worst_classes():
    report = flip_report(Y, OLD, NEW)
    console = Console(file=io.StringIO(), width=120)
    print_flip_report(report, ["cat", "dog", "eel"], console)
    text = console.file.getvalue()
    assert "30.00% [10.78%, 60.32%]" in text
    assert re.search(r"cat\s+│\s+3\s+│\s+1\s+│\s+33\.33%", text)
    assert "BEC" in text and "McNemar p" in text


def test_html_page_embeds_both_plots_and_escapes_text():
    report = flip_report(Y, OLD, NEW)
    page = flip_report_page(report, ["<cat>", "dog", "eel"])
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    assert "&lt;cat&gt;" in page and "<cat>" not in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_page_composes_several_sections_and_many_classes():
    rng = np.random.default_rng(0)
    y, old, new = (rng.integers(0, 60, 3000) for _ in range(3))
    section = flip_report_section(flip_report(y, old, new), title="v1 -> v2")
    extra = HtmlSection("Retrieval", html_table(["k", "top-1"], [[1, 0.5]]))
    page = render_html_page("upgrade", [section, extra])
    assert page.index("v1 -&gt; v2") < page.index("<h2>Retrieval</h2>")
    assert page.count("data:image/png;base64,") == 2


def test_plot_legends_sit_beside_the_axes_and_hide_no_bar():
    from regfree.reporting.plots import plot_backfill_curves, plot_per_class_nfr
    from regfree.retrieval import BackfillCurve

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 400)
    old = np.where(rng.random(400) < 0.9, y, (y + 1) % 8)
    new = np.where(rng.random(400) < 0.8, y, (y + 2) % 8)
    curve = BackfillCurve(np.array([0.0, 0.5, 1.0]),
                          {"random": {"top1": np.array([0.2, 0.6, 0.9])}})
    for fig in (plot_per_class_nfr(flip_report(y, old, new)), plot_backfill_curves(curve)):
        fig.canvas.draw()
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend().get_window_extent(renderer)
        plot_area = ax.get_window_extent(renderer)
        assert legend.x0 >= plot_area.x1  # entirely to the right of the plotting area
        assert legend.x1 <= fig.bbox.x1 + 1  # and still inside the figure
