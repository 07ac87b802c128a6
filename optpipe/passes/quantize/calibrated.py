"""GPTQ and AWQ: calibrated int4 written as a compressed-tensors checkpoint and loaded back through
stock transformers, so the candidate is exactly what a deployment loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def apply_calibrated(candidate, params, method: str, eval_tokens: int):
    """GPTQ or AWQ on calibration data, written as a compressed-tensors checkpoint and loaded back
    through stock transformers (so the candidate is exactly what a deployment loads)."""
    import torch
    from transformers import AutoModelForCausalLM

    from optpipe.passes.quantize.calibration import calibration_data
    from optpipe.passes.quantize.gptq import check_group_size, gptq_model, pack_compressed_tensors, packed_fraction
    from optpipe.runtime.dtypes import dtype_name
    from optpipe.runtime.torch_candidate import TorchCandidate

    check_group_size(candidate.model, params.group_size)
    calib = calibration_data(params, candidate.tokenizer, eval_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="optpipe-calib-"))
    out = tmp / "out"
    try:
        if method == "gptq-4bit":
            scales = gptq_model(candidate.model, calib.ids, params.group_size)
            pack_compressed_tensors(candidate.model, scales, params.group_size)
            candidate.model.save_pretrained(out, safe_serialization=True)
        else:
            candidate.save(tmp / "parent")
            torch.save(calib.ids, tmp / "calib.pt")
            job = {
                "parent": str(tmp / "parent"),
                "calib": str(tmp / "calib.pt"),
                "out": str(out),
                "group_size": params.group_size,
                "device": candidate.settings.device,
            }
            (tmp / "job.json").write_text(json.dumps(job))
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from optpipe.passes.quantize.awq import awq_worker; awq_worker(sys.argv[1])",
                    str(tmp / "job.json"),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise RuntimeError(f"AWQ (auto-round) failed in its child process:\n{tail}")
        model = AutoModelForCausalLM.from_pretrained(
            out, device_map=candidate.settings.device, attn_implementation=candidate.settings.attn_implementation
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    keep_packed_on_save(model)
    if packed_fraction(model) != 1.0:
        raise RuntimeError(f"{method}: the loaded checkpoint is not int4-packed in every decoder linear layer")
    info = calib.info | {
        "algorithm": "gptq (optpipe.gptq)" if method == "gptq-4bit" else "awq (auto-round)",
        "scheme": f"int4 symmetric, group {params.group_size}, compressed-tensors pack-quantized",
    }
    return TorchCandidate(model, candidate.tokenizer, candidate.settings).with_settings(
        quantization=method, dtype=dtype_name(model.dtype), calibration=info
    )


def keep_packed_on_save(model) -> None:
    """compressed-tensors decompresses int4 weights into dense ones on the model's first forward (it has
    no int4 matmul in transformers); re-pack them before saving so the checkpoint stays int4."""
    original = model.save_pretrained

    def save_pretrained(*args, **kwargs):
        import torch

        dense = any(
            hasattr(m, "weight_scale") and isinstance(getattr(m, "weight", None), torch.nn.Parameter) for m in model.modules()
        )
        if dense:
            model.hf_quantizer.compressor.compress_model(model)
        return original(*args, **kwargs)

    model.save_pretrained = save_pretrained
