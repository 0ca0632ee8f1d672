"""The runnable examples in regfree.reporting docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["regfree.reporting", "regfree.reporting.inputs", "regfree.reporting.console",
           "regfree.reporting.html", "regfree.reporting.files"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
