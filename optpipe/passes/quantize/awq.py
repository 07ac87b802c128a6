"""AWQ through AutoRound, in a child process: auto-round patches transformers on import, so the build
process never imports it.

    python -c "from optpipe.passes.quantize.awq import awq_worker; awq_worker('job.json')"
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def awq_worker(job_file: str) -> None:
    """Child process: AutoRound's AWQ (RTN int4 after AWQ scaling), exported as compressed-tensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = json.loads(Path(job_file).read_text())
    from auto_round import AutoRound, AWQConfig  # patches transformers: only ever imported here

    model = AutoModelForCausalLM.from_pretrained(job["parent"], device_map=job["device"])
    tok = AutoTokenizer.from_pretrained(job["parent"])
    ids = torch.load(job["calib"], weights_only=True)
    # amp=False: tune and export in fp32. With amp (its default) auto-round casts the model to bf16 on
    # the CPU, writes the non-quantized tensors in bf16, then "restores" every tensor that was fp32 in
    # the parent checkpoint from that checkpoint. That restore undoes the AWQ scales folded into the
    # RMSNorm weights (input_layernorm / post_attention_layernorm) while q/k/v and gate/up keep their
    # input channels multiplied by the same scales: SmolLM2-135M perplexity 25.5 -> ~79,000.
    ar = AutoRound(
        model,
        tok,
        scheme="W4A16",
        group_size=job["group_size"],
        alg_configs=[AWQConfig()],
        dataset=[row.unsqueeze(0) for row in ids],
        nsamples=ids.shape[0],
        seqlen=ids.shape[1],
        batch_size=min(4, ids.shape[0]),
        device_map=job["device"],
        amp=False,
    )
    raw = Path(job["out"] + "-raw")
    ar.quantize_and_save(str(raw), format="llm_compressor")
    configs = sorted(raw.rglob("config.json"))
    if not configs:
        raise RuntimeError(f"auto-round wrote no config.json under {raw}")
    shutil.copytree(configs[0].parent, job["out"])
