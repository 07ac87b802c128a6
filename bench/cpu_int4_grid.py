"""Why 4-bit methods lose so much on the bundled SmolLM2: its weights already sit on a 4-bit grid.

The bundled model is a GGUF Q4_1 file (asymmetric 4-bit, blocks of 32). transformers de-quantizes it
to fp32, and that is optpipe's baseline. Re-quantizing it to another grid (symmetric, or groups of
64) adds error that a model trained in bf16 would not show; asymmetric round-to-nearest in groups of
32 lands back on the GGUF grid exactly. This script measures WikiText-2 perplexity (first N tokens,
window 1024, stride 512) for RTN symmetric/asymmetric and optpipe's GPTQ at each group size:

    python bench/cpu_int4_grid.py 64 32        # ~6 minutes on a 2-core CPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKENS = 4096


def perplexity(model, tokenizer) -> float:
    import torch

    from optpipe.evaluate.perplexity import evaluate_perplexity, wikitext_ids

    ids = wikitext_ids(tokenizer, TOKENS)
    with torch.inference_mode():
        return evaluate_perplexity(lambda x: model(input_ids=x).logits, ids, 1024, 512).ppl


def round_to_nearest(model, group: int, symmetric: bool) -> None:
    """In-place RTN int4 of every decoder linear: symmetric like gptq.py, or asymmetric (min..max)."""
    import torch

    from optpipe.passes.quantize.gptq import QMAX, QMIN, SCALE_DIV, quantizable_linears

    for mod in quantizable_linears(model).values():
        w = mod.weight.data.float()
        wg = w.view(w.shape[0], -1, group)
        if symmetric:
            s = (wg.abs().amax(-1, keepdim=True) / SCALE_DIV).clamp(min=1e-30)
            q = torch.clamp(torch.round(wg / s), QMIN, QMAX) * s
        else:
            lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
            s = ((hi - lo) / 15).clamp(min=1e-30)
            q = torch.clamp(torch.round((wg - lo) / s), 0, 15) * s + lo
        mod.weight.data.copy_(q.view_as(w))


def main(groups: list[int]) -> None:
    import torch

    from optpipe.passes.quantize.calibration import wikitext_heldout
    from optpipe.passes.quantize.gptq import gptq_model
    from optpipe.runtime.source import load_model
    from optpipe.spec.model_source import resolve_model

    torch.manual_seed(0)
    resolved = resolve_model("smollm2-135m")
    model, tok = load_model(resolved, "fp32")
    print(f"fp32 (GGUF Q4_1 de-quantized)      ppl {perplexity(model, tok):.4f}", flush=True)
    for g in groups:
        for sym in (True, False):
            model, tok = load_model(resolved, "fp32")
            round_to_nearest(model, g, sym)
            print(f"RTN {'symmetric ' if sym else 'asymmetric'} group {g:3d}       ppl {perplexity(model, tok):.4f}", flush=True)
        model, tok = load_model(resolved, "fp32")
        calib = wikitext_heldout(tok, 32, 512, TOKENS)
        t = time.perf_counter()
        gptq_model(model, calib.ids, g)
        print(
            f"GPTQ symmetric group {g:3d} (32x512) ppl {perplexity(model, tok):.4f}  ({time.perf_counter() - t:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [64, 32])
