"""Set up one distillation (teacher, data, checkpoint directory, Trainer arguments), run it, record it."""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import Any

from optpipe.errors import PassFailed


def load_teacher(params, ctx, student) -> tuple[Any, str]:
    """The teacher, frozen, on the student's device and dtype, and how to name it in the manifest."""
    from transformers import AutoModelForCausalLM

    if params.teacher == "baseline":
        if ctx.model is None:
            raise PassFailed("teacher 'baseline' needs the build's model source; outside a build pass teacher: <model dir>")
        from optpipe.runtime.source import load_model

        teacher, _ = load_model(ctx.model)
        name = f"baseline ({ctx.model.describe()})"
    else:
        teacher = AutoModelForCausalLM.from_pretrained(params.teacher, dtype=student.dtype)
        name = params.teacher
    teacher = teacher.to(device=student.device, dtype=student.dtype).eval().requires_grad_(False)
    vs, vt = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if vs != vt:
        raise PassFailed(f"teacher {name} has a {vt}-token vocabulary, the student {vs}: distillation needs the same tokenizer")
    return teacher, name


def layer_map(prune: dict[str, Any] | None, student, teacher) -> list[int]:
    """Which teacher block each student block continues: the kept blocks of a depth prune, else the same index."""
    n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    if prune and prune.get("method") == "depth" and prune.get("blocks_before") == n_t:
        return list(prune["blocks_kept"])
    if n_s == n_t:
        return list(range(n_s))
    raise PassFailed(
        f"hidden_weight needs to know which of the teacher's {n_t} blocks the student's {n_s} continue "
        "(a depth prune of this teacher records it); set hidden_weight: 0"
    )


def run_key(student, params) -> str:
    """Key of one distillation: the student's exact weights and every param that shapes the result."""
    h = hashlib.sha256(json.dumps(params.chain_params(), sort_keys=True).encode())
    for name, p in sorted(student.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def last_complete_checkpoint(directory) -> str | None:
    """The newest checkpoint-N that was fully written (the Trainer writes trainer_state.json last, not
    atomically); a half-written one, from a kill during a save, is removed so nothing resumes from it."""
    import re

    if not directory.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in directory.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()
    )
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None


def optimizer_name(params, cuda: bool) -> str:
    from optpipe.spec.host import package_version

    if params.optimizer == "adamw-8bit" or (params.optimizer == "auto" and cuda and package_version("bitsandbytes")):
        return "adamw_bnb_8bit"
    return "adamw_torch"


def distill(candidate, params, ctx):
    import torch
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from optpipe.passes.distill.train import DistillTrainer, ProgressLine, TimeBudget, Windows
    from optpipe.passes.quantize.calibration import calibration_data
    from optpipe.runtime.torch_candidate import TorchCandidate

    if candidate.settings.quantization or candidate.settings.format != "transformers":
        raise PassFailed("distill trains a dense transformers model: put it before quantize / onnx_export")
    if (candidate.settings.prune or {}).get("method") == "sparse24":
        raise PassFailed(
            "distill would refill a 2:4-sparse model's zeros (training does not keep the mask): distill before sparse24"
        )
    student = candidate.model
    teacher, teacher_name = load_teacher(params, ctx, student)
    lmap = layer_map(candidate.settings.prune, student, teacher) if params.hidden_weight > 0 else None
    calib = calibration_data(params, candidate.tokenizer, ctx.evaluation.perplexity_tokens)
    ckpt_dir = (ctx.resume_dir or ctx.work_dir) / f"distill-{run_key(student, params)}"
    last = last_complete_checkpoint(ckpt_dir)
    cuda = str(student.device).startswith("cuda")
    bf16 = params.bf16 == "on" or (params.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
    optim = optimizer_name(params, cuda)
    # transformers 5.2x renamed gradient_checkpointing (still accepted, deprecated) to activation_checkpointing
    fields = TrainingArguments.__dataclass_fields__
    ckpt_arg = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    tokens_per_step = params.batch_size * params.grad_accum * params.calibration_seq_len
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        max_steps=params.steps or 10**9,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        learning_rate=params.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=params.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim=optim,
        bf16=bf16,
        use_cpu=not cuda,
        **{ckpt_arg: params.gradient_checkpointing},
        logging_steps=params.log_every,
        save_strategy="steps",
        save_steps=params.checkpoint_every,
        save_total_limit=1,
        seed=params.seed,
        data_seed=params.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        restore_callback_states_from_checkpoint=True,  # the time already spent (TimeBudget)
        dataloader_num_workers=0,
    )
    budget = TimeBudget(params.minutes * 60 if params.minutes else None)
    progress = ProgressLine(tokens_per_step)
    trainer = DistillTrainer(
        model=student,
        args=args,
        train_dataset=Windows(calib.ids),
        teacher=teacher,
        temperature=params.temperature,
        hidden_weight=params.hidden_weight,
        layer_map=lmap,
        callbacks=[budget, progress],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=last)
    del teacher, trainer.teacher
    student = trainer.model
    if params.gradient_checkpointing:
        (getattr(student, "activation_checkpointing_disable", None) or student.gradient_checkpointing_disable)()
    student.config.use_cache = True
    student.eval().requires_grad_(False)
    budget_now = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TimeBudget)), budget)
    steps = trainer.state.global_step
    record = {
        "teacher": teacher_name,
        "steps": steps,
        "tokens": steps * tokens_per_step,
        "seconds": round(budget_now.elapsed(), 1),
        "first_loss": progress.losses[0] if progress.losses else None,
        "final_loss": progress.losses[-1] if progress.losses else None,
        "resumed_from_step": int(last.rsplit("-", 1)[-1]) if last else 0,
        "temperature": params.temperature,
        "hidden_weight": params.hidden_weight,
        "optimizer": optim,
        "bf16": bf16,
        "calibration": calib.info,
    }
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return TorchCandidate(student, candidate.tokenizer, candidate.settings).with_settings(distill=record)
