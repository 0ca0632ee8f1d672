"""The trainer: cross-entropy plus pluggable loss terms, validation flips against v1, checkpoints,
exact resume, and the same numbers under ``torchrun`` as in one process.

:func:`fit` checks its inputs and gathers its options into one :class:`FitOptions`; the epoch
loop lives in :mod:`regfree.training.loop`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from regfree.training.data import BatchSource, TrainData
from regfree.training.distributed import setup_process
from regfree.training.history import History
from regfree.training.loop import FitData, term_name, train
from regfree.training.nfr_watch import NFRRiseWarning
from regfree.training.options import FitOptions, OptimizerSpec, SchedulerFactory
from regfree.training.steps import LossTerm, as_loss_term

__all__ = ["FitOptions", "NFRRiseWarning", "fit"]


def fit(
    model: nn.Module,
    train_data: TrainData,
    *,
    loss_terms: Iterable[LossTerm] = (),
    epochs: int,
    optimizer: OptimizerSpec,
    device: Union[str, torch.device] = "cpu",
    batch_size: int = 128,
    val_data: Optional[TrainData] = None,
    old_val_preds: Optional[Any] = None,
    seed: int = 0,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    progress: bool = True,
    scheduler: Optional[SchedulerFactory] = None,
    eval_batch_size: int = 1024,
    max_grad_norm: Optional[float] = None,
    amp: bool = False,
    shuffle: bool = True,
    num_workers: int = 0,
) -> History:
    """Train ``model`` with cross-entropy plus ``loss_terms``; report validation flips each epoch.

    Each step minimises ``CE(logits, y) + sum(term(step) for term in loss_terms)`` where every
    term receives a :class:`~regfree.training.TrainStep` (inputs, targets, dataset ``indices``
    on CPU, the model's ``logits`` and, when the model returns them, ``embeddings``) and returns
    a scalar tensor. Terms that are ``nn.Module`` s are moved to ``device`` and their trainable
    parameters are optimised with the model's (and averaged across processes).

    The model is trained in place and left in eval mode. Runs under ``torchrun --nproc_per_node N`` unchanged: the
    process group is joined from the environment (gloo on CPU, nccl on CUDA, which becomes
    ``cuda:LOCAL_RANK``), the model is wrapped in DistributedDataParallel, each process takes a
    contiguous slice of every global batch of ``batch_size`` samples, and its loss is weighted by
    its share of the batch, so gradients, weights and validation numbers equal a one-process run
    to float tolerance (exactly so when loss terms are per-sample means and the model has no
    batch-coupled layers such as BatchNorm). Only rank 0 writes checkpoints and shows progress;
    every rank returns the same history.

    Determinism: the sample order of epoch ``e`` is a function of ``(seed, e)`` and torch's
    global generator (dropout and other random layers) is reseeded from ``(seed, e, rank)`` at
    each epoch inside a forked RNG state (the caller's RNG state is left unchanged). Model
    initialisation is the caller's: seed before building the model. Same seed, same numbers on CPU.

    Args:
        model: returns logits ``(B, C)``, ``(logits, embeddings)`` or ``{"logits": ...}``.
        train_data: ``(x, y)`` arrays/tensors (sliced per batch, fastest) or a map-style Dataset
            yielding ``(x, y)`` (or ``(x, y, index)``; the index is taken from the sampler),
            read item by item (see ``num_workers``) and collated with ``default_collate``.
        loss_terms: objects following :class:`~regfree.training.LossTerm`; unique ``name`` s
            (not ``"ce"``) label their per-epoch means in the history.
        epochs: total number of epochs (with ``resume``, including those already done).
        optimizer: preferably a factory ``params -> Optimizer`` such as
            ``lambda params: torch.optim.Adam(params, lr=1e-3)``; it receives the trainable
            parameters of the model and of module loss terms. A ready ``torch.optim.Optimizer``
            over the model's parameters also works (resume restores its state either way).
        device: ``"cpu"``, ``"cuda"``, or a ``torch.device``.
        batch_size: global batch size (split across processes).
        val_data: validation ``(x, y)`` or Dataset; enables ``val_error`` per epoch.
        old_val_preds: v1's predicted classes on ``val_data`` (length ``len(val_data)``); enables
            ``val_nfr`` / ``val_pfr`` per epoch and the :class:`NFRRiseWarning` that fires, once
            per run, when an epoch's negative flips rise above the best epoch's by more than
            noise explains (one-sided exact McNemar p < 0.01 on the paired flips).
        seed: governs shuffling and random layers (see Determinism).
        checkpoint_dir: when given, rank 0 writes ``epoch_NNNN.pt`` after every epoch (atomic
            rename) holding model, optimizer, scheduler, trainable loss-term state and history.
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (start fresh when
            there is none); the result equals an uninterrupted run. Seed, batch size and training
            set size must match the checkpoint.
        progress: show a tqdm bar over epochs (rank 0 only).
        scheduler: optional factory ``optimizer -> LR scheduler``, stepped once per epoch.
        eval_batch_size: batch size for validation forward passes.
        max_grad_norm: clip the gradient norm to this value when given.
        amp: autocast (float16 + GradScaler on CUDA, bfloat16 on CPU).
        shuffle: shuffle the training order each epoch.
        num_workers: DataLoader worker processes that read Dataset items (training and
            validation) ahead of the step; 0 reads them in the training process. Batches and
            their order are the same either way; random transforms inside the Dataset draw from
            per-worker seeds (derived from the epoch's seed), so they differ from
            ``num_workers=0`` while staying reproducible. Arrays are always sliced in process.

    Returns:
        :class:`~regfree.training.History` with one :class:`~regfree.training.EpochStats` per
        epoch (train loss, CE, each term's mean, val error, val NFR/PFR, lr, seconds).

    Example:
        >>> import numpy as np, torch
        >>> from regfree.models import MLP
        >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int64")
        >>> _ = torch.manual_seed(0)
        >>> h = fit(MLP(8, num_classes=2, hidden=16), (x, y), epochs=2, batch_size=16,
        ...         optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), val_data=(x, y),
        ...         old_val_preds=np.zeros(64, dtype="int64"), progress=False)
        >>> len(h), h.val_nfr[-1] is not None
        (2, True)
    """
    options = FitOptions(
        epochs=epochs, optimizer=optimizer, batch_size=batch_size, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, scheduler=scheduler,
        eval_batch_size=eval_batch_size, max_grad_norm=max_grad_norm, amp=amp, shuffle=shuffle,
        num_workers=num_workers)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = _fit_data(train_data, val_data, old_val_preds, loss_terms, eval_batch_size)
    ctx = setup_process(device)
    rng_devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            return train(model, data, ctx, options)
    finally:
        ctx.close()


def _fit_data(train_data: TrainData, val_data: Optional[TrainData], old_val_preds: Optional[Any],
              loss_terms: Iterable[LossTerm], eval_batch_size: int) -> FitData:
    terms = _check_terms(loss_terms)
    train_source = BatchSource(train_data, "train_data")
    val = BatchSource(val_data, "val_data") if val_data is not None else None
    val_labels = _labels(val, eval_batch_size) if val is not None else None
    old_preds = None
    if old_val_preds is not None:
        if val_labels is None:
            raise ValueError("old_val_preds needs val_data")
        old_preds = np.asarray(torch.as_tensor(old_val_preds).cpu()).astype(np.int64).ravel()
        if len(old_preds) != len(val_labels):
            raise ValueError(f"old_val_preds has {len(old_preds)} entries but val_data has "
                             f"{len(val_labels)} samples")
    return FitData(train_source, val, val_labels, old_preds, terms)


def _labels(source: BatchSource, chunk: int) -> np.ndarray:
    return np.concatenate([source.fetch(idx)[1].numpy()
                           for idx in np.array_split(np.arange(len(source)),
                                                     max(1, -(-len(source) // chunk)))])


def _check_terms(loss_terms: Iterable[LossTerm]) -> list[LossTerm]:
    # a loss called on tensors (every regfree loss) goes in through the one adapter, StepTerm;
    # any other callable is a step term already
    if isinstance(loss_terms, nn.Module) or callable(loss_terms):
        raise ValueError(f"loss_terms must be a list of losses, got one "
                         f"{type(loss_terms).__name__}: pass loss_terms=[loss]")
    terms = []
    for term in loss_terms:
        if not callable(term):
            raise ValueError(f"loss_terms must hold losses (e.g. BackwardCompatibleLoss, "
                             f"DistillationTerm) or callables step -> scalar tensor, "
                             f"got {type(term).__name__}")
        terms.append(as_loss_term(term))
    names = [term_name(t) for t in terms]
    clashes = sorted({n for n in names if names.count(n) > 1} | ({"ce"} & set(names)))
    if clashes:
        raise ValueError(f"loss_terms need unique names other than 'ce'; clashing: {clashes}")
    return terms
