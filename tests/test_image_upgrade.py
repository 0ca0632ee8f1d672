"""The config-driven real-data run, end to end for one step on tiny generated image folders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "image_upgrade.py"


def _image_folder(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("circle", "square", "stripe")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
            pixels[..., label] += 150  # a colour cue per class
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def _config(tmp_path: Path, **overrides) -> Path:
    _image_folder(tmp_path / "train", per_class=4, seed=0)
    _image_folder(tmp_path / "val", per_class=2, seed=1)
    config = {
        "data": {"train": str(tmp_path / "train"), "test": str(tmp_path / "val"),
                 "layout": "imagefolder", "image_size": 32, "old_fraction": 0.5,
                 "gallery_size": 9},
        "old": {"arch": "resnet18", "embedding_dim": 16, "epochs": 1},
        "new": {"arch": "resnet50", "embedding_dim": 16, "epochs": 1},
        "train": {"batch_size": 12, "lr": 0.01, "amp": False, "device": "cpu",
                  "num_workers": 1},  # exercises the DataLoader-worker path
        "methods": {"plain": {}, "bct+fd": {"fd": {}, "bct": {"weight": 1.0}}},
        "output": {"dir": str(tmp_path / "out"), "progress": False},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_resnet18_to_resnet50_one_step_each_method(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(_config(tmp_path))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["results"]) == ["plain", "bct+fd"]
    for method, result_ in summary["results"].items():
        flips = result_["upgrade"]["flips"]
        assert flips["n"] == 6  # every validation image was scored
        assert result_["upgrade"]["retrieval"]["protocol"]["gallery"] == 9
        assert len(result_["history"]["epochs"]) == 1
        assert (out / f"report_{method}.html").stat().st_size > 1000
    terms = summary["results"]["bct+fd"]["history"]["epochs"][0]["terms"]
    assert set(terms) == {"fd_kl", "bct"} and terms["fd_kl"] > 0 and terms["bct"] > 0
    assert summary["results"]["plain"]["history"]["epochs"][0]["terms"] == {}
    assert "| bct+fd |" in (out / "summary.md").read_text()


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"train": "x", "test": "y", "colour": 1}}))
    result = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "data.colour" in result.stderr and result.stderr.count("\n") == 1
