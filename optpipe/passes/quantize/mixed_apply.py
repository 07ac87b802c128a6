"""The quantize pass's `mixed-precision` method: sensitivities (cached), the per-layer choice, the
compressed-tensors checkpoint, loaded back through stock transformers like GPTQ's."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from optpipe.passes.quantize.mixed import (
    SENSITIVITY_VERSION,
    cached_sensitivity,
    default_max_kl,
    layer_sensitivity,
    linear_bytes,
    pack_mixed,
    parent_hash,
    predicted_kl,
    stop_on_paths,
)


def apply_mixed(candidate, params, ctx):
    from transformers import AutoModelForCausalLM

    from optpipe.passes.quantize.calibrated import keep_packed_on_save
    from optpipe.passes.quantize.calibration import calibration_data
    from optpipe.passes.quantize.gptq import check_group_size, quantizable_linears
    from optpipe.runtime.dtypes import dtype_name
    from optpipe.runtime.torch_candidate import TorchCandidate

    mp = params.mixed_precision
    model = candidate.model
    check_group_size(model, params.group_size)
    calib_params = params.model_copy(
        update={"calibration_samples": mp.sensitivity_samples, "calibration_seq_len": mp.sensitivity_seq_len}
    )
    calib = calibration_data(calib_params, candidate.tokenizer, ctx.evaluation.perplexity_tokens)
    key = {
        "version": SENSITIVITY_VERSION,
        "parent": parent_hash(ctx.parent_dir, model),
        "formats": sorted(mp.formats),
        "group_size": params.group_size,
        "calibration": calib.info,
        "device": candidate.settings.device,
    }
    cache_dir = ctx.resume_dir.parent / "sensitivity" if ctx.resume_dir is not None else None
    sensitivity, was_cached = cached_sensitivity(
        cache_dir, key, lambda: layer_sensitivity(model, calib.ids, mp.formats, params.group_size)
    )
    dense = model.dtype.itemsize
    sizes = {
        n: {f: linear_bytes(m.out_features, m.in_features, f, params.group_size, dense) for f in mp.formats}
        for n, m in quantizable_linears(model).items()
    }
    max_kl = mp.max_kl if mp.max_kl is not None else default_max_kl(ctx.budget)
    path, choice, measured, probes, paths = stop_on_paths(
        model, calib.ids, sensitivity, sizes, mp.formats, max_kl, params.group_size, mp.stop
    )
    pack_mixed(model, choice, params.group_size)
    tmp = Path(tempfile.mkdtemp(prefix="optpipe-mixed-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        loaded = AutoModelForCausalLM.from_pretrained(
            tmp, device_map=candidate.settings.device, attn_implementation=candidate.settings.attn_implementation
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    loaded.eval()
    keep_packed_on_save(loaded)

    def counts(c: dict[str, str]) -> dict[str, int]:
        return {f: sum(1 for x in c.values() if x == f) for f in mp.formats}

    info = calib.info | {
        "algorithm": "mixed precision (optpipe): per-layer RTN int4/int8/dense chosen from measured KL sensitivity",
        "scheme": f"symmetric, group {params.group_size}, compressed-tensors pack-quantized, one config group per format",
        "layers": counts(choice),
        "stop": mp.stop,
        "max_kl": max_kl,
        "predicted_kl": round(predicted_kl(sensitivity, choice), 6),  # the sum of single-layer KLs
        "measured_kl": None if measured is None else round(measured, 6),  # the chosen configuration, calibration tokens
        "kl_probes": probes,  # forwards over whole configurations (the bisections of both paths)
        "path": path,  # which upgrade path gave the smaller configuration
        "paths": {
            p: {
                "layers": counts(r["choice"]),
                "measured_kl": None if r["measured_kl"] is None else round(r["measured_kl"], 6),
                "linear_bytes": round(r["bytes"]),
            }
            for p, r in paths.items()
        },
        "sum_rule_layers": counts(paths["greedy"]["sum_rule"]),  # the old rule (sum, greedy path), for comparison
        "sensitivity_cached": was_cached,
        "linear_bytes": round(paths[path]["bytes"]),
        "choice": choice,
    }
    return TorchCandidate(loaded, candidate.tokenizer, candidate.settings).with_settings(
        quantization="mixed-precision", dtype=dtype_name(loaded.dtype), calibration=info
    )
