"""The one supervised trainer: CPU, one GPU or several (torch.distributed).

``Trainer(model, dataset, ...).train()`` minimises ``loss_fn(model, batch)``; by default
``model(*batch)``, the contract of the ensemble heads (``ensemble(X, y)`` is the loss).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from velora_ens._validation import check_bool
from velora_ens.training.allocator import retain_freed_cpu_memory
from velora_ens.training.checkpoint import (
    CHECKPOINT_JSON,
    check_folder,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    state_dict_mismatch,
    unflatten_optimizer_state,
)
from velora_ens.training.dataset import TensorDataset
from velora_ens.training.device import autocast_dtype, select_device
from velora_ens.training.distributed import (
    DistInfo,
    all_gather_tensor,
    all_reduce_mean,
    all_reduce_sum,
    broadcast_from_main,
    close_distributed,
    init_distributed,
    shard_indices,
    shard_range,
)
from velora_ens.training.ema import EMA

__all__ = ["Trainer", "TrainingDivergedError", "lr_factor"]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
Metrics = Callable[[nn.Module, TensorDataset], dict[str, float]]

_OPTIMIZERS = ("adamw", "adam", "sgd")
_SCHEDULES = ("cosine", "constant")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _default_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(*batch)


def lr_factor(step: int, total: int, schedule: str, warmup_steps: int,
              min_lr_ratio: float) -> float:
    """Learning-rate multiplier at ``step`` (0-based): a linear warm-up over
    ``warmup_steps``, then ``"constant"`` 1 or ``"cosine"`` decay from 1 to
    ``min_lr_ratio`` at ``total``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _positive(name: str, value: Any, integer: bool = True, allow_zero: bool = False) -> Any:
    ok_type = (isinstance(value, int) and not isinstance(value, bool)) if integer else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or not (value >= 0 if allow_zero else value > 0) or \
            (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {'>=' if allow_zero else '>'} 0, got {value!r}")
    return value


class Trainer:
    """Train ``model`` on ``dataset``.

    Args:
        model: an ``nn.Module``; with the default ``loss_fn`` calling ``model(*batch)``
            must return the scalar loss (the ensemble heads' contract).
        dataset: a :class:`TensorDataset` (also ``torch.utils.data.TensorDataset``),
            indexed a batch at a time and kept on the GPU when it fits; or any map-style
            ``Dataset`` (read through a ``DataLoader``).
        train_batch_size: batch size **per process**; the global batch is this times the
            number of processes.
        train_lr: peak learning rate.
        train_num_steps: optimizer steps to take (or give ``epochs``).
        epochs: passes over the data (``len(dataset) // global batch`` steps each).
        ema_decay: decay of the exponential moving average of the weights (``None`` or
            0: no EMA). Evaluation uses the EMA weights when there are some.
        amp: mixed precision: bfloat16 autocast on a CUDA GPU (float16 with a gradient
            scaler where bfloat16 is missing) and on the CPU; no effect (a warning) on MPS.
        results_folder: where checkpoints (and TensorBoard logs) go.
        save_every: checkpoint every this many steps (and at the end); 0: only at the end.
        val_dataset: data for :meth:`evaluate`, run every ``eval_every`` steps and at the end.
        metrics: ``metrics(model, val_dataset) -> {name: value}``, called in evaluation
            mode without gradients; default: the mean loss over ``val_dataset``.
        loss_fn: ``loss_fn(model, batch) -> loss``; default ``model(*batch)``.
        batch_transform: applied to each training batch on the device (e.g. augmentation).
        optimizer: ``"adamw"``, ``"adam"``, ``"sgd"`` (Nesterov momentum 0.9) or a callable
            ``f(param_groups) -> torch.optim.Optimizer``.
        param_groups: ``f(model, lr) -> list of groups`` (e.g.
            :func:`velora_ens.ensembles.fast_weight_param_groups`); default one group.
        weight_decay: the optimizer's weight decay.
        adam_betas: Adam's betas.
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr``) or ``"constant"``, after
            ``warmup_steps`` of linear warm-up.
        device: ``None`` (or ``"auto"``) picks CUDA, then MPS, then the CPU; see
            :func:`~velora_ens.training.device.select_device`.
        compile: run the model through ``torch.compile``.
        channels_last: channels-last memory format for 4-D inputs and the model (default:
            on CUDA when the model has a ``Conv2d``).
        data_on_device: ``"auto"`` (when it takes under a quarter of the free GPU memory),
            ``True`` or ``False``.
        seed: seeds the data order and, when given, torch's global generator (plus the
            rank) so that a run repeats exactly on the same machine.
        progress_bar: show a tqdm progress bar (main process only).
        tensorboard: write TensorBoard scalars under ``results_folder/tensorboard``.
        log_every: steps between logged (averaged) losses.
        distributed: ``"auto"`` (torchrun / an initialised group), ``True`` or ``False``.
        resume: continue from the checkpoint in ``results_folder`` when there is one; one
            made with other settings (batch, data, seed, learning-rate schedule, length under
            the cosine schedule, architecture) is refused with a ``ValueError``.
        keep_checkpoints: tensor files kept.
        num_workers: ``DataLoader`` workers for a map-style dataset.
        retain_cpu_memory: on the CPU, keep freed memory in the process so that large
            activations reuse their pages at every step instead of faulting in fresh ones
            (:func:`~velora_ens.training.retain_freed_cpu_memory`, glibc only; the process
            keeps its peak heap until it exits). No effect on a GPU.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: torch.utils.data.Dataset,
        *,
        train_batch_size: int = 32,
        train_lr: float = 1e-3,
        train_num_steps: int | None = None,
        epochs: int | None = None,
        ema_decay: float | None = 0.995,
        ema_update_every: int = 1,
        amp: bool = False,
        results_folder: str | Path = "./results",
        save_every: int = 1000,
        val_dataset: TensorDataset | None = None,
        metrics: Metrics | None = None,
        eval_every: int | None = None,
        loss_fn: LossFn | None = None,
        batch_transform: Callable[[Batch], Batch] | None = None,
        optimizer: str | Callable[[list[dict]], torch.optim.Optimizer] = "adamw",
        param_groups: Callable[[nn.Module, float], list[dict]] | None = None,
        weight_decay: float = 0.0,
        adam_betas: Sequence[float] = (0.9, 0.99),
        grad_clip: float | None = 1.0,
        schedule: str = "cosine",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        device: str | torch.device | None = None,
        compile: bool = False,
        channels_last: bool | None = None,
        data_on_device: bool | str = "auto",
        seed: int | None = None,
        progress_bar: bool = True,
        tensorboard: bool = False,
        log_every: int = 50,
        distributed: bool | str = "auto",
        resume: bool = False,
        keep_checkpoints: int = 2,
        num_workers: int = 0,
        retain_cpu_memory: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        _positive("train_batch_size", train_batch_size)
        _positive("train_lr", train_lr, integer=False)
        if (train_num_steps is None) == (epochs is None):
            raise ValueError(f"give exactly one of train_num_steps and epochs, got "
                             f"train_num_steps={train_num_steps!r}, epochs={epochs!r}")
        if train_num_steps is not None:
            _positive("train_num_steps", train_num_steps)
        if epochs is not None:
            _positive("epochs", epochs)
        if ema_decay is not None and ema_decay != 0 and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) (or None / 0 for no EMA), "
                             f"got {ema_decay!r}")
        _positive("ema_update_every", ema_update_every)
        _positive("save_every", save_every, allow_zero=True)
        _positive("log_every", log_every)
        _positive("warmup_steps", warmup_steps, allow_zero=True)
        _positive("keep_checkpoints", keep_checkpoints)
        if eval_every is not None:
            _positive("eval_every", eval_every)
        if grad_clip is not None:
            _positive("grad_clip", grad_clip, integer=False)
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
        if not callable(optimizer) and optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS} or a callable, "
                             f"got {optimizer!r}")
        if data_on_device not in ("auto", True, False):
            raise ValueError(f"data_on_device must be 'auto', True or False, "
                             f"got {data_on_device!r}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
        check_folder(results_folder, "results_folder")  # before any work, not at the first save

        # --- where we run ---------------------------------------------------------------
        pre = select_device(device) if device is not None else None
        self.dist: DistInfo = init_distributed(
            distributed, (pre or select_device(None)).type)
        self.device = select_device(device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp_dtype = autocast_dtype(self.device) if amp else None
        if amp and self.amp_dtype is None:
            warnings.warn(f"amp=True has no effect on the {self.device.type.upper()} "
                          f"(mixed precision is for CUDA GPUs and the CPU)", stacklevel=2)
        self.seed = 0 if seed is None else int(seed)
        if seed is not None:
            torch.manual_seed(self.seed + self.dist.rank)

        # --- data -------------------------------------------------------------------------
        if isinstance(dataset, torch.utils.data.TensorDataset):
            dataset = TensorDataset(*dataset.tensors)
        if not isinstance(dataset, torch.utils.data.Dataset) or not hasattr(dataset, "__len__"):
            raise ValueError(f"dataset must be a map-style torch Dataset with a length, got "
                             f"{type(dataset).__name__}")
        self.train_batch_size = int(train_batch_size)
        self.global_batch = self.train_batch_size * self.dist.world_size
        n = len(dataset)
        if n < self.global_batch:
            raise ValueError(f"the dataset has {n} rows, fewer than one global batch of "
                             f"{self.global_batch} (train_batch_size {train_batch_size} x "
                             f"{self.dist.world_size} process(es))")
        self.steps_per_epoch = n // self.global_batch
        self.train_num_steps = (int(train_num_steps) if train_num_steps is not None
                                else int(epochs) * self.steps_per_epoch)
        self.dataset = self._place(dataset, data_on_device)
        self.val_dataset = None
        if val_dataset is not None:
            if isinstance(val_dataset, torch.utils.data.TensorDataset):
                val_dataset = TensorDataset(*val_dataset.tensors)
            if not isinstance(val_dataset, TensorDataset):
                raise ValueError(f"val_dataset must be a TensorDataset, got "
                                 f"{type(val_dataset).__name__}")
            self.val_dataset = self._place(val_dataset, data_on_device)
        self.num_workers = _positive("num_workers", num_workers, allow_zero=True)
        self.batch_transform = batch_transform
        self.metrics = metrics
        self.eval_every = eval_every

        # --- model, optimizer, EMA --------------------------------------------------------
        check_bool("retain_cpu_memory", retain_cpu_memory)
        self.retains_cpu_memory = (self.device.type == "cpu" and retain_cpu_memory
                                   and retain_freed_cpu_memory())
        self.model = model.to(self.device)
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = (self.device.type == "cuda" and has_conv
                              if channels_last is None else bool(channels_last))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_lr = float(train_lr)
        groups = (param_groups(self.model, self.train_lr) if param_groups is not None else
                  [{"params": [p for p in self.model.parameters() if p.requires_grad],
                    "lr": self.train_lr}])
        for g in groups:
            g.setdefault("lr", self.train_lr)
            g["base_lr"] = g["lr"]
        if callable(optimizer):
            self.opt = optimizer(groups)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=self.train_lr, momentum=0.9, nesterov=True,
                                       weight_decay=weight_decay)
        else:
            cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
            self.opt = cls(groups, lr=self.train_lr, betas=tuple(adam_betas),
                           weight_decay=weight_decay)
        self.schedule, self.warmup_steps = schedule, int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.grad_clip = grad_clip
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        self.ema_update_every = int(ema_update_every)
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.amp_dtype == torch.float16 else None)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
        self.forward_model = torch.compile(self.ddp_model) if compile else self.ddp_model
        self.loss_fn = loss_fn or _default_loss

        # --- bookkeeping ------------------------------------------------------------------
        self.results_folder = Path(results_folder)
        self.save_every = int(save_every)
        self.keep_checkpoints = int(keep_checkpoints)
        self.progress_bar, self.log_every = bool(progress_bar), int(log_every)
        self.tensorboard = bool(tensorboard)
        self._writer = None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.last_good_checkpoint: int | None = None
        if resume and (self.results_folder / CHECKPOINT_JSON).is_file():
            self.load()

    # --- data ---------------------------------------------------------------------------
    def _place(self, dataset, data_on_device: bool | str):
        if not isinstance(dataset, TensorDataset) or self.device.type == "cpu":
            return dataset
        if data_on_device == "auto":
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                data_on_device = dataset.nbytes < free // 4
            else:
                data_on_device = True
        return dataset.to(self.device) if data_on_device else dataset

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=gen)

    def _batches(self, start_step: int):
        """Yield this rank's batch for each step from ``start_step`` on."""
        step = start_step
        while step < self.train_num_steps:
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = self._epoch_order(epoch)
            stop = min(self.steps_per_epoch, pos + self.train_num_steps - step)
            index_lists = [shard_indices(order[k * self.global_batch:
                                               (k + 1) * self.global_batch], self.dist)
                           for k in range(pos, stop)]
            if isinstance(self.dataset, TensorDataset):
                for idx in index_lists:
                    yield self.dataset.batch(idx.to(self.dataset.tensors[0].device))
            else:
                loader = torch.utils.data.DataLoader(
                    self.dataset, batch_sampler=[i.tolist() for i in index_lists],
                    num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
                for batch in loader:
                    yield tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)
            step += stop - pos

    def _to_device(self, batch: Batch) -> Batch:
        out = []
        for t in batch:
            if isinstance(t, torch.Tensor):
                t = t.to(self.device, non_blocking=True)
                if self.channels_last and t.dim() == 4 and t.is_floating_point():
                    t = t.contiguous(memory_format=torch.channels_last)
            out.append(t)
        return tuple(out)

    # --- training -------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _set_lr(self) -> float:
        f = lr_factor(self.step, self.train_num_steps, self.schedule, self.warmup_steps,
                      self.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.opt.param_groups[0]["lr"]

    def _check_finite(self, finite: torch.Tensor, step: int, what: str = "loss") -> None:
        if not bool(finite):
            where = (f"step {self.last_good_checkpoint} in {self.results_folder}"
                     if self.last_good_checkpoint is not None else "none saved")
            raise TrainingDivergedError(
                f"the training {what} became NaN or infinite at or before step {step}; "
                f"last good checkpoint: {where}. Lower train_lr, enable grad_clip or "
                f"check the data")

    def train(self) -> list[dict[str, float]]:
        """Run until ``train_num_steps``; returns :attr:`history` (logged rows).

        A resumed run that has already reached ``train_num_steps`` trains nothing: it warns
        and returns the history without writing a checkpoint."""
        from tqdm.auto import tqdm

        if self.step >= self.train_num_steps:
            if self.dist.is_main:
                warnings.warn(
                    f"nothing to train: the run in {self.results_folder} is at step "
                    f"{self.step} and train_num_steps={self.train_num_steps}; train() returns "
                    f"the history unchanged. Give a larger train_num_steps (schedule="
                    f"'constant') or another results_folder to train more", stacklevel=2)
            return self.history

        bar = tqdm(total=self.train_num_steps, initial=self.step, dynamic_ncols=True,
                   disable=not (self.progress_bar and self.dist.is_main))
        self.model.train()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        loss_count, t0, step0 = 0, time.perf_counter(), self.step
        try:
            for batch in self._batches(self.step):
                batch = self._to_device(batch)
                if self.batch_transform is not None:
                    batch = self.batch_transform(batch)
                lr = self._set_lr()
                with self._autocast():
                    loss = self.loss_fn(self.forward_model, batch)
                if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)
                    raise ValueError(f"the loss must be a scalar tensor, got {shape}; with the "
                                     f"default loss_fn the model's forward(*batch) must "
                                     f"return the loss")
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.opt)
                else:
                    loss.backward()
                if self.grad_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                    if self.scaler is None:  # the scaler skips steps with inf gradients
                        finite = finite & torch.isfinite(norm)
                        if self.device.type == "cpu":
                            self._check_finite(finite, self.step + 1, "gradient")
                if self.scaler is not None:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.step += 1
                ld = loss.detach().float()
                finite = finite & torch.isfinite(ld)
                loss_sum += torch.nan_to_num(ld)
                loss_count += 1
                if self.device.type == "cpu":
                    self._check_finite(finite, self.step)
                if self.ema is not None and self.step % self.ema_update_every == 0:
                    self.ema.update(self.model)
                bar.update(1)
                last = self.step == self.train_num_steps
                if self.step % self.log_every == 0 or last:
                    self._check_finite(finite, self.step)
                    mean = float(all_reduce_mean(loss_sum / loss_count, self.dist))
                    row = {"step": self.step, "train/loss": mean, "train/lr": lr,
                           "time/steps_per_s": (self.step - step0) /
                           max(time.perf_counter() - t0, 1e-9)}
                    loss_sum.zero_()
                    loss_count = 0
                    if self.eval_every and (self.step % self.eval_every == 0 or last) \
                            and self.val_dataset is not None:
                        row.update({f"val/{k}": v for k, v in self.evaluate().items()})
                    self._log(row)
                    bar.set_postfix(loss=f"{mean:.4g}")
                elif self.eval_every and self.step % self.eval_every == 0 \
                        and self.val_dataset is not None:
                    self._log({"step": self.step,
                               **{f"val/{k}": v for k, v in self.evaluate().items()}})
                if self.save_every and self.step % self.save_every == 0 and not last:
                    self.save()
            if self.val_dataset is not None and not self.eval_every:
                self._log({"step": self.step,
                           **{f"val/{k}": v for k, v in self.evaluate().items()}})
            self.save()
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        return self.history

    def _log(self, row: dict[str, float]) -> None:
        self.history.append(row)
        if not (self.tensorboard and self.dist.is_main):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.results_folder / "tensorboard"))
        for k, v in row.items():
            if k != "step":
                self._writer.add_scalar(k, v, row["step"])

    # --- evaluation -----------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        """The model evaluation uses: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def evaluate(self, dataset: TensorDataset | None = None) -> dict[str, float]:
        """``metrics(eval_model, dataset)`` (default: mean loss) on ``dataset`` or the
        validation data, in evaluation mode.

        Under torch.distributed every process must call it (``train`` does): the default
        mean loss is computed on each rank's share of the rows and summed across ranks;
        a ``metrics`` function (which may not split over rows, e.g. a rank correlation) runs
        on rank 0 only and its result is sent to the others."""
        data = self.val_dataset if dataset is None else dataset
        if data is None:
            raise ValueError("no dataset to evaluate: pass one or give val_dataset")
        model = self.eval_model
        was_training = model.training
        model.eval()
        try:
            if self.metrics is not None:
                out = None
                if self.dist.is_main:
                    with torch.no_grad(), self._autocast():
                        out = self.metrics(model, data)
                    out = {k: float(v) for k, v in out.items()}
                return broadcast_from_main(out, self.dist)
            rows = shard_range(len(data), self.dist)
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for start in range(rows.start, rows.stop, self.train_batch_size):
                idx = torch.arange(start, min(start + self.train_batch_size, rows.stop))
                batch = self._to_device(data.batch(idx.to(data.tensors[0].device)))
                # gradients on: a loss may need them (e.g. FGSM's input gradient)
                with torch.enable_grad(), self._autocast():
                    loss = self.loss_fn(model, batch)
                total += loss.detach().double() * idx.numel()
            return {"loss": float(all_reduce_sum(total, self.dist)) / len(data)}
        finally:
            model.train(was_training)

    def close(self) -> None:
        """Flush TensorBoard and tear down the process group if this trainer started it
        (also done at interpreter exit). ``with Trainer(...) as t:`` calls it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        close_distributed(self.dist)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- checkpoints ----------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"train_batch_size": self.train_batch_size, "world_size": self.dist.world_size,
                "train_lr": self.train_lr, "train_num_steps": self.train_num_steps,
                "seed": self.seed, "schedule": self.schedule,
                "warmup_steps": self.warmup_steps, "min_lr_ratio": self.min_lr_ratio,
                "dataset_len": len(self.dataset), "model": type(self.model).__name__}

    def save(self) -> Path | None:
        """Checkpoint the current step; returns the JSON's path on rank 0, ``None`` on the
        others. Under torch.distributed every process must call it (``train`` does): each
        rank's random state is gathered so that a resumed run continues exactly."""
        rng = {f"rng.torch.rank{r}": s for r, s in
               enumerate(all_gather_tensor(torch.get_rng_state(), self.dist))}
        if self.device.type == "cuda":
            rng.update({f"rng.cuda.rank{r}": s for r, s in enumerate(
                all_gather_tensor(torch.cuda.get_rng_state(self.device), self.dist))})
        if not self.dist.is_main:
            return None
        tensors: dict[str, torch.Tensor] = {
            f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        opt_tensors, opt_meta = flatten_optimizer_state(self.opt.state_dict())
        tensors.update(opt_tensors)
        tensors.update(rng)
        state = {"config": self._config(), "optimizer": opt_meta,
                 "ema_num_updates": self.ema.num_updates if self.ema is not None else None,
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                 "history": self.history}
        path = save_checkpoint(self.results_folder, self.step, tensors, state,
                               keep_last=self.keep_checkpoints)
        self.last_good_checkpoint = self.step
        return path

    @staticmethod
    def _check_same_model(what: str, model: nn.Module, saved: dict[str, torch.Tensor],
                          folder: Path, saved_class: str | None) -> None:
        """One clear line, instead of ``load_state_dict``'s list, when the checkpoint holds
        another architecture: the names and shapes of the tensors must match. A module may
        name, in ``_optional_state_keys``, entries it fills itself when a checkpoint older
        than them lacks them (the NCP networks' ``wiring_seed``)."""
        problems = state_dict_mismatch(model, saved)
        if problems is None:
            return
        made_with = f" (a {saved_class})" if saved_class else ""
        raise ValueError(f"the checkpoint in {folder} holds another architecture{made_with} "
                         f"than this trainer's {what} ({type(model).__name__}): "
                         f"{problems.replace(' in the file,', ' in the checkpoint,')}; resume "
                         f"with the model it was made with, or "
                         f"train this one in another results_folder")

    def load(self, folder: str | Path | None = None) -> int:
        """Restore model, EMA, optimizer, RNG and counters from the checkpoint in
        ``folder`` (default ``results_folder``); returns the step it continues from."""
        folder = Path(folder) if folder is not None else self.results_folder
        tensors, state, step = load_checkpoint(folder)
        cfg = state.get("config")
        if not isinstance(cfg, dict):
            raise ValueError(f"{folder / CHECKPOINT_JSON} has no run configuration (state."
                             f"config); it was not written by Trainer.save")
        mine = self._config()
        # The data order and the learning rate at every step follow from these: resuming
        # with another value would not continue the same run. (min_lr_ratio is absent from
        # checkpoints older than it.)
        for key in ("train_batch_size", "world_size", "dataset_len", "seed", "train_lr",
                    "schedule", "warmup_steps", "min_lr_ratio"):
            if key == "min_lr_ratio" and key not in cfg:
                continue
            if cfg.get(key) != mine[key]:
                raise ValueError(f"the checkpoint in {folder} was made with {key}="
                                 f"{cfg.get(key)!r}, this trainer has {key}={mine[key]!r}; "
                                 f"resuming would not continue the same run")
        saved_steps = cfg.get("train_num_steps")
        if saved_steps != mine["train_num_steps"]:
            if self.schedule != "constant":
                raise ValueError(
                    f"the checkpoint in {folder} was made with train_num_steps={saved_steps!r}, "
                    f"this trainer has train_num_steps={mine['train_num_steps']!r}; the "
                    f"{self.schedule} schedule spreads the learning rate over train_num_steps, "
                    f"so resuming would not continue the same run: keep "
                    f"train_num_steps={saved_steps!r} (a run with schedule='constant' may "
                    f"change its length)")
            warnings.warn(f"resuming the run in {folder} at step {step} with train_num_steps="
                          f"{mine['train_num_steps']} instead of {saved_steps}: with the "
                          f"constant schedule the learning rate of every step stays the same, "
                          f"and the run now ends at step {mine['train_num_steps']}",
                          stacklevel=2)

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self._check_same_model("model", self.model, part("model."), folder, cfg.get("model"))
        self.model.load_state_dict(part("model."))
        if self.ema is not None:
            ema_sd = part("ema.")
            if not ema_sd:
                raise ValueError("the checkpoint has no EMA weights but this trainer uses EMA")
            self._check_same_model("EMA model", self.ema.model, ema_sd, folder,
                                   cfg.get("model"))
            self.ema.model.load_state_dict(ema_sd)
            self.ema.num_updates = int(state["ema_num_updates"] or 0)
        opt_sd = unflatten_optimizer_state(tensors, state["optimizer"])
        self.opt.load_state_dict(opt_sd)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rank = self.dist.rank
        if f"rng.torch.rank{rank}" not in tensors:
            raise ValueError(f"the checkpoint in {folder or self.results_folder} has no random "
                             f"state for rank {rank} (key 'rng.torch.rank{rank}'); it was made "
                             f"by an older version, and resuming from it would not continue "
                             f"the same run")
        torch.set_rng_state(tensors[f"rng.torch.rank{rank}"])
        if self.device.type == "cuda" and f"rng.cuda.rank{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{rank}"], self.device)
        self.history = list(state.get("history", []))
        self.step = step
        self.last_good_checkpoint = step
        return step
