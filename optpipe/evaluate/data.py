"""The shipped evaluation data (see optpipe/_data/eval/PROVENANCE.md). Never fetched at run time."""

from __future__ import annotations

import bz2
import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "_data" / "eval"
HELLASWAG_FILE = DATA_DIR / "hellaswag_val_full.txt.bz2"
WIKITEXT_FILE = DATA_DIR / "wikitext-2-raw-test.txt.bz2"
WIKITEXT_MD5 = "7646de4fa2ddef8d6781e2e1fbcbfb47"  # LF line endings (1,296,370 bytes)
HELLASWAG_TOTAL = 10042
CONTEXT_FORM = "lm-eval-approx: first letter after the context's last '. ' capitalized"


@dataclass(frozen=True)
class HellaSwagItem:
    index: int  # position in the full validation split
    context: str
    label: int
    endings: tuple[str, str, str, str]


def lm_eval_context(raw: str) -> str:
    """Approximate lm-eval's `ctx_a + " " + ctx_b.capitalize()` from the joined context."""
    cut = raw.rfind(". ")
    if cut < 0:
        return raw
    head, tail = raw[: cut + 2], raw[cut + 2 :]
    return head + tail[:1].upper() + tail[1:]


@lru_cache(maxsize=1)
def hellaswag_all() -> tuple[HellaSwagItem, ...]:
    lines = bz2.open(HELLASWAG_FILE, "rt", encoding="utf-8").read().split("\n")
    items = []
    for i in range(0, len(lines) - 5, 6):
        endings = tuple(lines[i + 2 : i + 6])
        items.append(HellaSwagItem(i // 6, lm_eval_context(lines[i]), int(lines[i + 1]), endings))  # type: ignore[arg-type]
    if len(items) != HELLASWAG_TOTAL:
        raise RuntimeError(f"{HELLASWAG_FILE} holds {len(items)} items, expected {HELLASWAG_TOTAL}: reinstall optpipe")
    return tuple(items)


def hellaswag_subset(n: int, seed: int) -> list[HellaSwagItem]:
    """A fixed-seed sample of n items (all of them when n >= 10,042), in file order."""
    items = hellaswag_all()
    if n >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]


@lru_cache(maxsize=1)
def wikitext_test() -> str:
    raw = bz2.open(WIKITEXT_FILE, "rb").read()
    digest = hashlib.md5(raw).hexdigest()
    if digest != WIKITEXT_MD5:
        raise RuntimeError(f"{WIKITEXT_FILE} is corrupt (md5 {digest}, expected {WIKITEXT_MD5}): reinstall optpipe")
    return raw.decode("utf-8")


def benchmark_prompt_text() -> str:
    """Deterministic natural text for benchmark prompts: the start of the WikiText-2 test split."""
    return re.sub(r"\s+", " ", wikitext_test()[:20000]).strip()
