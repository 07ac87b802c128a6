"""distill: knowledge distillation of the current (usually pruned) student from a teacher.

The loss is KL(teacher || student) on temperature-softened logits, plus (with `hidden_weight` > 0) a
normalized MSE between each student block's output and the teacher block it came from (depth-pruned
students: the prune record says which teacher blocks were kept). Training text is calibration text,
disjoint from what perplexity scores (the quantize pass's held-out WikiText slice, or a file).

Teacher: the build hands a pass its parent and the recipe's model source, not the whole chain of
earlier candidates (their files are freed as the build moves on), so the default teacher is
`baseline`, the recipe's model loaded again: the candidate before the prune when the prune is the
first pass that changes weights. `teacher: <directory>` names any transformers model directory.

The loop is transformers' Trainer (train.py); checkpoints (model, optimizer, scheduler, step, RNG,
time spent) go to <output>/.cache/resume/distill-<key>/ every `checkpoint_every` steps, keyed by the student's weights
and these params, so running the same build again after an interruption resumes at the last
checkpoint. They are removed when the distillation finishes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from optpipe.passes.base import Pass, PassParams


class DistillParams(PassParams):
    kind: Literal["distill"] = Field("distill", alias="pass")
    teacher: str = Field("baseline", description="'baseline' (the recipe's model) or a transformers model directory.")
    steps: int | None = Field(None, ge=1, description="Optimizer steps (at least one of steps / minutes).")
    minutes: float | None = Field(None, gt=0, description="Wall-clock training budget; stops at whichever comes first.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the KL loss.")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of the hidden-state loss (for depth-pruned students).")
    learning_rate: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    batch_size: int = Field(4, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward: less memory, ~30 % slower.")
    bf16: Literal["auto", "on", "off"] = Field("auto", description="bf16 autocast; auto: on CUDA with bf16 support only.")
    optimizer: Literal["auto", "adamw", "adamw-8bit"] = Field(
        "auto", description="auto: bitsandbytes' 8-bit AdamW on CUDA when bitsandbytes is installed, else torch AdamW."
    )
    checkpoint_every: int = Field(25, ge=1, description="Steps between resumable checkpoints.")
    log_every: int = Field(5, ge=1, description="Steps between progress lines.")
    seed: int = 0
    calibration: Literal["wikitext-heldout", "file"] = Field(
        "wikitext-heldout", description="Training text: held-out WikiText-2 slice (disjoint from perplexity) or calibration_file."
    )
    calibration_file: str | None = Field(None, description="UTF-8 text file for calibration: file.")
    calibration_samples: int = Field(256, ge=1, description="Training sequences (cycled through in epochs).")
    calibration_seq_len: int = Field(256, ge=16, description="Tokens per training sequence.")

    def chain_params(self):
        out = super().chain_params()
        for k in ("checkpoint_every", "log_every"):  # how the run is watched, not what it makes
            out.pop(k, None)
        return out

    @model_validator(mode="after")
    def _check(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give a budget: steps, minutes, or both (stops at whichever comes first)")
        if self.calibration == "file" and not self.calibration_file:
            raise ValueError("calibration: file needs calibration_file (a UTF-8 text file)")
        return self


class Distill(Pass):
    name = "distill"
    Params = DistillParams
    summary = "Knowledge distillation (KL on logits, optional hidden-state loss) from the baseline or a model directory."
    requires = "torch + accelerate (core install); adamw-8bit: bitsandbytes; a teacher with the student's vocabulary"

    @classmethod
    def requirements(cls, params, target, env) -> list[str]:
        from pathlib import Path

        reasons = []
        if params.teacher != "baseline" and not (Path(params.teacher) / "config.json").is_file():
            reasons.append(
                f"teacher {params.teacher!r} is not a transformers model directory (no config.json); or use 'baseline'"
            )
        if params.optimizer == "adamw-8bit" and not env.has_package("bitsandbytes"):
            reasons.append("optimizer adamw-8bit needs bitsandbytes (pip install bitsandbytes), or use adamw")
        if params.bf16 == "on" and env.has_cuda and env.gpu_capability and float(env.gpu_capability) < 8.0:
            reasons.append(f"bf16 needs compute capability >= 8.0 (this GPU: {env.gpu_capability}); use bf16: off")
        if params.calibration == "file" and params.calibration_file and not Path(params.calibration_file).is_file():
            reasons.append(f"calibration_file {params.calibration_file!r} does not exist")
        return reasons

    @classmethod
    def apply(cls, candidate, params, ctx):
        from optpipe.passes.distill.run import distill

        return distill(candidate, params, ctx)
