"""The trainer: cross-entropy plus pluggable loss terms, validation flips against v1, checkpoints,
exact resume, and the same numbers under ``torchrun`` as in one process.

:func:`fit` checks its inputs and gathers its options into one :class:`FitOptions`; the data
feeds live in :mod:`regfree.training.feeds`, validation in :mod:`regfree.training.validation`
and the epoch loop in :mod:`regfree.training.loop`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from regfree.training.data import BatchSource, TrainData
from regfree.training.distributed import setup_process
from regfree.training.feeds import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_BATCH_SIZE,
    LoaderFeed,
    SourceFeed,
    check_distributed,
    open_data,
)
from regfree.training.history import History
from regfree.training.loaders import is_iterable_loader
from regfree.training.loop import FitData, term_name, train
from regfree.training.nfr_watch import NFRRiseWarning
from regfree.training.options import FitOptions, OptimizerSpec, SchedulerFactory
from regfree.training.steps import LossTerm, as_loss_term
from regfree.training.validation import ValSet

__all__ = ["FitOptions", "NFRRiseWarning", "fit"]


def fit(
    model: nn.Module,
    train_data: TrainData,
    *,
    loss_terms: Iterable[LossTerm] = (),
    epochs: int,
    optimizer: OptimizerSpec,
    device: Union[str, torch.device] = "cpu",
    batch_size: Optional[int] = None,
    val_data: Optional[TrainData] = None,
    old_val_preds: Optional[Any] = None,
    seed: int = 0,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    progress: bool = True,
    scheduler: Optional[SchedulerFactory] = None,
    eval_batch_size: Optional[int] = None,
    max_grad_norm: Optional[float] = None,
    amp: bool = False,
    shuffle: Optional[bool] = None,
    num_workers: Optional[int] = None,
    label_key: Optional[str] = None,
    nfr_warning: str = "once",
    ema_decay: Optional[float] = None,
) -> History:
    """Train ``model`` with cross-entropy plus ``loss_terms``; report validation flips each epoch.

    Each step minimises ``CE(logits, y) + sum of loss_terms``. regfree's losses are called on
    tensors like any torch loss; ``fit`` reads their arguments from each step through one
    adapter, :class:`~regfree.training.StepTerm`. Any other term is a callable on a
    :class:`~regfree.training.TrainStep` (inputs, targets, dataset ``indices`` on CPU, the
    model's ``logits`` and, when the model returns them, ``embeddings``) returning a scalar
    tensor. Terms that are ``nn.Module`` s are moved to ``device`` and their trainable
    parameters are optimised with the model's (and averaged across processes). The model is
    trained in place and left in eval mode.

    Data: ``train_data`` and ``val_data`` may be ``(x, y)`` arrays, a map-style Dataset, an
    ``IterableDataset`` or a ``DataLoader``. A batch (or a Dataset item) is an ``(inputs,
    labels)`` pair or a mapping whose labels sit under ``"label"`` / ``"labels"`` (or
    ``label_key``) and whose other entries are the inputs, passed to the model as keyword
    arguments (HuggingFace style). Inputs move to ``device``; floating-point inputs take the
    model's dtype (a bfloat16 or float64 model trains on float32 data). The model may return
    logits, ``(logits, embeddings)``, a mapping with ``"logits"`` or an object with ``.logits``.

    A DataLoader is used as given: its batch size, sampler, collate function and workers. Passing
    ``batch_size``, ``shuffle`` or ``num_workers`` (``eval_batch_size`` for ``val_data``) that the
    loader contradicts is refused; leave them unset. Each batch's dataset positions are drawn from
    the loader's own sampler, so terms keyed by sample index (an ``OldLogitCache``) still work.
    An ``IterableDataset`` is read in the order it yields (wrapped in a DataLoader with
    ``batch_size`` and ``num_workers``; ``shuffle=True`` is refused). Its samples have no
    position: ``step.indices`` is None, and a term that needs it fails with a ValueError asking
    for a map-style dataset. Validation puts a DataLoader's predictions back in dataset order, so
    ``val_error`` and ``val_nfr`` do not depend on its shuffling and ``old_val_preds`` is in
    dataset order; an IterableDataset's are taken in the order it yields.

    Under ``torchrun --nproc_per_node N`` fit runs unchanged: the process group is joined from
    the environment (gloo on CPU, nccl on CUDA, which becomes ``cuda:LOCAL_RANK``) and the model
    is wrapped in DistributedDataParallel. With arrays or a Dataset each process takes a
    contiguous slice of every global batch of ``batch_size`` samples, weighted by its share, so
    gradients, weights and validation numbers equal a one-process run to float tolerance
    (exactly so when loss terms are per-sample means and the model has no batch-coupled layers
    such as BatchNorm). A training DataLoader must split the data with a ``DistributedSampler``
    (fit calls its ``set_epoch``; the gradient is the mean of the processes' batch means); one
    without, or an IterableDataset, is refused. A validation DataLoader with a
    ``DistributedSampler`` is evaluated in shares and gathered, any other by every process. Only
    rank 0 writes checkpoints and shows progress; every rank returns the same history.

    Determinism: with arrays or a Dataset the sample order of epoch ``e`` is a function of
    ``(seed, e)``; torch's global generator is reseeded from ``(seed, e, rank)`` at each epoch
    inside a forked RNG state (the caller's RNG state is left unchanged), which drives dropout
    and the shuffling of a DataLoader built without a ``generator``. A loader's own generators
    (its ``generator=``, its sampler's) are the caller's: their state is saved in checkpoints
    and restored by ``resume``, so a resumed run equals an uninterrupted one (except where an
    IterableDataset draws from random state of its own).
    Model initialisation is the caller's: seed before building the model.

    Weight averaging: with ``ema_decay`` fit keeps an exponential moving average of the
    model's weights and buffers (``torch.optim.swa_utils.AveragedModel``), moved after every
    optimizer step: ``avg <- ema_decay * avg + (1 - ema_decay) * weights``, the first step's
    weights taken as they are. Each epoch's validation (and the NFR warning) uses the averaged
    weights, the model ends holding them, and checkpoints store the average beside the raw
    weights, so a resumed run equals an uninterrupted one. The average spans about
    ``1 / (1 - ema_decay)`` steps: choose it against the steps per epoch (0.998 averages some 500
    steps). Under ``torchrun`` every process holds rank 0's average.

    Args:
        model: an ``nn.Module`` (outputs as described above).
        train_data: ``(x, y)`` arrays/tensors (sliced per batch, fastest), a map-style Dataset
            (read item by item, see ``num_workers``, collated with ``default_collate``), an
            IterableDataset or a DataLoader (see Data).
        loss_terms: regfree losses (``BackwardCompatibleLoss``, ``DistillationTerm``, ...) or
            step terms following :class:`~regfree.training.LossTerm`; unique ``name`` s
            (not ``"ce"``) label their per-epoch means in the history.
        epochs: total number of epochs (with ``resume``, including those already done).
        optimizer: preferably a factory ``params -> Optimizer`` such as
            ``lambda params: torch.optim.Adam(params, lr=1e-3)``; it receives the trainable
            parameters of the model and of module loss terms. A ready ``torch.optim.Optimizer``
            over the model's parameters also works (resume restores its state either way).
        device: ``"cpu"``, ``"cuda"``, or a ``torch.device``.
        batch_size: global batch size (split across processes); default 128, or the
            DataLoader's.
        val_data: validation data in any of the forms of ``train_data``; enables ``val_error``.
        old_val_preds: v1's predicted classes on ``val_data``, in dataset order (length
            ``len(val_data)``, or of the dataset a DataLoader reads); enables ``val_nfr`` /
            ``val_pfr`` per epoch and the :class:`NFRRiseWarning` that fires when an epoch's
            negative flips rise above the best epoch's by more than noise explains (one-sided
            exact McNemar p < 0.01 on the paired flips).
        seed: governs shuffling and random layers (see Determinism).
        checkpoint_dir: when given, rank 0 writes ``epoch_NNNN.pt`` after every epoch (atomic
            rename) holding model, optimizer, scheduler, trainable loss-term state, the
            loader's generator states, history and, with ``ema_decay``, the averaged model
            (``"averaged_model"``: an ``AveragedModel`` state dict, weights under ``module.``).
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (start fresh when
            there is none); the result equals an uninterrupted run. Seed, batch size and training
            set size must match the checkpoint.
        progress: show tqdm bars, over epochs and over each epoch's batches (rank 0 only;
            ``TQDM_DISABLE=1`` turns them off too).
        scheduler: optional factory ``optimizer -> LR scheduler``, stepped once per epoch.
        eval_batch_size: batch size for validation forward passes; default 1024, or the
            DataLoader's.
        max_grad_norm: clip the gradient norm to this value when given.
        amp: autocast (float16 + GradScaler on CUDA, bfloat16 on CPU).
        shuffle: shuffle the training order each epoch (default True; a DataLoader's sampler
            decides for itself).
        num_workers: DataLoader worker processes that read Dataset items (training and
            validation) ahead of the step; default 0 (read in the training process), or the
            DataLoader's. Batches and their order are the same either way; random transforms
            inside the Dataset draw from per-worker seeds (derived from the epoch's seed), so
            they differ from ``num_workers=0`` while staying reproducible. Arrays are always
            sliced in process. An IterableDataset read by several workers yields its samples
            once per worker unless it splits them itself (``get_worker_info``).
        label_key: the mapping key of the labels in dict batches (default ``"label"`` or
            ``"labels"``).
        nfr_warning: ``"once"`` (default): the first significant NFR rise of the run warns;
            ``"every"``: every epoch significantly above the best epoch warns; ``"off"``: none.
        ema_decay: keep an exponential moving average of the weights with this decay per
            step, in (0, 1), and return it (see Weight averaging); None (default): the last
            step's weights.

    Returns:
        :class:`~regfree.training.History` with one :class:`~regfree.training.EpochStats` per
        epoch (train loss, CE, each term's mean, val error, val NFR/PFR, lr, seconds).

    Example:
        >>> import numpy as np, torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from regfree.models import MLP
        >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int64")
        >>> _ = torch.manual_seed(0)
        >>> h = fit(MLP(8, num_classes=2, hidden=16), (x, y), epochs=2, batch_size=16,
        ...         optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), val_data=(x, y),
        ...         old_val_preds=np.zeros(64, dtype="int64"), progress=False)
        >>> len(h), h.val_nfr[-1] is not None
        (2, True)

        With ``ema_decay`` the model ends holding the moving average of its weights:

        >>> h = fit(MLP(8, num_classes=2, hidden=16), (x, y), epochs=2, batch_size=16,
        ...         optimizer=lambda p: torch.optim.Adam(p, lr=1e-2), ema_decay=0.9,
        ...         progress=False)
        >>> len(h)
        2

        A DataLoader of dict batches, used as given (its batch size and shuffling):

        >>> class Named(torch.utils.data.Dataset):
        ...     def __len__(self): return len(y)
        ...     def __getitem__(self, i): return {"x": torch.from_numpy(x[i]), "label": int(y[i])}
        >>> class Net(torch.nn.Module):  # takes its inputs by keyword, like HuggingFace models
        ...     def __init__(self): super().__init__(); self.mlp = MLP(8, num_classes=2)
        ...     def forward(self, x): return self.mlp(x)
        >>> loader = DataLoader(Named(), batch_size=16, shuffle=True)
        >>> h = fit(Net(), loader, epochs=2, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
        ...         val_data=loader, old_val_preds=np.zeros(64, dtype="int64"), progress=False)
        >>> len(h), 0 <= h.val_nfr[-1] <= 1
        (2, True)
    """
    options = FitOptions(
        epochs=epochs, optimizer=optimizer,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, scheduler=scheduler,
        eval_batch_size=DEFAULT_EVAL_BATCH_SIZE if eval_batch_size is None else eval_batch_size,
        max_grad_norm=max_grad_norm, amp=amp, shuffle=True if shuffle is None else shuffle,
        num_workers=0 if num_workers is None else num_workers, nfr_warning=nfr_warning,
        ema_decay=ema_decay)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if label_key is not None and not isinstance(label_key, str):
        raise TypeError(f"label_key must be a string (the key of the labels in dict batches) "
                        f"or None, got {type(label_key).__name__}")
    explicit = {"batch_size": batch_size, "eval_batch_size": eval_batch_size,
                "shuffle": shuffle, "num_workers": num_workers}
    data, options = _fit_data(train_data, val_data, old_val_preds, loss_terms, options,
                              explicit, label_key)
    ctx = setup_process(device)
    rng_devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    try:
        if isinstance(data.train, LoaderFeed):
            check_distributed(data.train.loader, "train_data", ctx.world_size)
        with torch.random.fork_rng(devices=rng_devices):
            return train(model, data, ctx, options)
    finally:
        ctx.close()


def _fit_data(train_data: TrainData, val_data: Optional[TrainData], old_val_preds: Optional[Any],
              loss_terms: Iterable[LossTerm], options: FitOptions, explicit: dict[str, Any],
              label_key: Optional[str]) -> tuple[FitData, FitOptions]:
    """The checked data of one fit call, and ``options`` with a DataLoader's batch size."""
    terms = _check_terms(loss_terms)
    train_source = open_data(train_data, "train_data", batch_size=explicit["batch_size"],
                             shuffle=explicit["shuffle"], num_workers=explicit["num_workers"],
                             label_key=label_key)
    feed: Union[SourceFeed, LoaderFeed]
    if isinstance(train_source, DataLoader):
        feed = LoaderFeed(train_source, label_key=label_key, name="train_data")
        options = dataclasses.replace(options, batch_size=feed.batch_size)
    else:
        feed = SourceFeed(train_source, batch_size=options.batch_size, shuffle=options.shuffle,
                          num_workers=options.num_workers, seed=options.seed)
    val = None
    if val_data is not None:
        val = _val_set(val_data, old_val_preds, options, explicit, label_key)
    elif old_val_preds is not None:
        raise ValueError("old_val_preds needs val_data")
    return FitData(feed, val, terms), options


def _val_set(val_data: TrainData, old_val_preds: Optional[Any], options: FitOptions,
             explicit: dict[str, Any], label_key: Optional[str]) -> ValSet:
    source = open_data(val_data, "val_data", batch_size=explicit["eval_batch_size"],
                       shuffle=None, num_workers=explicit["num_workers"], label_key=label_key,
                       batch_option="eval_batch_size")
    labels, expected = None, None
    if isinstance(source, BatchSource):
        labels = _labels(source, options.eval_batch_size)
        expected = f"val_data has {len(labels)} samples"
        size: Optional[int] = len(labels)
    elif not is_iterable_loader(source):
        size = len(source.dataset)  # type: ignore[arg-type]
        expected = (f"val_data's dataset has {size} samples (old_val_preds is in dataset "
                    "order, whatever the loader's order)")
    else:
        size = None  # an IterableDataset: checked on the first validation pass
    old_preds = None
    if old_val_preds is not None:
        old_preds = np.asarray(torch.as_tensor(old_val_preds).cpu()).astype(np.int64).ravel()
        if size is not None and len(old_preds) != size:
            raise ValueError(f"old_val_preds has {len(old_preds)} entries but {expected}")
    return ValSet(source, labels, old_preds, label_key=label_key,
                  batch_size=options.eval_batch_size, num_workers=options.num_workers)


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
