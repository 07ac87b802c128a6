"""Model releases for the nightly figures (bench/results/2026-11-27-nightly/README.md).

    python bench/nightly_release.py dequantize OUT_DIR        # the bundled SmolLM2 GGUF -> an fp32 HF directory
    python bench/nightly_release.py perturb OUT_DIR --rel 0.08 # a "new release": every 2-D weight + N(0, (rel*std)^2)

The perturbation is seeded (seed 0), so the changed release is the same on every run."""

from __future__ import annotations

import argparse
from pathlib import Path


def dequantize(out: Path) -> None:
    from optpipe.runtime.source import load_model  # de-quantizes to fp32 and drops transformers' GGUF marker
    from optpipe.spec.model_source import resolve_model

    model, tok = load_model(resolve_model("smollm2-135m"))
    model.save_pretrained(out)
    tok.save_pretrained(out)


def perturb(out: Path, rel: float) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    for f in sorted(out.glob("*.safetensors")):
        tensors = load_file(f)
        for name, t in tensors.items():
            if t.ndim == 2 and t.is_floating_point():
                tensors[name] = t + torch.randn_like(t) * (rel * t.float().std().item())
        save_file(tensors, f, metadata={"format": "pt"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["dequantize", "perturb"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rel", type=float, default=0.08)
    args = ap.parse_args()
    if args.action == "dequantize":
        dequantize(args.out)
    else:
        perturb(args.out, args.rel)


if __name__ == "__main__":
    main()
