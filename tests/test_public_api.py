"""dir(regfree) lists the public API, every listed name resolves, and `import regfree` stays
cheap: neither dir(regfree) nor `regfree report` imports torch."""

import doctest
import subprocess
import sys
import types

import numpy as np

import regfree


def test_dir_lists_the_rooms_and_the_top_level_api():
    listed = set(dir(regfree))
    assert {"evaluate_upgrade", "UpgradeReport", "__version__"} <= listed
    assert {"metrics", "training", "pctraining", "compat", "retrieval", "reporting", "data",
            "models"} <= listed
    assert not {"importlib", "_NAMES", "_ROOMS"} & listed  # helpers are not API


def test_every_listed_name_resolves_and_every_room_lists_its_own_api():
    for name in regfree.__all__:
        value = getattr(regfree, name)
        if isinstance(value, types.ModuleType):
            missing = [n for n in getattr(value, "__all__", ()) if not hasattr(value, n)]
            assert not missing, f"regfree.{name} lists names it does not have: {missing}"
            assert set(getattr(value, "__all__", ())) <= set(dir(value)), name
    assert callable(regfree.evaluate_upgrade)


def test_the_package_docstring_example_runs():
    assert doctest.testmod(regfree).failed == 0


def test_unknown_names_raise_attribute_error_naming_them():
    try:
        regfree.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "module 'regfree' has no attribute 'no_such_thing'" in str(err)
    else:
        raise AssertionError("regfree.no_such_thing did not raise")


def test_dir_and_the_report_command_do_not_import_torch(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("y", "old", "new"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 3, 50))
    code = ("import sys, regfree; names = dir(regfree); from regfree.cli import main; "
            "rc = main(sys.argv[1:]); assert 'metrics' in names; "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "report", "--labels", "y.npy", "--old",
                             "old.npy", "--new", "new.npy"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "NFR" in result.stdout
