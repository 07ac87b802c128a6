"""Issue 14's CPU table through the API, in one process (the shared 2-core machine was too loaded for the
build's one-process-per-candidate measurement to finish in time): baseline, prune depth / width, each then
distilled; HellaSwag, WikiText-2 perplexity, KL vs baseline, decode tok/s, params, size. Run with
PYTHONPATH=<repo>; arguments: distill minutes, HellaSwag items, torch threads."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from optpipe.evaluate.data import benchmark_prompt_text, hellaswag_subset
from optpipe.evaluate.hellaswag import evaluate_hellaswag
from optpipe.evaluate.kl import LogprobRecorder, kl_from_reference
from optpipe.evaluate.lm_adapters import scoring_lm
from optpipe.evaluate.perplexity import evaluate_perplexity, wikitext_ids
from optpipe.passes import PassContext, get_pass
from optpipe.runtime.candidate import RuntimeSettings
from optpipe.runtime.host_probe import detect_host
from optpipe.runtime.source import load_model
from optpipe.runtime.torch_candidate import TorchCandidate
from optpipe.spec.model_source import resolve_model
from optpipe.spec.settings import EvaluationSettings
from optpipe.spec.targets import load_target

MINUTES, ITEMS, THREADS = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
OUT = Path(__file__).parent / "results.json"
torch.set_num_threads(THREADS)
PPL_TOKENS, KL_TOKENS = 2048, 512
rows, ref = [], None


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def decode_tok_s(cand, new=32):
    ids = cand.tokenizer(benchmark_prompt_text(), return_tensors="pt", add_special_tokens=False).input_ids[:, :64]
    dec = cand.decoder()
    out = []
    for _ in range(2):
        with torch.inference_mode():
            dec.reset(1, ids.shape[1] + new)
            tok = dec.prefill(ids)
            t = time.perf_counter()
            for _ in range(new - 1):
                tok = dec.step(tok)
            out.append((new - 1) / (time.perf_counter() - t))
    return max(out)


def measure(name, cand, extra=None):
    global ref
    log(f"measure {name}")
    with tempfile.TemporaryDirectory() as d:
        cand.save(d)
        size = sum(p.stat().st_size for p in Path(d).glob("*.safetensors"))
    hs = evaluate_hellaswag(scoring_lm(cand, 8), hellaswag_subset(ITEMS, 1234))
    rec = LogprobRecorder(KL_TOKENS)
    ppl = evaluate_perplexity(cand.logits, wikitext_ids(cand.tokenizer, PPL_TOKENS), 512, 256, on_logprobs=rec)
    kl = None
    if ref is None:
        ref = rec.tensor().clone()
    else:
        kl = kl_from_reference(ref, rec.tensor())
    row = {
        "candidate": name,
        "params": cand.num_parameters(),
        "size_bytes": size,
        "decode_tok_s": decode_tok_s(cand),
        "hellaswag_acc_norm": hs.acc_norm,
        "hellaswag_se": hs.acc_norm_se,
        "hellaswag_n": hs.n,
        "ppl": ppl.ppl,
        "kl_mean": kl.mean if kl else 0.0,
        "kl_se": kl.se if kl else 0.0,
        "record": extra or {},
    }
    rows.append(row)
    OUT.write_text(json.dumps({"minutes": MINUTES, "items": ITEMS, "threads": THREADS, "rows": rows}, indent=1))
    log(json.dumps({k: v for k, v in row.items() if k != "record"}))


work = Path(tempfile.mkdtemp(prefix="h14-"))
rm = resolve_model("smollm2-135m")
model, tok = load_model(rm)
base = TorchCandidate(model, tok, RuntimeSettings())
base.save(work / "baseline")  # the teacher, as a model directory (faster to load than the GGUF again)
ctx = PassContext(
    target=load_target("cpu-x86"),
    host=detect_host(),
    device="cpu",
    evaluation=EvaluationSettings(perplexity_tokens=PPL_TOKENS, kl_tokens=KL_TOKENS),
    work_dir=work,
    model=rm,
)
measure("baseline", base)
P, D = get_pass("prune"), get_pass("distill")
for method in ("depth", "width"):
    log(f"prune {method}")
    src = TorchCandidate(model, tok, RuntimeSettings())  # prune builds a new model; the baseline is untouched
    pruned = P.apply(src, P.Params(methods=[method], depth_blocks=0.25, width_fraction=0.25, calibration_samples=16), ctx)
    rec = {k: v for k, v in pruned.settings.prune.items() if k not in ("channels_kept", "calibration")}
    measure(f"prune:{method}", pruned, rec)
    log(f"distill {method} for {MINUTES} min")
    params = D.Params(
        teacher=str(work / "baseline"),
        minutes=MINUTES,
        temperature=1.0,
        learning_rate=2e-4,
        warmup_steps=2,
        batch_size=2,
        calibration_seq_len=128,
        calibration_samples=512,
        gradient_checkpointing=False,
        log_every=2,
        checkpoint_every=1000,
    )
    distilled = D.apply(pruned, params, ctx)
    measure(f"prune:{method} + distill", distilled, rec | {"distill": distilled.settings.distill})
log("done")
