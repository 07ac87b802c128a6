"""Issue 14's CPU table from build manifests: `python table.py manifest.json [manifest.json ...]`.

Each candidate row once (a later build's cached baseline / prune rows are the same measurement); a
distilled row is named after its parent and its budget; the last lines say how much of the perplexity
that pruning lost the distillation won back."""

import json
import sys


def row(c: dict) -> dict:
    m = c["measurements"]
    hs, kl = m.get("hellaswag") or {}, m.get("kl") or {}
    d = m["runtime"].get("distill")
    return {
        "params_m": m["parameters"] / 1e6,
        "size_gb": m["size_bytes"] / 1e9,
        "decode": m["benchmark"]["decode_tok_s"]["mean"],
        "decode_cv": m["benchmark"]["decode_tok_s"]["cv"],
        "hs": f"{100 * hs['acc_norm']:.1f} ± {100 * hs['acc_norm_se']:.1f} ({hs['n']})" if hs else "-",
        "ppl": m["perplexity"]["ppl"],
        "kl": "reference" if kl.get("mean") is None else f"{kl['mean']:.4f} ± {kl['se']:.4f}",
        "method": (m["runtime"].get("prune") or {}).get("method"),
        "distill": d,
    }


rows: dict[str, dict] = {}
for path in sys.argv[1:]:
    for c in json.load(open(path))["candidates"]:
        if c.get("measurements") is None:
            continue
        r = row(c)
        name = c["name"]
        if r["distill"]:
            name = f"prune:{r['method']} + distill {r['distill']['seconds'] / 60:.1f} min"
        rows.setdefault(name, r)
print("| candidate | params (M) | size (GB) | decode tok/s (CV) | HellaSwag acc_norm ± se (n) | ppl | KL vs baseline ± se |")
print("|---|---|---|---|---|---|---|")
for name, r in rows.items():
    print(
        f"| {name} | {r['params_m']:.1f} | {r['size_gb']:.3f} | {r['decode']:.1f} ({100 * r['decode_cv']:.0f} %) | {r['hs']} "
        f"| {r['ppl']:.2f} | {r['kl']} |"
    )
print()
base = rows["baseline"]["ppl"]
for name, r in rows.items():
    if r["distill"]:
        pruned = rows[f"prune:{r['method']}"]["ppl"]
        d = r["distill"]
        print(
            f"- **{name}**: pruning raised ppl {base:.2f} -> {pruned:.2f}; distillation ({d['steps']} steps, {d['tokens']} tokens, "
            f"{d['seconds']:.0f} s, loss {d['first_loss']:.3f} -> {d['final_loss']:.3f}) brought it to {r['ppl']:.2f}: "
            f"recovered {100 * (pruned - r['ppl']) / (pruned - base):.0f} % of the loss (goal >= 50 %)"
        )
