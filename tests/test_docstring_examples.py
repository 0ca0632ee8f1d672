"""Every runnable example in a public docstring of the package runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import regfree

MODULES = sorted(info.name for info in pkgutil.walk_packages(regfree.__path__, "regfree."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_room_shows_an_example():
    rooms = ["regfree.metrics", "regfree.training", "regfree.pctraining", "regfree.compat",
             "regfree.retrieval", "regfree.reporting", "regfree.data", "regfree.upgrade",
             "regfree.models", "regfree.demo"]
    finder = doctest.DocTestFinder()
    missing = [room for room in rooms
               if not any(test.examples for test in finder.find(importlib.import_module(room)))]
    assert not missing, f"rooms without a runnable example: {missing}"
