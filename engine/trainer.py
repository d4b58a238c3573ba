"""One training loop for every method: image SSL, video SSL and CLIP."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from engine import distributed as D
from engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from engine.compile import compile_decision, compile_module, uncompile
from engine.config import TrainConfig
from engine.errors import UserError
from engine.events import EventLog
from engine.optim import build_optimizer, lr_at
from engine.precision import choose_precision
from engine.run import RunDir


class TrainingError(UserError):
    """The run failed (NaN loss); the last good checkpoint is kept."""


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch permutation cut into global batches; each rank takes its slice.

    The data position is fully described by (epoch, batch index), so resume skips batches
    without decoding them, and N processes see exactly one process's global batch."""

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.global_batch, self.seed, self.rank, self.world = (
            n,
            global_batch,
            seed,
            rank,
            world,
        )
        self.local = global_batch // world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return self.n // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.start, self.n // self.global_batch):
            lo = b * self.global_batch + self.rank * self.local
            yield perm[lo : lo + self.local]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def steps_that_fit(
    left_s: float,
    sps: float,
    epoch_start_s: float,
    save_s: float,
    margin: float,
    steps_per_epoch: int,
    checkpoint_every: int,
) -> int:
    """The most steps (at least 1) whose time fits in `left_s`: `sps` seconds each, slowed by
    1 / margin, plus the per-epoch work of every epoch after the first (timed in the plan) and
    the periodic checkpoints. Bisection, as the time only grows with the steps: a fixed-point
    iteration swung between 1 and thousands of steps when the per-epoch work was large
    (DeepCluster's clustering) and planned a 15-minute run of 1 step."""

    def seconds(n: int) -> float:
        epochs = math.ceil(n / steps_per_epoch)
        return n * sps / margin + (epochs - 1) * epoch_start_s + (n // checkpoint_every) * save_s

    lo, hi = 1, max(1, int(margin * left_s / sps))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if seconds(mid) <= left_s else (lo, mid - 1)
    return lo


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        method: nn.Module,
        dataset: Dataset,
        run_dir: str | Path | RunDir | None = None,
        callbacks: tuple[Callable[[dict], None], ...] = (),
    ):
        self.cfg, self.method, self.dataset, self.callbacks = cfg, method, dataset, callbacks
        self.run = RunDir(run_dir or cfg.run_dir or RunDir.new(cfg.method))
        self.run_dir = self.run.path
        self.ckpt_path = self.run.checkpoint_path
        self.device = resolve_device(cfg.device)
        self.distributed = D.init_from_env(self.device.type)
        self.rank, self.world = D.rank(), D.world_size()
        self.events = EventLog(self.run.events_path, enabled=self.rank == 0)
        self.stop_requested = False
        self.step, self.epoch = 0, 0
        self.started_epoch = -1  # the last epoch whose on_epoch_start ran in this process
        self.epoch_work_s = 0.0  # time spent in on_epoch_start (kept out of the step pace)
        self.deadline: float | None = None  # perf_counter() at which a time budget is spent
        self.budget_spent = False
        self.plan: dict[str, Any] = {}

    # ---- set-up -------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        n = len(self.dataset)
        if cfg.batch_size % self.world:
            raise UserError(
                f"batch size {cfg.batch_size} is not divisible by {self.world} processes"
            )
        self.global_batch = min(cfg.batch_size, n - n % self.world)
        if self.global_batch < 2:
            raise UserError(f"{cfg.data}: only {n} usable items, need at least 2 for a batch")
        self.steps_per_epoch = n // self.global_batch
        self._set_total_steps(cfg.max_steps or cfg.epochs * self.steps_per_epoch)
        self.peak_lr = cfg.optim.lr * self.global_batch / 256

        self.method.to(self.device)
        # channels_last: on CUDA, and on CPU for ResNets too, where oneDNN runs them 1.13-1.35x
        # faster than NCHW (ResNet-18/50 at 32-224 px, measured; docs/benchmarks.md).
        from engine.backbones import ResNetBackbone

        convnet = isinstance(getattr(self.method, "backbone", None), ResNetBackbone)
        self.channels_last = cfg.channels_last == "on" or (
            cfg.channels_last == "auto" and (self.device.type == "cuda" or convnet)
        )
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.method
        if self.distributed:
            if self.device.type == "cuda":
                self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
            else:
                from engine.sync_bn import convert_global_bn

                self.method = convert_global_bn(self.method)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.method,
                device_ids=ids,
                find_unused_parameters=getattr(self.method, "ddp_find_unused", False),
            )
        self.optimizer = build_optimizer(self.method, cfg.optim, self.peak_lr)
        # measured on a CPU (engine.precision, cached per machine); the choice and the reason
        # go into the start event and the app
        self.precision = choose_precision(cfg.precision, self.device, cfg.image_size)
        if self.distributed:  # every process computes at rank 0's choice (probes may differ)
            self.precision = D.broadcast_object(self.precision)
        self.amp_dtype = self.precision.dtype
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.compiled, self.compile_reason = compile_decision(
            cfg.compile,
            self.device.type,
            self.precision,
            self.distributed,
            self.total_steps,
            cfg.time_budget,
        )
        if self.compiled and not isinstance(getattr(self.method, "backbone", None), nn.Module):
            self.compiled, self.compile_reason = False, "no backbone module to compile"
        self.compile_pending = self.compiled  # the first step compiles, or falls back
        if self.compiled:
            compile_module(self.method.backbone)
        self.sampler = EpochBatchSampler(n, self.global_batch, cfg.seed, self.rank, self.world)

    def _set_total_steps(self, total: int) -> None:
        """The schedule's length, and the warm-up that follows from it. Under a time budget the
        warm-up is at most 10% of the planned steps (the recipes' warm-up fraction: SimCLR and
        DINO 10 of 100 epochs), so a short run still reaches its peak and decays."""
        self.total_steps = int(total)
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        warmup = int(self.cfg.optim.warmup_epochs * self.steps_per_epoch)
        if self.cfg.time_budget > 0:
            warmup = min(warmup, int(0.1 * self.total_steps))
        self.warmup_steps = warmup

    def loader(self) -> DataLoader:
        """One loader for the whole run: workers persist across epochs (start-up dominates short
        epochs); the batch sampler runs in this process, so each new iteration sees its position."""
        if getattr(self, "_loader", None) is None:
            workers = self.cfg.num_workers
            self._loader = DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=4 if workers else None,
                worker_init_fn=_worker_ignores_stop_signals if workers else None,
            )
        return self._loader

    # ---- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.cfg.method,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": self.cfg.to_dict(),
            "total_steps": self.total_steps,
            "plan": self.plan,
            "backbone_arch": dict(getattr(self.method.backbone, "arch", {})),
            # DINO evaluates its teacher: a method may point export/eval at another submodule.
            "backbone_prefix": getattr(self.method, "eval_backbone_prefix", "backbone."),
        }

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self.state())
            self._emit("checkpoint", step=self.step)
        if self.distributed:
            torch.distributed.barrier()

    def restore(self) -> None:
        ck = load_checkpoint(self.ckpt_path, map_location=self.device)
        if ck.get("method") != self.cfg.method:
            raise UserError(
                f"{self.ckpt_path}: checkpoint is of method '{ck.get('method')}', not '{self.cfg.method}'"
            )
        if ck.get("steps_per_epoch") != self.steps_per_epoch:
            raise UserError(
                f"{self.ckpt_path}: the data changed since the checkpoint ({ck.get('steps_per_epoch')} vs {self.steps_per_epoch} steps per epoch)"
            )
        self.method.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_cpu"].cpu())
        if ck["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng_cuda"]])
        self.step = int(ck["step"])

    # ---- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        t0 = time.perf_counter()  # a time budget counts from here
        self._setup()
        if resume:
            if not self.run.has_checkpoint():
                raise UserError(f"{self.run_dir}: nothing to resume, no checkpoint")
            self.restore()
        elif self.rank == 0:
            # rank 0 alone: it may already have written this run's first event when others look
            self.run.check_new()
            self.run.save_config(self.cfg)
        if self.rank == 0:
            self.run.mark_alive()
        if self.cfg.time_budget > 0 and not resume:
            self.deadline = t0 + self.cfg.time_budget * 60
        self._emit(
            "start",
            step=self.step,
            total_steps=self.total_steps,
            resumed=resume,
            global_batch=self.global_batch,
            world_size=self.world,
            device=str(self.device),
            precision=self.precision.name,
            precision_reason=self.precision.reason,
            compiled=self.compiled,
            compile_reason=self.compile_reason,
        )
        old_handlers = self._install_signal_handlers()
        try:
            if self.deadline is not None:
                self._plan_for_budget(t0)
            last = self._loop()
        except TrainingError as e:
            self._emit("error", step=self.step, message=str(e))
            raise
        except BaseException as e:
            self._emit("error", step=self.step, message=f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        finally:
            self._restore_signal_handlers(old_handlers)
            if self.rank == 0:
                self.run.clear_alive()
        result = {"step": self.step, "losses": last, "run_dir": str(self.run_dir)}
        if self.stop_requested and self.step < self.total_steps:
            message = f"stopped at step {self.step}; resume with --resume {self.run_dir}"
            self._emit("stopped", step=self.step, losses=last, message=message)
            return {**result, "stopped": True, "message": message}
        if self.deadline is not None:
            budget = {"planned_steps": self.total_steps, "budget_spent": self.budget_spent}
            self._emit("done", step=self.step, losses=last, **budget)
            return {**result, **budget, "plan": self.plan}
        self._emit("done", step=self.step, losses=last)
        return result

    # ---- time budget ----------------------------------------------------------------------
    def _start_epoch(self, epoch: int) -> None:
        if self.started_epoch != epoch:
            t = time.perf_counter()
            self.method.on_epoch_start(epoch, self)
            self.started_epoch = epoch
            self.epoch_work_s += time.perf_counter() - t

    def _step_clock(self) -> float:
        """Seconds that stop while an epoch starts: the pace of steps alone, as the plan times
        it (the per-epoch work is planned separately; counted in both, DeepCluster's re-plans
        shrank its 15-minute run to 11)."""
        return time.perf_counter() - self.epoch_work_s

    def _plan_for_budget(self, t0: float) -> None:
        """Plan the schedule for the time budget: epoch 0's start work (timed: it recurs every
        epoch), one warm-up step, then up to 3 timed steps (fewer when they would take more than
        5% of the budget); the weights, optimiser and buffers are then put back as they were, so
        the run proper starts from step 0 with total_steps planned to end on time. The plan goes
        into config.json and the checkpoint (cfg.max_steps), so a resumed run keeps it."""
        budget_s = self.cfg.time_budget * 60
        te, work = time.perf_counter(), self.epoch_work_s
        self._start_epoch(0)
        epoch_start_s = self.epoch_work_s - work  # timed where every epoch start is
        model = copy.deepcopy(self.method.state_dict())
        optimizer = copy.deepcopy(self.optimizer.state_dict())
        scaler = copy.deepcopy(self.scaler.state_dict())
        times: list[float] = []
        enough = min(2.0, 0.02 * budget_s)  # quick steps: time more of them (up to 50)
        ts = time.perf_counter()
        for i, batch in enumerate(self._batches(51)):
            self.step = i
            self._train_step(batch)
            if i > 0:  # step 0 warms up (allocator, oneDNN kernels, loader workers)
                times.append(time.perf_counter() - ts)
                if (len(times) >= 3 and sum(times) >= enough) or sum(times) > 0.05 * budget_s:
                    break
            ts = time.perf_counter()
        self.method.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)
        self.scaler.load_state_dict(scaler)
        self.step = 0
        sps = (sum(times) / len(times)) if times else (time.perf_counter() - te)
        save_s = 0.0
        if self.rank == 0:
            ts = time.perf_counter()
            save_checkpoint(self.ckpt_path, self.state())  # timed; rewritten with the plan below
            save_s = time.perf_counter() - ts
        if self.distributed:  # every rank follows rank 0's plan
            t = torch.tensor([sps, save_s], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(t, 0)
            sps, save_s = t.tolist()
        left = self.deadline - time.perf_counter() - 2 * save_s  # this plan's and the last save
        # steps run a few % slower than timed (measured): finish the schedule
        steps = self._steps_that_fit(left, sps, epoch_start_s, save_s, margin=0.93)
        if self.cfg.max_steps:
            steps = min(steps, self.cfg.max_steps)
        self._set_total_steps(steps)
        self.cfg.max_steps = self.total_steps
        self.plan = {
            "s_per_step": sps,
            "measured_steps": len(times),
            "planned_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "epochs": self.total_steps / self.steps_per_epoch,
            "budget_s": budget_s,
            "setup_s": time.perf_counter() - t0,
            "epoch_start_s": epoch_start_s,
            "checkpoint_s": save_s,
        }
        self._emit("plan", step=0, **self.plan)
        if self.rank == 0:
            self.run.save_config(self.cfg)
        self.save()

    def _steps_that_fit(
        self, left_s: float, sps: float, epoch_start_s: float, save_s: float, margin: float
    ) -> int:
        return steps_that_fit(
            left_s, sps, epoch_start_s, save_s, margin, self.steps_per_epoch,
            self.cfg.checkpoint_every,
        )  # fmt: skip

    def _replan(self, since_step: int, since: float) -> None:
        """Re-plan from the run's own pace (the steps since `since_step`, timed from `since`).
        The plan's few timed steps can be off by a third: a multi-crop ViT's first steps run slow
        while oneDNN and the allocator settle (DINO: timed 33 s per step, 31.7 s over steps 2-5,
        25 s from step 10 on; with the plan alone it stopped after 608 of 900 s). The schedule
        keeps its past and is stretched or shrunk to end at the deadline; nothing changes when
        the plan was within 3%."""
        sps = (self._step_clock() - since) / max(self.step - since_step, 1)
        left = self.deadline - time.perf_counter() - self.plan.get("checkpoint_s", 0.0)
        fit = self._steps_that_fit(
            left, sps, self.plan.get("epoch_start_s", 0.0), self.plan.get("checkpoint_s", 0.0), 0.97
        )
        steps = self.step + fit
        if self.distributed:  # every rank follows rank 0's pace
            t = torch.tensor([steps], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(t, 0)
            steps = int(t.item())
        if abs(steps - self.total_steps) <= 0.03 * self.total_steps:
            return
        previous = self.total_steps
        self._set_total_steps(max(steps, self.step + 1))
        self.cfg.max_steps = self.total_steps
        self.plan.update(
            planned_steps=self.total_steps, warmup_steps=self.warmup_steps, s_per_step=sps,
            replanned_at=self.step,
        )  # fmt: skip
        self._emit(
            "replan", step=self.step, s_per_step=sps, planned_steps=self.total_steps,
            previous_steps=previous, warmup_steps=self.warmup_steps,
        )  # fmt: skip
        if self.rank == 0:
            self.run.save_config(self.cfg)

    def _batches(self, n: int) -> Iterator[dict[str, Any]]:
        """The first n batches of the run (across epochs when an epoch is shorter)."""
        given, epoch = 0, 0
        while given < n:
            self.sampler.set_position(epoch, 0)
            for batch in self.loader():
                yield batch
                given += 1
                if given >= n:
                    return
            epoch += 1

    def _loop(self) -> dict[str, float]:
        bar = _progress(self.total_steps, self.step, self.rank == 0)
        last: dict[str, float] = {}
        window_t, window_steps = time.perf_counter(), 0
        # a budgeted run re-plans from its own pace at 5%, 25% and 50% of the plan, each time
        # from the steps since the last (timed from the second step: the first restarts the
        # loader); at least 4 steps apart
        since_step, since = self.step + 1, 0.0
        replans = []
        if self.deadline is not None and self.step == 0:
            for f in (0.05, 0.25, 0.5):
                at = max(math.ceil(f * self.total_steps), (replans or [since_step])[-1] + 4)
                if at < self.total_steps - 1:
                    replans.append(at)
        while self.step < self.total_steps:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            self.epoch = epoch
            self.sampler.set_position(epoch, start)
            if start == 0:
                self._start_epoch(epoch)
            for batch in self.loader():
                losses = self._train_step(batch)
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step == since_step:
                    since = self._step_clock()
                elif replans and self.step == replans[0]:
                    replans.pop(0)
                    self._replan(since_step, since)
                    since_step, since = self.step, self._step_clock()
                    bar.total = self.total_steps
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    dt = time.perf_counter() - window_t
                    ips = window_steps * self.global_batch / max(dt, 1e-9)
                    last = {k: float(v) for k, v in losses.items()}
                    eta = (self.total_steps - self.step) * self.global_batch / max(ips, 1e-9)
                    self._emit(
                        "step",
                        step=self.step,
                        epoch=epoch,
                        losses=last,
                        lr=self.optimizer.param_groups[0]["lr"],
                        images_per_s=ips,
                        eta_s=eta,
                    )
                    bar.set_postfix(
                        loss=f"{last.get('loss', float('nan')):.4f}", img_s=f"{ips:.0f}"
                    )
                    window_t, window_steps = time.perf_counter(), 0
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save()
                if self.stop_requested and self.step < self.total_steps:
                    self.save()
                    bar.close()
                    return last
                if (
                    self.deadline is not None
                    and self.step < self.total_steps
                    and self._past_deadline()
                ):
                    self.budget_spent = True  # slower than planned: end on time, not mid-step
                    self.save()
                    bar.close()
                    return last
                if self.step >= self.total_steps:
                    break
        bar.close()
        return last

    def _train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One step; the first step of a compiled backbone compiles it, and any failure there
        puts the backbone back to eager and runs the step again (a genuine error then recurs)."""
        if not self.compile_pending:
            return self._step(batch)
        try:
            return self._step(batch)
        except Exception as e:  # noqa: BLE001  (inductor raises many kinds)
            uncompile(self.method.backbone)
            self.compiled = False
            self.compile_reason = f"compile failed, eager instead: {type(e).__name__}: {e}"[:300]
            self._emit(
                "compile", step=self.step, compiled=False, compile_reason=self.compile_reason
            )
            return self._step(batch)
        finally:
            self.compile_pending = False

    def _step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        if self.channels_last and "image" in batch and batch["image"].dim() == 4:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        lr = lr_at(
            self.step,
            self.total_steps,
            self.warmup_steps,
            self.peak_lr,
            self.cfg.optim.min_lr_ratio,
        )
        for g in self.optimizer.param_groups:
            if not g.get("constant"):  # a recipe's fixed-lr parameters (Method.constant_lr_groups)
                g["lr"] = lr
        self.method.on_step_start(self.step, self.total_steps, self.optimizer)  # DINO's wd cosine
        local = next(v.shape[0] for v in batch.values() if torch.is_tensor(v))
        self.method.set_step_context(self.cfg.seed, self.step, self.rank * local, self.global_batch)
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.step * 131 + self.rank)
        self.method.train()
        amp = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else contextlib.nullcontext()
        )
        with amp:
            out = self.model(batch)
        loss = out["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if self.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() == 0:
            raise TrainingError(
                f"loss is {loss.item()} at step {self.step + 1}; stopped, last good checkpoint kept in {self.ckpt_path}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            self.method.clip_gradients(self.cfg.optim.clip_grad)  # DINO clips per parameter
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.on_step_end(self.step + 1, self.total_steps)
        return {
            k: D.all_reduce_mean(v.detach().float())
            for k, v in out.items()
            if torch.is_tensor(v) and v.dim() == 0
        }

    # ---- plumbing -------------------------------------------------------------------------
    def _past_deadline(self) -> bool:
        past = torch.tensor(float(time.perf_counter() >= self.deadline))
        if self.distributed:  # rank 0's clock decides for everyone
            past = past.to(self.device)
            torch.distributed.broadcast(past, 0)
        return bool(past.item())

    def _emit(self, type: str, **fields: Any) -> None:
        self.events.write(type, **fields)
        for cb in self.callbacks:
            cb({"type": type, **fields})

    def _install_signal_handlers(self) -> dict:
        """SIGTERM/SIGINT finish the current step, checkpoint, and stop (the GUI's Stop button)."""
        if self.rank != 0 and not self.distributed:
            return {}

        def request_stop(signum, frame):
            self.stop_requested = True

        old = {}
        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, request_stop)
        except ValueError:  # not the main thread
            return {}
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    def feature_loader(self, batch_size: int = 256) -> DataLoader:
        """Plain ordered pass over the dataset (DeepCluster's clustering, evaluation hooks)."""
        return DataLoader(
            self.dataset, batch_size=batch_size, shuffle=False, num_workers=self.cfg.num_workers
        )


def _worker_ignores_stop_signals(_worker_id: int) -> None:
    """A Stop aimed at the whole process group (Ctrl-C in a terminal, `kill -- -PGID`, `pkill -f`)
    reaches the loader workers too; killed workers would crash the run before it checkpoints.
    They ignore it and the main process stops cleanly (workers exit with it)."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)
