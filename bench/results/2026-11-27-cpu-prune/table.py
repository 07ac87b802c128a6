"""Print results.json (written by measure.py) as a markdown table, with perplexity recovered by distillation."""

import json
from pathlib import Path

data = json.loads((Path(__file__).parent / "results.json").read_text())
rows = {r["candidate"]: r for r in data["rows"]}
print("| candidate | params (M) | size (GB) | decode tok/s | HellaSwag acc_norm ± se (n) | ppl | KL vs baseline ± se |")
print("|---|---|---|---|---|---|---|")
for r in data["rows"]:
    print(
        f"| {r['candidate']} | {r['params'] / 1e6:.1f} | {r['size_bytes'] / 1e9:.3f} | {r['decode_tok_s']:.1f} "
        f"| {100 * r['hellaswag_acc_norm']:.1f} ± {100 * r['hellaswag_se']:.1f} ({r['hellaswag_n']}) "
        f"| {r['ppl']:.2f} | {r['kl_mean']:.4f} ± {r['kl_se'] or 0:.4f} |"
    )
base = rows["baseline"]["ppl"]
for m in ("depth", "width"):
    pruned, dist = rows.get(f"prune:{m}"), rows.get(f"prune:{m} + distill")
    if pruned and dist:
        lost = pruned["ppl"] - base
        won = pruned["ppl"] - dist["ppl"]
        d = dist["record"]["distill"]
        print(
            f"\n{m}: pruning raised ppl {base:.2f} -> {pruned['ppl']:.2f}; distillation ({d['steps']} steps, {d['tokens']} tokens, "
            f"{d['seconds']:.0f} s, loss {d['first_loss']:.3f} -> {d['final_loss']:.3f}) brought it to {dist['ppl']:.2f}: "
            f"recovered {100 * won / lost:.0f} % of the loss (goal >= 50 %)"
        )
