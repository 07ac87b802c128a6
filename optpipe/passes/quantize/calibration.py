"""Calibration data for data-driven quantization (GPTQ, AWQ).

Two sources:
- `wikitext-heldout` (default): a held-out slice from the END of the shipped WikiText-2 test token
  stream. Perplexity scores the FIRST `evaluation.perplexity_tokens` tokens of the same text, so the
  slice must start at or after that count; when it would not, this module refuses with an error that
  names the fields to change instead of calibrating on the evaluation data.
- `file`: a UTF-8 text file of the user's, cut into consecutive samples from its start.

Either way the result carries a small JSON-able description (source, token range or file sha256,
samples, sequence length) that the candidate records in its runtime settings, so the manifest says
exactly what the model was calibrated on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optpipe.errors import PassFailed


class CalibrationOverlapError(PassFailed):
    """The held-out calibration slice would overlap the perplexity evaluation tokens."""


@dataclass
class CalibrationData:
    ids: Any  # LongTensor [samples, seq_len]
    info: dict[str, Any]


def _tokenize(tokenizer, text: str):
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]


def wikitext_heldout(tokenizer, samples: int, seq_len: int, eval_tokens: int) -> CalibrationData:
    """`samples` x `seq_len` tokens from the end of the WikiText-2 test stream, disjoint from the
    first `eval_tokens` tokens that perplexity scores."""
    from optpipe.evaluate.data import wikitext_test

    ids = _tokenize(tokenizer, wikitext_test())
    total, need = int(ids.numel()), samples * seq_len
    start = total - need
    if start < eval_tokens or start < 0:
        raise CalibrationOverlapError(
            f"calibration 'wikitext-heldout' needs the last {need} tokens of WikiText-2 test "
            f"(tokens [{max(start, 0)}, {total}) of {total}; calibration_samples={samples} x calibration_seq_len={seq_len}) "
            f"but evaluation.perplexity_tokens={eval_tokens} scores tokens [0, {eval_tokens}): they would overlap. "
            "Lower evaluation.perplexity_tokens, lower calibration_samples / calibration_seq_len, "
            "or set calibration: file with calibration_file"
        )
    window = ids[start:].reshape(samples, seq_len).clone()
    return CalibrationData(
        window,
        {
            "source": "wikitext-heldout",
            "dataset": "wikitext-2-raw-v1 test (shipped)",
            "token_range": [start, total],
            "eval_token_range": [0, eval_tokens],
            "samples": samples,
            "seq_len": seq_len,
        },
    )


def text_file(tokenizer, path: str | Path, samples: int, seq_len: int) -> CalibrationData:
    """Up to `samples` consecutive `seq_len`-token chunks from the start of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration_file {str(path)!r} does not exist")
    raw = path.read_bytes()
    ids = _tokenize(tokenizer, raw.decode("utf-8"))
    n = min(samples, int(ids.numel()) // seq_len)
    if n < 1:
        raise ValueError(
            f"calibration_file {str(path)!r} has {ids.numel()} tokens, fewer than one sample of calibration_seq_len={seq_len}"
        )
    return CalibrationData(
        ids[: n * seq_len].reshape(n, seq_len).clone(),
        {
            "source": "file",
            "file": str(path),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "token_range": [0, n * seq_len],
            "samples": n,
            "seq_len": seq_len,
        },
    )


def calibration_data(params, tokenizer, eval_tokens: int) -> CalibrationData:
    """The calibration set a quantize pass's params ask for; `eval_tokens` is how many leading
    WikiText-2 test tokens this build's perplexity scores (the held-out slice must avoid them)."""
    if params.calibration == "file":  # QuantizeParams guarantees calibration_file is set
        return text_file(tokenizer, params.calibration_file, params.calibration_samples, params.calibration_seq_len)
    return wikitext_heldout(tokenizer, params.calibration_samples, params.calibration_seq_len, eval_tokens)
