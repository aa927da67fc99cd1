"""One training phase: seeded steps, gradient accumulation, DDP, dev evaluation, selection, resume.

The effective batch is fixed by the recipe; each global batch is split across DDP ranks and then
into micro-batches, and the loss is normalised by the global batch size, so the gradient of a step
is the same whatever the world size (up to float summation order). `torchrun` and
`accelerate launch` both start workers through torch elastic, which is how a distributed run is
recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from training.augment import Augmenter
from training.kinds import get_kind
from training.model import MultiTaskModel, load_trainable_state, trainable_state
from training.recipe import Phase
from training.sampling import Step, examples_per_epoch, micro_batches, plan_steps, shard
from training.tasks import Example, TaskSpec

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
EVAL_BATCH = 64


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> Distributed:
    """Join the process group when launched by torchrun / accelerate launch, else run alone."""
    if not dist.is_available() or not dist.is_torchelastic_launched():
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Distributed(0, 1, device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = rank % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return Distributed(rank, world, torch.device("cuda", local))
    return Distributed(rank, world, torch.device("cpu"))


@dataclass(frozen=True)
class PhaseData:
    specs: Mapping[str, TaskSpec]
    train: Mapping[str, list[Example]]
    dev: Mapping[str, list[Example]]


@dataclass
class Evaluation:
    step: int
    scores: dict[str, float]
    mean: float


@dataclass
class PhaseResult:
    steps: int
    planned_steps: int
    selection: str
    selected_step: int
    selected_dev_score: float | None
    evaluations: list[Evaluation] = field(default_factory=list)
    stopped_early: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def predict(
    model: MultiTaskModel,
    task: str,
    spec: TaskSpec,
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    device: torch.device,
) -> list[Any]:
    """Predictions in input order; batches are formed from length-sorted inputs to cut padding."""
    kind = get_kind(spec.kind)
    order = sorted(range(len(examples)), key=lambda i: len(str(examples[i].features)))
    predictions: list[Any] = [None] * len(examples)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), EVAL_BATCH):
            chosen = order[start : start + EVAL_BATCH]
            batch = kind.collate(spec, [examples[i] for i in chosen], tokenizer, max_length)
            output = kind.forward(model.encoder, model.heads[task], _to(batch, device))
            for i, prediction in zip(chosen, output.predictions, strict=True):
                predictions[i] = prediction
    model.train(was_training)
    return predictions


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _text_lengths(data: PhaseData) -> dict[str, list[int]]:
    """Character length of each training input: a tokenizer-free proxy for its token count."""
    lengths: dict[str, list[int]] = {}
    for task, examples in data.train.items():
        kind = get_kind(data.specs[task].kind)
        lengths[task] = [sum(len(t or "") for t in kind.texts(e)) for e in examples]
    return lengths


def _optimizer(model: nn.Module, phase: Phase) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": phase.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=phase.lr)


def _fingerprint(phase: Phase, seed: int, sizes: Mapping[str, int]) -> str:
    payload = json.dumps(
        {"phase": phase.model_dump(mode="json"), "seed": seed, "sizes": dict(sizes)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def steps_per_epoch(phase: Phase, sizes: Mapping[str, int]) -> int:
    return max(
        1,
        math.ceil(
            examples_per_epoch(sizes, phase.sampling, phase.sampling_cap) / phase.effective_batch
        ),
    )


class _Selection:
    """Tracks the best dev score and its weights, and early stopping."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase
        self.best_score: float | None = None
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.evals_since_best = 0

    def update(self, score: float, step: int, model: nn.Module) -> None:
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step, self.evals_since_best = score, step, 0
            self.best_state = trainable_state(model)
        else:
            self.evals_since_best += 1

    @property
    def should_stop(self) -> bool:
        return self.phase.patience is not None and self.evals_since_best >= self.phase.patience


