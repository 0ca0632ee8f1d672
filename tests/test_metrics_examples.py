"""The runnable examples in regfree.metrics docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["regfree.metrics", "regfree.metrics.inputs", "regfree.metrics.flips",
           "regfree.metrics.counts", "regfree.metrics.report", "regfree.metrics.streaming",
           "regfree.metrics.matrix", "regfree.metrics.stats"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
