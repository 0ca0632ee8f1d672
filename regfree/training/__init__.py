"""The one trainer the package shares (positive-congruent and backward-compatible training
plug their loss terms into it).

Example:
    >>> import numpy as np, torch
    >>> from regfree.models import MLP
    >>> from regfree.training import fit
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> history = fit(MLP(4, num_classes=2, hidden=8), (x, y), epochs=1, batch_size=8,
    ...               optimizer=lambda p: torch.optim.SGD(p, lr=0.1), progress=False)
    >>> len(history)
    1
"""

from regfree.training.checkpoint import latest_checkpoint, load_checkpoint
from regfree.training.data import IndexedDataset
from regfree.training.fit import NFRRiseWarning, fit
from regfree.training.history import EpochStats, History
from regfree.training.predict import ModelRun, predict_logits, run_model, run_models
from regfree.training.recipes import fit_adam_cosine
from regfree.training.steps import (
    LossTerm,
    StepTerm,
    TensorLoss,
    TrainStep,
    as_loss_term,
    split_outputs,
)

__all__ = [
    "EpochStats",
    "History",
    "IndexedDataset",
    "LossTerm",
    "ModelRun",
    "NFRRiseWarning",
    "StepTerm",
    "TensorLoss",
    "TrainStep",
    "as_loss_term",
    "fit",
    "fit_adam_cosine",
    "latest_checkpoint",
    "load_checkpoint",
    "predict_logits",
    "run_model",
    "run_models",
    "split_outputs",
]
