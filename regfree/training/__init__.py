"""The one trainer the package shares (positive-congruent and backward-compatible training
plug their loss terms into it)."""

from regfree.training.steps import LossTerm, TrainStep, split_outputs

__all__ = ["LossTerm", "TrainStep", "split_outputs"]
