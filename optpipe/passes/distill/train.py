"""The distillation loop: transformers' Trainer with a KL loss against a frozen teacher.

The Trainer brings what would otherwise be re-derived: gradient accumulation, gradient checkpointing,
bf16 autocast (through accelerate), the bitsandbytes 8-bit AdamW, and checkpoints holding model,
optimizer, scheduler, step, RNG states and stateful callbacks, so `resume_from_checkpoint` continues an
interrupted run at the step it last saved, with the same data order. Added here: the loss (KL on
temperature-softened logits, plus an optional normalized MSE between matched hidden states), a wall-clock
budget that survives a resume (a stateful callback), and one progress line per log step.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState


def kd_loss(student_logits, teacher_logits, temperature: float):
    """Mean per-token KL(teacher || student) on logits softened by `temperature`, scaled by T^2 (Hinton et al.)."""
    import torch.nn.functional as F

    v = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, v) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, v) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def hidden_loss(student_hidden, teacher_hidden, layer_map: list[int]):
    """Normalized MSE between student block j's output and teacher block layer_map[j]'s output."""
    total = 0.0
    for j, t_idx in enumerate(layer_map):
        s, t = student_hidden[j + 1].float(), teacher_hidden[t_idx + 1].float()
        total = total + ((s - t) ** 2).mean() / (t * t).mean().clamp_min(1e-8)
    return total / max(len(layer_map), 1)


class DistillTrainer(Trainer):
    def __init__(self, *args, teacher, temperature: float, hidden_weight: float, layer_map: list[int] | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.temperature = temperature
        self.hidden_weight = hidden_weight
        self.layer_map = layer_map

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        ids = inputs["input_ids"]
        hidden = self.hidden_weight > 0
        with torch.no_grad():
            t = self.teacher(input_ids=ids, output_hidden_states=hidden, use_cache=False)
        s = model(input_ids=ids, output_hidden_states=hidden, use_cache=False)
        loss = kd_loss(s.logits, t.logits, self.temperature)
        if hidden:
            loss = loss + self.hidden_weight * hidden_loss(s.hidden_states, t.hidden_states, self.layer_map)
        return (loss, s) if return_outputs else loss


class TimeBudget(TrainerCallback, ExportableState):
    """Stop after `seconds` of training in total, counting the time before a resume (saved with each checkpoint)."""

    def __init__(self, seconds: float | None = None, prior: float = 0.0):
        self.seconds = seconds
        self.prior = prior
        self.start: float | None = None

    def elapsed(self) -> float:
        return self.prior + (time.monotonic() - self.start if self.start is not None else 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None and self.elapsed() >= self.seconds:
            control.should_training_stop = True

    def state(self) -> dict:
        return {"args": {"seconds": self.seconds, "prior": self.elapsed()}, "attributes": {}}


class ProgressLine(TrainerCallback):
    """`distill step 40/200  loss 1.234  612 tok/s  1.2 min` on stderr at every log step."""

    def __init__(self, tokens_per_step: int, label: str = "distill"):
        self.tokens_per_step = tokens_per_step
        self.label = label
        self.last: tuple[float, int] | None = None
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now = time.monotonic()
        self.losses.append(float(logs["loss"]))
        rate = ""
        if self.last is not None and state.global_step > self.last[1]:
            rate = f"  {(state.global_step - self.last[1]) * self.tokens_per_step / (now - self.last[0]):.0f} tok/s"
        self.last = (now, state.global_step)
        total = f"/{state.max_steps}" if state.max_steps < 10**8 else ""
        print(f"{self.label} step {state.global_step}{total}  loss {logs['loss']:.4f}{rate}", file=sys.stderr, flush=True)


class Windows:
    """The calibration sequences as a dataset of {"input_ids": ...} rows (the default collator stacks them)."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i]}
