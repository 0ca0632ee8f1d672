"""``regfree demo``: train v1 and three v2s on mnist1d, report flips and retrieval."""

from __future__ import annotations

import argparse

from regfree.cli.common import CliError, share

_DEMO_HELP = {
    "samples": "mnist1d samples generated offline (train + test)",
    "old_fraction": "share of the training split v1 is trained on",
    "old_width": "v1's convolution channels",
    "new_width": "v2's convolution channels",
    "embedding_dim": "embedding size of both models",
    "old_epochs": "v1's training epochs",
    "new_epochs": "each v2's training epochs",
    "batch_size": "training batch size",
    "lr": "Adam learning rate (cosine schedule)",
    "bct_weight": "weight of the backward-compatible influence loss",
    "adapter_pairs": "share of the gallery re-embedded by v2 to fit the post-hoc adapters",
    "blend_max_error_increase": "error (a share) the post-hoc blend may add over plain v2",
    "max_nfr": "exit 1 when a v2's NFR is above this share",
    "seed": "seed of training (data is fixed)",
    "output": "folder for the HTML reports, plot and summary.json",
}


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from regfree.demo import DemoConfig

    parser = subparsers.add_parser(
        "demo", help="train v1 and three v2s on mnist1d and report flips and retrieval",
        description="Train v1, then v2 three ways (plain, positive-congruent, backward-"
                    "compatible + positive-congruent) on mnist1d generated offline; print "
                    "error, NFR, McNemar p and retrieval against v1's FAISS gallery with no "
                    "backfill; add the post-hoc path for plain v2 (embedding adapters and a "
                    "score blend, no retraining); write HTML reports and a plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in fields(DemoConfig):
        if field.name == "progress":
            continue
        kind = {"max_nfr": share}.get(field.name, type(field.default))
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind,
                            default=field.default, help=_DEMO_HELP[field.name])
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from regfree.demo import DemoConfig

    values = {f.name: getattr(args, f.name) for f in fields(DemoConfig) if f.name != "progress"}
    try:
        config = DemoConfig(**values, progress=not args.no_progress)
        config.validate()
    except ValueError as err:
        raise CliError(str(err)) from None
    from regfree.demo.run import main as demo_main  # torch: only once the knobs are valid

    return demo_main(config)