def train_phase(
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    phase: Phase,
    data: PhaseData,
    *,
    seed: int,
    env: Distributed,
    work_dir: Path,
    label: str,
) -> PhaseResult:
    sizes = {task: len(examples) for task, examples in data.train.items()}
    if phase.effective_batch < env.world_size:
        raise ValueError(
            f"effective_batch {phase.effective_batch} is smaller than the world size {env.world_size}"
        )
    plan = plan_steps(
        sizes,
        strategy=phase.sampling,
        batch_size=phase.effective_batch,
        epochs=phase.epochs,
        seed=seed,
        cap=phase.sampling_cap,
        temperature=phase.sampling_temperature,
        lengths=_text_lengths(data) if phase.group_by_length else None,
    )
    eval_every = phase.eval_every_steps or steps_per_epoch(phase, sizes)
    per_device = phase.per_device_batch or math.ceil(phase.effective_batch / env.world_size)
    model.to(env.device)
    model.train()
    wrapped: nn.Module = model
    if env.enabled:
        wrapped = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=len(data.specs) > 1
        )
    optimizer = _optimizer(model, phase)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, round(phase.warmup_ratio * len(plan)), len(plan)
    )
    selection = _Selection(phase)
    history: list[Evaluation] = []
    fingerprint = _fingerprint(phase, seed, sizes)
    start_step = _resume(work_dir, fingerprint, model, optimizer, scheduler, selection, history)
    augmenter = Augmenter(phase.augmentation, seed) if phase.augmentation else None
    stopped_early = False
    bar = tqdm(
        total=len(plan), initial=start_step, desc=label, unit="step", disable=not env.is_main
    )
    step = start_step
    for step in range(start_step + 1, len(plan) + 1):
        loss = _train_step(
            wrapped, plan[step - 1], data, tokenizer, phase, env, per_device, augmenter, step
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if phase.selection == "best_dev" and (step % eval_every == 0 or step == len(plan)):
            evaluation = _evaluate(model, tokenizer, phase, data, env, step)
            history.append(evaluation)
            selection.update(evaluation.mean, step, model)
            logger.info("%s step %d: dev %s", label, step, evaluation.scores)
            _save_resume(
                work_dir, fingerprint, step, model, optimizer, scheduler, selection, history, env
            )
            if selection.should_stop:
                stopped_early = True
                logger.info(
                    "%s: early stop at step %d (best step %d)", label, step, selection.best_step
                )
                break
    bar.close()
    if phase.selection == "best_dev" and selection.best_state is not None:
        load_trainable_state(model, selection.best_state)
    return PhaseResult(
        steps=step,
        planned_steps=len(plan),
        selection=phase.selection,
        selected_step=selection.best_step if phase.selection == "best_dev" else step,
        selected_dev_score=selection.best_score,
        evaluations=history,
        stopped_early=stopped_early,
    )


def _train_step(
    wrapped: nn.Module,
    step: Step,
    data: PhaseData,
    tokenizer: PreTrainedTokenizerBase,
    phase: Phase,
    env: Distributed,
    per_device: int,
    augmenter: Augmenter | None,
    step_number: int,
) -> float:
    spec = data.specs[step.task]
    kind = get_kind(spec.kind)
    examples = data.train[step.task]
    mine = shard(step.indices, env.rank, env.world_size)
    micros = micro_batches(mine, per_device)
    scale = env.world_size / len(step.indices)
    total = 0.0
    for position, micro in enumerate(micros):
        chosen = [examples[i] for i in micro]
        if augmenter is not None:
            chosen = augmenter.apply(kind, chosen, step_number)
        batch = _to(kind.collate(spec, chosen, tokenizer, phase.max_length), env.device)
        last = position == len(micros) - 1
        sync = contextlib.nullcontext() if last or not env.enabled else wrapped.no_sync()  # type: ignore[operator]
        with sync, _autocast(env.device):
            loss = wrapped(task=step.task, batch=batch, kind=kind).float().sum() * scale
        loss.backward()
        total += float(loss.detach()) / env.world_size
    return total


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _evaluate(
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    phase: Phase,
    data: PhaseData,
    env: Distributed,
    step: int,
) -> Evaluation:
    scores: dict[str, float] = {}
    if env.is_main:
        for task, examples in data.dev.items():
            spec = data.specs[task]
            predictions = predict(
                model, task, spec, examples, tokenizer, phase.max_length, env.device
            )
            scores[task] = get_kind(spec.kind).score(spec, examples, predictions)
    if env.enabled:
        shared: list[Any] = [scores]
        dist.broadcast_object_list(shared, src=0)
        scores = shared[0]
    return Evaluation(step, scores, sum(scores.values()) / len(scores))


def _save_resume(
    work_dir: Path,
    fingerprint: str,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    selection: _Selection,
    history: list[Evaluation],
    env: Distributed,
) -> None:
    if not env.is_main:
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "fingerprint": fingerprint,
        "step": step,
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best": (
            selection.best_score,
            selection.best_step,
            selection.best_state,
            selection.evals_since_best,
        ),
        "history": [asdict(e) for e in history],
        "torch_rng": torch.get_rng_state(),
    }
    partial = work_dir / (RESUME_FILE + ".partial")
    torch.save(state, partial)
    partial.replace(work_dir / RESUME_FILE)


def _resume(
    work_dir: Path,
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    selection: _Selection,
    history: list[Evaluation],
) -> int:
    path = work_dir / RESUME_FILE
    if not path.is_file():
        return 0
    # Our own file (written above), holding tensors and plain containers only.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        logger.warning(
            "%s belongs to a different phase config or seed: starting this phase afresh", path
        )
        return 0
    load_trainable_state(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    selection.best_score, selection.best_step, selection.best_state, selection.evals_since_best = (
        state["best"]
    )
    history.extend(Evaluation(**e) for e in state["history"])
    torch.set_rng_state(state["torch_rng"])
    logger.info("resumed %s at step %d", path, state["step"])
    step: int = state["step"]
    return step
