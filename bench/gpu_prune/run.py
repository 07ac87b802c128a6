"""Issue 14's GPU rows: recipes/gpu-prune.yaml built twice on the bundled SmolLM2, once per prune method
(depth, width), each pruned candidate then distilled for MINUTES on the card (bf16 autocast, batch 16 x
512 tokens); the compile pass is left out (its decode speed is issue 12's, not this table's). Both builds
share optpipe's result cache, so the baseline and the bf16 cast are measured once.

    python bench/gpu_prune/run.py OUT [--minutes 4]        # on the GPU machine (bench/gpu_bundled_model.sh)
    python bench/gpu_prune/run.py OUT --table               # the markdown table of both builds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_recipe(out: Path, method: str, minutes: float) -> Path:
    r = yaml.safe_load((ROOT / "recipes" / "gpu-prune.yaml").read_text())
    r["passes"] = [p for p in r["passes"] if p["pass"] != "compile"]
    for p in r["passes"]:
        if p["pass"] == "prune":
            p["methods"] = [method]
        if p["pass"] == "distill":
            p["minutes"] = minutes
    r["output_dir"] = str(out / method)
    r["stop"] = "best"
    path = out / f"gpu-prune-{method}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def table(out: Path) -> str:
    rows = ["| build | candidate | params M | size GB | decode tok/s | HellaSwag acc_norm % ± se (n) | ppl | KL vs baseline ± se | distill |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in ("depth", "width"):
        manifest = out / method / "manifest.json"
        if not manifest.exists():
            rows.append(f"| {method} | (no manifest) |||||||| ")
            continue
        for c in json.loads(manifest.read_text())["candidates"]:
            m = c.get("measurements") or {}
            if not m:
                continue
            hs, ppl, kl = m.get("hellaswag") or {}, m.get("perplexity") or {}, m.get("kl") or {}
            bench = (m.get("benchmark") or {}).get("decode_tok_s") or {}
            d = (m.get("runtime") or {}).get("distill") or {}
            dist = (
                f"{d.get('steps')} steps, {d.get('tokens')} tok, {d.get('seconds', 0):.0f} s, loss {d.get('first_loss') or 0:.3f} -> {d.get('final_loss') or 0:.3f}"
                if d
                else ""
            )
            rows.append(
                f"| {method} | {c['name']} | {(m.get('parameters') or 0) / 1e6:.1f} | {(m.get('size_bytes') or 0) / 1e9:.3f} | "
                f"{bench.get('mean', 0):.1f} | {100 * hs.get('acc_norm', 0):.1f} ± {100 * hs.get('acc_norm_se', 0):.1f} ({hs.get('n')}) | "
                f"{ppl.get('ppl', 0):.2f} | {kl.get('mean') or 0:.3f} ± {kl.get('se') or 0:.3f} | {dist} |"
            )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    if not a.table:
        out.mkdir(parents=True, exist_ok=True)
        for method in ("depth", "width"):
            rc = subprocess.call(
                [sys.executable, "-c", "from optpipe.cli import app; app()", "build", str(write_recipe(out, method, a.minutes))]
            )
            print(f"build {method}: exit {rc}", flush=True)
    text = table(out)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
