"""Show flip reports: read input files, print rich tables, compose self-contained HTML pages.

matplotlib is imported only when a page with plots is rendered.

Example:
    >>> from regfree.metrics import flip_report
    >>> from regfree.reporting import flip_report_section, render_html_page
    >>> report = flip_report([0, 1, 1, 2], [0, 1, 1, 2], [0, 2, 1, 2])
    >>> page = render_html_page("v1 -> v2", [flip_report_section(report)])
    >>> page.count("data:image/png;base64,")
    2
"""

from regfree.reporting.console import flip_report_tables, metric_rows, print_flip_report
from regfree.reporting.files import write_text_atomic
from regfree.reporting.html import (
    HtmlSection,
    figure_to_data_uri,
    flip_report_page,
    flip_report_section,
    html_table,
    image_html,
    render_html_page,
)
from regfree.reporting.inputs import InputError, read_array, read_class_names, split_spec

__all__ = [
    "HtmlSection",
    "InputError",
    "figure_to_data_uri",
    "flip_report_page",
    "flip_report_section",
    "flip_report_tables",
    "html_table",
    "image_html",
    "metric_rows",
    "print_flip_report",
    "read_array",
    "read_class_names",
    "render_html_page",
    "split_spec",
    "write_text_atomic",
]
