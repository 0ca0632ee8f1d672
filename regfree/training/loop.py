"""The epoch loop behind :func:`regfree.training.fit`: steps, validation, checkpoints, resume."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regfree.metrics import error_rate, flip_totals
from regfree.progress import progress_bar
from regfree.training.averaging import WeightAverage, start_average
from regfree.training.batches import call_model, model_dtype, to_model
from regfree.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from regfree.training.distributed import ProcessContext
from regfree.training.feeds import Feed
from regfree.training.history import EpochStats, History
from regfree.training.nfr_watch import NFRRiseWarning, NFRWatch
from regfree.training.options import FitOptions, OptimizerSpec
from regfree.training.steps import LossTerm, TrainStep, split_outputs
from regfree.training.validation import ValSet, autocast


def term_name(term: Any) -> str:
    """The label of a loss term in the history: its ``name``, else its class name."""
    return str(getattr(term, "name", None) or type(term).__name__)


@dataclass
class FitData:
    """What :func:`fit` trains and validates on, checked and ready for the loop."""

    train: Feed
    val: Optional[ValSet]
    terms: list[LossTerm]


class _Objective(nn.Module):
    """Model + loss terms as one module, so DDP reduces the gradients of trainable loss-term
    parameters (e.g. a learned projection) together with the model's."""

    def __init__(self, model: nn.Module, terms: Sequence[LossTerm]) -> None:
        super().__init__()
        self.model = model
        self.term_modules = nn.ModuleList([t for t in terms if isinstance(t, nn.Module)])
        self.terms = list(terms)
        self.names = [term_name(t) for t in terms]

    def forward(self, inputs: Any, targets: torch.Tensor, indices: Optional[torch.Tensor],
                epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        logits, embeddings = split_outputs(call_model(self.model, inputs))
        ce = F.cross_entropy(logits.float(), targets)
        step = TrainStep(inputs, targets, indices, logits, embeddings,
                         epoch=epoch, model=self.model)
        values = []
        for name, term in zip(self.names, self.terms):
            value = _call_term(name, term, step)
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                raise ValueError(f"loss term {name!r} must return a scalar tensor, "
                                 f"got {type(value).__name__} {getattr(value, 'shape', '')}")
            values.append(value.float())
        total = ce + sum(values) if values else ce
        return total, ce, values

    def checkpointed_term_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """State of the terms that change in training: trainable parameters, or a module that
        says it ``carries_state`` (e.g. a TemporalEnsemble's per-sample averages)."""
        return {name: term.state_dict() for name, term in zip(self.names, self.terms)
                if isinstance(term, nn.Module)
                and (any(p.requires_grad for p in term.parameters())
                     or any(getattr(m, "carries_state", False) for m in term.modules()))}


def _call_term(name: str, term: LossTerm, step: TrainStep) -> Any:
    if step.indices is not None:
        return term(step)
    try:
        return term(step)
    except (TypeError, AttributeError, IndexError, ValueError) as error:
        raise ValueError(
            f"loss term {name!r} failed on a batch without sample positions ({error}): "
            "train_data is an IterableDataset (or a DataLoader over one), whose samples have "
            "no dataset index, so step.indices is None; a term keyed by sample index (an "
            "OldLogitCache, stored old embeddings) needs a map-style Dataset (or a DataLoader "
            "over one)") from error


@dataclass
class _Session:
    """The state one training run carries from epoch to epoch."""

    model: nn.Module
    objective: _Objective
    runner: nn.Module  # the objective, wrapped in DDP under several processes
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Optional[torch.amp.GradScaler]
    ctx: ProcessContext
    options: FitOptions
    history: History
    average: Optional[WeightAverage] = None  # fit's ema_decay
    start: int = 0  # first epoch to run (after a resume, the epochs already done)


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


def _start(model: nn.Module, terms: list[LossTerm], ctx: ProcessContext,
           options: FitOptions) -> _Session:
    objective = _Objective(model, terms).to(ctx.device)
    opt = _build_optimizer(options.optimizer, objective)
    sched = options.scheduler(opt) if options.scheduler is not None else None
    cuda_amp = options.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda_amp else None
    runner: nn.Module = objective
    if ctx.distributed:
        ids = [ctx.device] if ctx.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    return _Session(model, objective, runner, opt, sched, scaler, ctx, options, History(),
                    start_average(model, options.ema_decay))


def _restore(session: _Session, feed: Feed) -> None:
    """Load the latest checkpoint of ``checkpoint_dir`` into the session (none: start fresh)."""
    found = latest_checkpoint(session.options.checkpoint_dir)  # type: ignore[arg-type]
    if found is None:
        return
    state = load_checkpoint(found, map_location=session.ctx.device)
    for key, value in session.options.resume_key(feed.num_samples).items():
        if state["config"].get(key) != value:
            raise ValueError(f"resume: {found} was trained with {key}="
                             f"{state['config'].get(key)!r}, this call has {value!r}")
    session.model.load_state_dict(state["model"])
    objective = session.objective
    for name, term_state in state["loss_terms"].items():
        objective.terms[objective.names.index(name)].load_state_dict(term_state)
    session.opt.load_state_dict(state["optimizer"])
    if session.sched is not None and state.get("scheduler") is not None:
        session.sched.load_state_dict(state["scheduler"])
    if session.scaler is not None and state.get("scaler") is not None:
        session.scaler.load_state_dict(state["scaler"])
    if session.average is not None:
        session.average.load_state_dict(state["averaged_model"])
    generators = feed.generators()
    if len(state.get("loader_rng", [])) == len(generators):
        for gen, rng_state in zip(generators, state.get("loader_rng", [])):
            gen.set_state(rng_state.cpu())
    session.history = History.from_dict(state["history"])
    session.start = int(state["epoch"])


def _run_epoch(session: _Session, feed: Feed, epoch: int) -> list[float]:
    """One pass over ``feed``; returns the mean total loss, CE and each term's mean."""
    ctx, options, opt, scaler = session.ctx, session.options, session.opt, session.scaler
    # a DataLoader without a generator of its own shuffles from this seed too
    torch.manual_seed(_derived_seed(options.seed, epoch, ctx.rank, 1))
    session.objective.train()
    dtype = model_dtype(session.model)
    sums = torch.zeros(2 + len(session.objective.names), dtype=torch.float64, device=ctx.device)
    count = 0
    batches = progress_bar(feed.epoch(epoch, ctx), total=feed.num_batches(), unit="batch",
                           desc=f"epoch {epoch + 1}/{options.epochs}", leave=False,
                           enabled=options.progress and ctx.is_main)
    for batch in batches:
        inputs = to_model(batch.inputs, ctx.device, dtype, non_blocking=True)
        targets = batch.targets.to(ctx.device, non_blocking=True)
        with autocast(ctx.device, options.amp):
            total, ce, values = session.runner(inputs, targets, batch.indices, epoch)
        # weight by this process's share so DDP's gradient average is the global-batch mean
        scaled = total * (batch.share * ctx.world_size)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(scaled).backward()
            scaler.unscale_(opt)
        else:
            scaled.backward()
        if options.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(session.objective.parameters(), options.max_grad_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if session.average is not None:
            session.average.update(session.model)
        count += batch.count
        sums += torch.stack([total.detach(), ce.detach(), *[v.detach() for v in values]]
                            ).double() * batch.count
    batches.close()
    if session.sched is not None:
        session.sched.step()
    *totals, samples = ctx.sum([*sums.tolist(), float(count)])
    if samples == 0:
        raise ValueError("train_data yielded no samples in an epoch")
    return [s / samples for s in totals]


def _validate(session: _Session, data: FitData
              ) -> tuple[Optional[float], Optional[float], Optional[float], Optional[np.ndarray]]:
    """Validation error, NFR and PFR against v1 and the per-sample negative flips (None where
    the inputs are missing)."""
    if data.val is None:
        return None, None, None, None
    # with ema_decay, the averaged weights are the ones fit returns, so they are validated
    model = session.model if session.average is None else session.average.model
    model.eval()
    labels, preds, old = data.val.outcomes(model, session.ctx, session.options.amp)
    if old is None:
        return error_rate(labels, preds, validate=False), None, None, None
    totals = flip_totals(labels, old, preds, validate=False)
    flips = (old == labels) & (preds != labels)
    return totals.error_rate_new, totals.nfr, totals.pfr, flips


def _checkpoint(session: _Session, epochs_done: int, feed: Feed) -> None:
    """Rank 0 writes ``epoch_NNNN.pt`` (atomic rename); every rank waits for it."""
    if session.ctx.is_main:
        sched, scaler = session.sched, session.scaler
        save_checkpoint(checkpoint_path(session.options.checkpoint_dir, epochs_done), {
            "epoch": epochs_done, "config": session.options.resume_key(feed.num_samples),
            "model": session.model.state_dict(), "optimizer": session.opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "averaged_model": (session.average.state_dict()
                               if session.average is not None else None),
            "loss_terms": session.objective.checkpointed_term_states(),
            "history": session.history.to_dict(),
            "loader_rng": [gen.get_state() for gen in feed.generators()],
        })
    session.ctx.barrier()


def _postfix(stats: EpochStats) -> dict[str, str]:
    postfix = {"loss": f"{stats.train_loss:.4f}"}
    if stats.val_error is not None:
        postfix["val_err"] = f"{stats.val_error:.2%}"
    if stats.val_nfr is not None:
        postfix["nfr"] = f"{stats.val_nfr:.2%}"
    return postfix


def train(model: nn.Module, data: FitData, ctx: ProcessContext, options: FitOptions) -> History:
    """Run the epochs ``fit`` asked for (after restoring a checkpoint when resuming)."""
    session = _start(model, data.terms, ctx, options)
    if options.resume:
        _restore(session, data.train)
    bar = progress_bar(range(session.start, options.epochs), desc="fit", unit="epoch",
                       initial=session.start, total=options.epochs,
                       enabled=options.progress and ctx.is_main)
    watch = NFRWatch(mode=options.nfr_warning)
    for epoch in bar:
        began = time.perf_counter()
        means = _run_epoch(session, data.train, epoch)
        if session.average is not None:
            session.average.sync(ctx)
        val_error, val_nfr, val_pfr, flips = _validate(session, data)
        stats = EpochStats(epoch=epoch + 1, train_loss=means[0], train_ce=means[1],
                           terms=dict(zip(session.objective.names, means[2:])),
                           val_error=val_error, val_nfr=val_nfr, val_pfr=val_pfr,
                           lr=float(session.opt.param_groups[0]["lr"]),
                           seconds=time.perf_counter() - began)
        session.history.epochs.append(stats)
        alarm = watch.update(epoch + 1, flips) if flips is not None else None
        if ctx.is_main and alarm:
            warnings.warn(alarm, NFRRiseWarning, stacklevel=3)  # 3: the line that called fit
        bar.set_postfix(_postfix(stats))
        if options.checkpoint_dir is not None:
            _checkpoint(session, epoch + 1, data.train)
    bar.close()
    if session.average is not None:
        session.average.copy_to(model)
    model.eval()
    return session.history
