"""The trainer: cross-entropy plus pluggable loss terms, validation flips against v1, checkpoints,
exact resume, and the same numbers under ``torchrun`` as in one process."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from regfree.metrics import error_rate, flip_totals
from regfree.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from regfree.training.data import (
    BatchSource,
    TrainData,
    check_num_workers,
    epoch_permutation,
    index_blocks,
    local_batches,
    shard_range,
)
from regfree.training.distributed import ProcessContext, setup_process
from regfree.training.history import EpochStats, History, nfr_rose_twice
from regfree.training.steps import LossTerm, TrainStep, split_outputs

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
OptimizerSpec = Union[torch.optim.Optimizer, OptimizerFactory]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class NFRRiseWarning(UserWarning):
    """Validation negative flip rate against v1 rose two epochs in a row."""


def term_name(term: Any) -> str:
    """The label of a loss term in the history: its ``name``, else its class name."""
    return str(getattr(term, "name", None) or type(term).__name__)


class _Objective(nn.Module):
    """Model + loss terms as one module, so DDP reduces the gradients of trainable loss-term
    parameters (e.g. a learned projection) together with the model's."""

    def __init__(self, model: nn.Module, terms: Sequence[LossTerm]) -> None:
        super().__init__()
        self.model = model
        self.term_modules = nn.ModuleList([t for t in terms if isinstance(t, nn.Module)])
        self.terms = list(terms)
        self.names = [term_name(t) for t in terms]

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor,
                epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        logits, embeddings = split_outputs(self.model(inputs))
        ce = F.cross_entropy(logits.float(), targets)
        step = TrainStep(inputs, targets, indices, logits, embeddings, epoch=epoch, model=self.model)
        values = []
        for name, term in zip(self.names, self.terms):
            value = term(step)
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                raise ValueError(f"loss term {name!r} must return a scalar tensor, "
                                 f"got {type(value).__name__} {getattr(value, 'shape', '')}")
            values.append(value.float())
        total = ce + sum(values) if values else ce
        return total, ce, values


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _build_optimizer(optimizer: OptimizerSpec, objective: _Objective) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if not callable(optimizer):
        raise ValueError("optimizer must be a torch.optim.Optimizer or a factory "
                         f"params -> Optimizer, got {type(optimizer).__name__}")
    params = [p for p in objective.parameters() if p.requires_grad]
    built = optimizer(params)
    if not isinstance(built, torch.optim.Optimizer):
        raise ValueError(f"optimizer factory must return a torch.optim.Optimizer, "
                         f"got {type(built).__name__}")
    return built


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _labels(source: BatchSource, chunk: int) -> np.ndarray:
    return np.concatenate([source.fetch(idx)[1].numpy()
                           for idx in np.array_split(np.arange(len(source)),
                                                     max(1, -(-len(source) // chunk)))])


@torch.no_grad()
def _predict_shard(model: nn.Module, source: BatchSource, ctx: ProcessContext, batch_size: int,
                   amp: bool, num_workers: int = 0) -> np.ndarray:
    """Argmax predictions on the whole of ``source``; each process computes its block."""
    shard = shard_range(len(source), ctx.rank, ctx.world_size)
    preds = [np.empty(0, dtype=np.int64)]
    for inputs, _ in source.batches(index_blocks(shard, batch_size), num_workers):
        with _autocast(ctx.device, amp):
            logits, _ = split_outputs(model(inputs.to(ctx.device)))
        preds.append(logits.argmax(dim=1).cpu().numpy())
    return np.concatenate(ctx.gather(np.concatenate(preds)))


def _flip_rates(labels: np.ndarray, new_preds: np.ndarray,
                old_preds: Optional[np.ndarray]) -> tuple[float, Optional[float], Optional[float]]:
    if old_preds is None:
        return error_rate(labels, new_preds, validate=False), None, None
    totals = flip_totals(labels, old_preds, new_preds, validate=False)
    return totals.error_rate_new, totals.nfr, totals.pfr


def _check_terms(loss_terms: Iterable[LossTerm]) -> list[LossTerm]:
    terms = list(loss_terms)
    for term in terms:
        if not callable(term):
            raise ValueError(f"loss_terms must hold callables step -> scalar tensor, "
                             f"got {type(term).__name__}")
    names = [term_name(t) for t in terms]
    clashes = sorted({n for n in names if names.count(n) > 1} | ({"ce"} & set(names)))
    if clashes:
        raise ValueError(f"loss_terms need unique names other than 'ce'; clashing: {clashes}")
    return terms


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
            ``val_nfr`` / ``val_pfr`` per epoch and the :class:`NFRRiseWarning` that fires when
            NFR rises two epochs in a row.
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
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be positive, got {eval_batch_size!r}")
    num_workers = check_num_workers(num_workers)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    terms = _check_terms(loss_terms)
    train = BatchSource(train_data, "train_data")
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

    ctx = setup_process(device)
    rng_devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            return _train(model, train, val, val_labels, old_preds, terms, ctx,
                          epochs=int(epochs), optimizer=optimizer, batch_size=int(batch_size),
                          seed=int(seed), checkpoint_dir=checkpoint_dir, resume=resume,
                          progress=progress, scheduler=scheduler,
                          eval_batch_size=eval_batch_size, max_grad_norm=max_grad_norm,
                          amp=amp, shuffle=shuffle, num_workers=num_workers)
    finally:
        ctx.close()


def _trainable_term_states(objective: _Objective) -> dict[str, dict[str, torch.Tensor]]:
    return {name: term.state_dict() for name, term in zip(objective.names, objective.terms)
            if isinstance(term, nn.Module) and any(p.requires_grad for p in term.parameters())}


def _train(model: nn.Module, train: BatchSource, val: Optional[BatchSource],
           val_labels: Optional[np.ndarray], old_preds: Optional[np.ndarray],
           terms: list[LossTerm], ctx: ProcessContext, *, epochs: int, optimizer: OptimizerSpec,
           batch_size: int, seed: int, checkpoint_dir: Optional[Union[str, os.PathLike]],
           resume: bool, progress: bool, scheduler: Optional[SchedulerFactory],
           eval_batch_size: int, max_grad_norm: Optional[float], amp: bool,
           shuffle: bool, num_workers: int) -> History:
    objective = _Objective(model, terms).to(ctx.device)
    opt = _build_optimizer(optimizer, objective)
    sched = scheduler(opt) if scheduler is not None else None
    scaler = torch.amp.GradScaler("cuda") if amp and ctx.device.type == "cuda" else None
    runner: nn.Module = objective
    if ctx.distributed:
        ids = [ctx.device] if ctx.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(objective, device_ids=ids)

    config = {"seed": seed, "batch_size": batch_size, "num_samples": len(train)}
    history = History()
    start = 0
    if resume:
        found = latest_checkpoint(checkpoint_dir)  # type: ignore[arg-type]
        if found is not None:
            state = load_checkpoint(found, map_location=ctx.device)
            for key, value in config.items():
                if state["config"].get(key) != value:
                    raise ValueError(f"resume: {found} was trained with {key}="
                                     f"{state['config'].get(key)!r}, this call has {value!r}")
            model.load_state_dict(state["model"])
            for name, term_state in state["loss_terms"].items():
                objective.terms[objective.names.index(name)].load_state_dict(term_state)
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            history = History.from_dict(state["history"])
            start = int(state["epoch"])

    names = objective.names
    pin = ctx.device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    bar = tqdm(range(start, epochs), desc="fit", unit="epoch", initial=start, total=epochs,
               disable=not (progress and ctx.is_main))
    for epoch in bar:
        began = time.perf_counter()
        torch.manual_seed(_derived_seed(seed, epoch, ctx.rank, 1))
        objective.train()
        sums = torch.zeros(2 + len(names), dtype=torch.float64, device=ctx.device)
        order = epoch_permutation(len(train), seed, epoch, shuffle)
        plan = list(local_batches(order, batch_size, ctx.rank, ctx.world_size))
        fetched = train.batches([local for local, _ in plan], num_workers, pin)
        for (local, share), (inputs, targets) in zip(plan, fetched):
            inputs = inputs.to(ctx.device, non_blocking=True)
            targets = targets.to(ctx.device, non_blocking=True)
            indices = torch.from_numpy(np.ascontiguousarray(local, dtype=np.int64))
            with _autocast(ctx.device, amp):
                total, ce, values = runner(inputs, targets, indices, epoch)
            # weight by this process's share so DDP's gradient average is the global-batch mean
            scaled = total * (share * ctx.world_size)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(scaled).backward()
                scaler.unscale_(opt)
            else:
                scaled.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(objective.parameters(), max_grad_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            count = len(local) if share > 0 else 0
            sums += torch.stack([total.detach(), ce.detach(), *[v.detach() for v in values]]
                                ).double() * count
        if sched is not None:
            sched.step()
        means = [s / len(train) for s in ctx.sum(sums.tolist())]

        val_error = val_nfr = val_pfr = None
        if val is not None:
            model.eval()
            preds = _predict_shard(model, val, ctx, eval_batch_size, amp, num_workers)
            val_error, val_nfr, val_pfr = _flip_rates(val_labels, preds, old_preds)  # type: ignore[arg-type]
        stats = EpochStats(epoch=epoch + 1, train_loss=means[0], train_ce=means[1],
                           terms=dict(zip(names, means[2:])), val_error=val_error,
                           val_nfr=val_nfr, val_pfr=val_pfr, lr=float(opt.param_groups[0]["lr"]),
                           seconds=time.perf_counter() - began)
        history.epochs.append(stats)
        if ctx.is_main and nfr_rose_twice(history.val_nfr):
            a, b, c = history.val_nfr[-3:]
            warnings.warn(
                f"validation NFR against v1 rose two epochs in a row ({a:.2%} -> {b:.2%} -> "
                f"{c:.2%} at epoch {epoch + 1}): the new model keeps adding errors where v1 was "
                "right; consider early stopping or a stronger distillation term",
                NFRRiseWarning, stacklevel=3)
        postfix = {"loss": f"{stats.train_loss:.4f}"}
        if val_error is not None:
            postfix["val_err"] = f"{val_error:.2%}"
        if val_nfr is not None:
            postfix["nfr"] = f"{val_nfr:.2%}"
        bar.set_postfix(postfix)

        if checkpoint_dir is not None:
            if ctx.is_main:
                save_checkpoint(checkpoint_path(checkpoint_dir, epoch + 1), {
                    "epoch": epoch + 1, "config": config, "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "loss_terms": _trainable_term_states(objective),
                    "history": history.to_dict(),
                })
            ctx.barrier()
    bar.close()
    model.eval()
    return history
