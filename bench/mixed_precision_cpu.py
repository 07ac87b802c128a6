"""Mixed precision on real weights without a whole build: per-layer sensitivities, the choice at several
KL limits, and each choice's measured KL and perplexity against uniform int4 and int8 (same RTN grid).

A quick check of the sensitivity model (does the predicted KL track the measured one? what size does
each limit buy?), not a verdict: builds judge candidates (docs/search.md). Runs on CPU or CUDA:

    PYTHONPATH=. python bench/mixed_precision_cpu.py --device cpu --ppl-tokens 2048 --limits 0.005 0.02 0.05
"""

from __future__ import annotations

import argparse
import math
import sys
import time


def main(argv: list[str]) -> int:

    from optpipe.evaluate.data import wikitext_test
    from optpipe.passes.quantize.gptq import quantizable_linears
    from optpipe.passes.quantize.mixed import BITS, _kl, _logprobs, choose_formats, layer_sensitivity, linear_bytes, rtn
    from optpipe.runtime.source import load_model
    from optpipe.spec.model_source import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--limits", type=float, nargs="+", default=[0.005, 0.02, 0.05])
    ap.add_argument("--calib", type=int, nargs=2, default=[4, 128], metavar=("SAMPLES", "SEQ_LEN"))
    ap.add_argument("--ppl-tokens", type=int, default=2048, help="evaluation tokens (from the start of WikiText-2 test)")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    model, tok = load_model(resolve_model(a.model))
    model.to(a.device).eval()
    ids = tok(wikitext_test(), return_tensors="pt", add_special_tokens=False).input_ids[0]
    n_cal, seq = a.calib
    calib = ids[-n_cal * seq :].view(n_cal, seq)  # the end of the text: disjoint from the evaluation tokens
    evaluation = ids[: a.ppl_tokens].view(-1, 512)
    print(
        f"model loaded in {time.perf_counter() - t0:.0f} s; calibration {n_cal}x{seq} tokens, evaluation {evaluation.numel()} tokens"
    )
    formats = ["int4", "int8", "dense"]
    t = time.perf_counter()
    sens = layer_sensitivity(model, calib, formats, a.group_size)
    print(f"sensitivity of {len(sens)} layers x 2 formats in {time.perf_counter() - t:.0f} s")
    dense_b = model.dtype.itemsize
    linears = quantizable_linears(model)
    sizes = {
        n: {f: linear_bytes(m.out_features, m.in_features, f, a.group_size, dense_b) for f in formats} for n, m in linears.items()
    }
    top = sorted(sens, key=lambda n: -sens[n]["int4"])[:5]
    print("most sensitive to int4: " + ", ".join(f"{n.removeprefix('model.layers.')} {sens[n]['int4']:.4g}" for n in top))

    ref = _logprobs(model, evaluation)
    targets = evaluation[:, 1:]
    base_nll = -ref[:, :-1].gather(-1, targets.unsqueeze(-1)).mean()
    originals = {n: m.weight.data.clone() for n, m in linears.items()}

    def measure(choice: dict[str, str]) -> tuple[float, float]:
        for n, m in linears.items():
            fmt = choice[n]
            w = originals[n] if fmt == "dense" else rtn(originals[n], BITS[fmt], a.group_size)[0].to(originals[n].dtype)
            m.weight.data.copy_(w)
        lp = _logprobs(model, evaluation)
        nll = -lp[:, :-1].gather(-1, targets.unsqueeze(-1)).mean()
        return _kl(ref, lp), 100 * math.expm1(float(nll - base_nll))

    rows = [("uniform int4", {n: "int4" for n in linears}), ("uniform int8", {n: "int8" for n in linears})]
    rows += [(f"mixed max_kl={lim:g}", choose_formats(sens, sizes, formats, lim)[0]) for lim in a.limits]
    dense_total = sum(s["dense"] for s in sizes.values())
    print(
        f"\n| choice | int4 / int8 / dense layers | linear MB (dense fp: {dense_total / 1e6:.0f}) | predicted KL | measured KL | ppl rise % |"
    )
    print("|---|---|---|---|---|---|")
    for name, choice in rows:
        counts = "/".join(str(sum(1 for f in choice.values() if f == k)) for k in formats)
        mb = sum(sizes[n][f] for n, f in choice.items()) / 1e6
        pred = sum(sens[n][f] for n, f in choice.items())
        kl, rise = measure(choice)
        print(f"| {name} | {counts} | {mb:.1f} | {pred:.4g} | {kl:.4g} | {rise:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
