"""Config-driven upgrade study on local image data: v1 ResNet -> v2 ResNet, plain / FD / BCT.

    python experiments/image_upgrade.py experiments/configs/cifar10_resnet.yaml
    torchrun --nproc_per_node 4 experiments/image_upgrade.py experiments/configs/cifar10_resnet.yaml

Data comes from a local ImageFolder tree or CIFAR-format folder; backbone weights only from
local files (nothing is downloaded). v1 is trained on ``data.old_fraction`` of the training
split (or loaded from ``old.checkpoint``); each method in ``methods`` trains a v2 with the
shared trainer; each v2 is checked against v1 with :func:`regfree.evaluate_upgrade`: negative
flips on the test split, and test queries searching a FAISS gallery of training images that v1
embedded (no backfill). Writes ``summary.md``, ``summary.json`` and one HTML report per method
under ``output``. Under torchrun, training runs on every process; caching and evaluation on
rank 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Subset

from regfree.compat import BackwardCompatibleLoss
from regfree.data.images import dataset_labels, load_image_dataset
from regfree.models import build_model
from regfree.pctraining import DistillationTerm, FocalDistillationLoss, OldLogitCache
from regfree.reporting import write_text_atomic
from regfree.training import fit
from regfree.training.distributed import ProcessContext, setup_process
from regfree.upgrade import evaluate_upgrade

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"train": None, "test": None, "layout": "auto", "image_size": 224,
             "old_fraction": 1 / 3, "gallery_size": 5000, "query_size": None},
    "old": {"arch": "resnet18", "weights": None, "checkpoint": None, "embedding_dim": 128,
            "epochs": 10},
    "new": {"arch": "resnet50", "weights": None, "embedding_dim": 128, "epochs": 10},
    "train": {"batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
              "weight_decay": 5e-4, "amp": True, "device": "auto", "seed": 0,
              "num_workers": 4},
    "methods": {"plain": {}, "fd": {"fd": {}}, "bct": {"bct": {"weight": 1.0}}},
    "evaluation": {"max_nfr": None, "batch_size": 256},
    "output": {"dir": "experiments/output/image_upgrade", "progress": True},
}
METHOD_TERMS = ("fd", "bct")


def load_config(path: str) -> dict[str, dict[str, Any]]:
    """Read a YAML config and fill in defaults; raises ValueError naming a bad key."""
    with open(path) as handle:
        given = yaml.safe_load(handle) or {}
    if not isinstance(given, dict):
        raise ValueError(f"{path}: expected a mapping of sections")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {sorted(DEFAULTS)}")
    config: dict[str, dict[str, Any]] = {}
    for section, defaults in DEFAULTS.items():
        values = given.get(section) or {}
        if section == "methods":
            config[section] = values or copy.deepcopy(defaults)
            for name, spec in config[section].items():
                bad = sorted(set(spec or {}) - set(METHOD_TERMS))
                if bad:
                    raise ValueError(f"methods.{name}: unknown term(s) {bad}; use {METHOD_TERMS}")
            continue
        bad = sorted(set(values) - set(defaults))
        if bad:
            raise ValueError(f"{path}: unknown key(s) {[f'{section}.{k}' for k in bad]}")
        config[section] = {**defaults, **values}
    if not config["data"]["train"] or not config["data"]["test"]:
        raise ValueError(f"{path}: data.train and data.test must name local folders")
    return config


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _optimizer(train: dict[str, Any]):
    if train["optimizer"] == "sgd":
        return lambda params: torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                                              weight_decay=train["weight_decay"], nesterov=True)
    if train["optimizer"] == "adamw":
        return lambda params: torch.optim.AdamW(params, lr=train["lr"],
                                                weight_decay=train["weight_decay"])
    raise ValueError(f"train.optimizer must be 'sgd' or 'adamw', got {train['optimizer']!r}")


def _fit(model, data, config, epochs, terms=(), val=None, old_val_preds=None):
    train = config["train"]
    return fit(model, data, loss_terms=list(terms), epochs=epochs,
               optimizer=_optimizer(train), batch_size=train["batch_size"],
               scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
               device=_device(train["device"]), amp=train["amp"] and _device(train["device"]) == "cuda",
               seed=train["seed"], val_data=val, old_val_preds=old_val_preds,
               progress=config["output"]["progress"], num_workers=train["num_workers"])


def _subset(dataset, size, seed):
    if size is None or size >= len(dataset):
        return dataset
    pick = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:size])
    subset = Subset(dataset, pick.tolist())
    subset.targets = dataset_labels(dataset)[pick].tolist()
    return subset


def run(config: dict[str, dict[str, Any]], ctx: ProcessContext) -> dict[str, Any]:
    """Train v1 and every v2 of ``config['methods']``; evaluate; write the outputs. ``ctx``: this
    process (rank, world size) from :func:`~regfree.training.distributed.setup_process`."""
    data_cfg, train_cfg = config["data"], config["train"]
    out = Path(config["output"]["dir"])
    seed = int(train_cfg["seed"])
    device = _device(train_cfg["device"])
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    load = {"layout": data_cfg["layout"], "image_size": data_cfg["image_size"]}
    train_set = load_image_dataset(data_cfg["train"], train=True, **load)
    # v1's cached logits and the gallery use un-augmented images
    train_plain = load_image_dataset(data_cfg["train"], train=False, **load)
    test_set = _subset(load_image_dataset(data_cfg["test"], train=False, **load),
                       data_cfg["query_size"], seed)
    num_classes = len(train_set.classes)
    test_labels = dataset_labels(test_set)

    torch.manual_seed(seed)
    old_cfg = config["old"]
    old = build_model(old_cfg["arch"], num_classes, embedding_dim=old_cfg["embedding_dim"],
                      weights=old_cfg["weights"])
    if old_cfg["checkpoint"]:
        old.load_state_dict(torch.load(old_cfg["checkpoint"], map_location="cpu",
                                       weights_only=True))
    else:
        size = max(1, int(len(train_set) * data_cfg["old_fraction"]))
        _fit(old, _subset(train_set, size, seed), config, old_cfg["epochs"])
        if ctx.is_main:
            torch.save(old.state_dict(), out / "v1.pt")
    old = old.to(device).eval()

    cache_dir = out / "v1_logits"
    if ctx.is_main:
        OldLogitCache.build(old, train_plain, cache_dir, device=device,
                            batch_size=config["evaluation"]["batch_size"])
    ctx.barrier()
    cache = OldLogitCache.open(cache_dir, num_samples=len(train_set), num_classes=num_classes)
    from regfree.upgrade import run_model

    old_val_preds = run_model(old, test_set, device=device, progress=False,
                              num_workers=config["train"]["num_workers"]).logits.argmax(1)
    gallery = _subset(train_plain, data_cfg["gallery_size"], seed + 1)

    if any("bct" in (spec or {}) for spec in config["methods"].values()) and \
            config["new"]["embedding_dim"] != old_cfg["embedding_dim"]:
        raise ValueError("new.embedding_dim must equal old.embedding_dim for the bct method "
                         "(v2 embeddings go through v1's frozen head)")
    rows, results = [], {}
    for method, spec in config["methods"].items():
        spec = spec or {}
        terms = []
        if "fd" in spec:
            terms.append(DistillationTerm(FocalDistillationLoss(**(spec["fd"] or {})),
                                          teacher=cache))
        if "bct" in spec:
            terms.append(BackwardCompatibleLoss(copy.deepcopy(old.head).cpu(),
                                                **(spec["bct"] or {})))
        new_cfg = config["new"]
        torch.manual_seed(seed + 1)  # every method starts from the same v2 initialisation
        new = build_model(new_cfg["arch"], num_classes, embedding_dim=new_cfg["embedding_dim"],
                          weights=new_cfg["weights"], return_embeddings=True)
        began = time.perf_counter()
        history = _fit(new, train_set, config, new_cfg["epochs"], terms, test_set, old_val_preds)
        seconds = time.perf_counter() - began
        if not ctx.is_main:
            continue
        torch.save(new.state_dict(), out / f"v2_{method}.pt")
        report = evaluate_upgrade(old, new.to(device), test_set, gallery=gallery,
                                  max_nfr=config["evaluation"]["max_nfr"],
                                  class_names=train_set.classes, device=device,
                                  batch_size=config["evaluation"]["batch_size"], seed=seed,
                                  progress=config["output"]["progress"],
                                  num_workers=config["train"]["num_workers"])
        report.to_html(str(out / f"report_{method}.html"), title=f"v1 -> v2 ({method})")
        flips, compat = report.flips, report.retrieval
        rows.append(f"| {method} | {flips.error_rate_new:.2%} | {flips.nfr:.2%} "
                    f"[{flips.nfr_ci[0]:.2%}, {flips.nfr_ci[1]:.2%}] | {flips.mcnemar_p:.2g} | "
                    f"{compat.value('v1', 'v1'):.2%} | {compat.value('v2', 'v1'):.2%} | "
                    f"{compat.value('v2', 'v2'):.2%} | {seconds / len(history):.1f} |")
        results[method] = {"upgrade": report.to_dict(), "train_seconds": seconds,
                           "history": history.to_dict(),
                           "passed": report.passed}
    ctx.barrier()
    if ctx.is_main:
        table = ["| v2 method | error | NFR [95% CI] | McNemar p | top-1 v1/v1 | top-1 v2/v1 "
                 "(no backfill) | top-1 v2/v2 | s/epoch |", "|---" * 8 + "|", *rows]
        header = (f"v1 {old_cfg['arch']} (error {np.mean(old_val_preds != test_labels):.2%} on "
                  f"{len(test_labels)} test images) -> v2 {config['new']['arch']}; device "
                  f"{device}, {ctx.world_size} process(es)")
        write_text_atomic(str(out / "summary.md"), header + "\n\n" + "\n".join(table) + "\n")
        write_text_atomic(str(out / "summary.json"), json.dumps(
            {"config": config, "results": results}, indent=2, default=str))
        print(header)
        print("\n".join(table))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config (see experiments/configs/)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"image_upgrade: error: {error}\n")
        return 2
    ctx = setup_process(_device(config["train"]["device"]))  # joins torchrun's group, if any
    try:
        results = run(config, ctx)
    finally:
        ctx.close()
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
