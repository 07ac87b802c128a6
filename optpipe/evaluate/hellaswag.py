"""HellaSwag acc / acc_norm scored by lm-eval in-process, on the shipped validation data.

lm-eval does the scoring (its `multiple_choice` task: sum of log p(" " + ending | context); acc =
argmax of the sums, acc_norm = argmax of sum / len(ending)); we hand it a local task built from
the shipped file, so nothing is fetched. Per-item results come back so budgets can be judged on
paired differences.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from pydantic import BaseModel

from optpipe.evaluate.data import CONTEXT_FORM, HellaSwagItem
from optpipe.evaluate.sequential import SequentialStop
from optpipe.evaluate.stats import mean_se

TASK_NAME = "optpipe_hellaswag"

_TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


class HellaSwagResult(BaseModel):
    """acc / acc_norm with standard errors, and the per-item scores budgets pair on."""

    n: int
    acc: float
    acc_se: float
    acc_norm: float
    acc_norm_se: float
    item_indices: list[int] = []
    item_acc: list[float] = []
    item_acc_norm: list[float] = []
    item_loglikelihoods: list[list[float]] = []
    context_form: str = CONTEXT_FORM
    scorer: str = "lm-eval"
    seconds: float | None = None
    sequential: SequentialStop | None = None  # early-stopped: how many items of how many, and why


def merge_hellaswag(parts: list[HellaSwagResult]) -> HellaSwagResult:
    """One result from chunks scored one after another (early-stopped evaluation)."""
    acc = [a for p in parts for a in p.item_acc]
    acc_norm = [a for p in parts for a in p.item_acc_norm]
    m_acc, se_acc = mean_se(acc)
    m_norm, se_norm = mean_se(acc_norm)
    return HellaSwagResult(
        n=len(acc),
        acc=m_acc,
        acc_se=se_acc,
        acc_norm=m_norm,
        acc_norm_se=se_norm,
        item_indices=[i for p in parts for i in p.item_indices],
        item_acc=acc,
        item_acc_norm=acc_norm,
        item_loglikelihoods=[ll for p in parts for ll in p.item_loglikelihoods],
    )


def evaluate_hellaswag(lm, items: list[HellaSwagItem]) -> HellaSwagResult:
    """Score `items` with an lm-eval LM (HFLM for torch candidates, any LM subclass otherwise)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="optpipe-hs-") as tmp:
        data = Path(tmp) / "hellaswag.jsonl"
        with data.open("w") as f:
            for it in items:
                f.write(
                    json.dumps({"query": it.context, "choices": list(it.endings), "label": it.label, "index": it.index}) + "\n"
                )
        (Path(tmp) / f"{TASK_NAME}.yaml").write_text(_TASK_YAML.format(name=TASK_NAME, data=json.dumps(str(data))))
        out = simple_evaluate(
            model=lm,
            tasks=[TASK_NAME],
            task_manager=TaskManager(include_path=tmp, include_defaults=False),
            log_samples=True,
            num_fewshot=0,
        )
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    acc = [float(s["acc"]) for s in samples]
    acc_norm = [float(s["acc_norm"]) for s in samples]
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    m_acc, se_acc = mean_se(acc)
    m_norm, se_norm = mean_se(acc_norm)
    return HellaSwagResult(
        n=len(samples),
        acc=m_acc,
        acc_se=se_acc,
        acc_norm=m_norm,
        acc_norm_se=se_norm,
        item_indices=[int(s["doc"]["index"]) for s in samples],
        item_acc=acc,
        item_acc_norm=acc_norm,
        item_loglikelihoods=lls,
    )
