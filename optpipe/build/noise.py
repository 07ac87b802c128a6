"""Keep third-party noise out of the user's console: during a build, log records of the ML
libraries and Python warnings raised outside optpipe go to the build's log file.

transformers imports torchao whenever it is installed (transformers.quantizers.auto), so
torchao's "Failed to load ..._C_mxfp8...so" and torch's pytree deprecation warnings appear on any
build, whichever passes run; optpipe itself imports quantization libraries only inside the passes
that use them. What optpipe has to say goes through its own console output and its own warnings,
which stay visible.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THIRD_PARTY = (
    "torch",
    "torchao",
    "transformers",
    "bitsandbytes",
    "gptqmodel",
    "llmcompressor",
    "accelerate",
    "optimum",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "huggingface_hub",
    "lm_eval",
    "gguf",
)
OURS = str(Path(__file__).resolve().parent.parent)  # the optpipe package directory


def _configure_first() -> None:
    """torch and transformers install their stderr handlers when first imported; import them
    before replacing those handlers, or they would come back."""
    import torch  # noqa: F401

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger("transformers")
    except ImportError:
        pass


@contextmanager
def third_party_logs_to(log_path: Path) -> Iterator[None]:
    """Send third-party log records (and warnings raised outside optpipe) to `log_path` while the
    block runs; restore every logger and the warning hook afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _configure_first()
    saved = []
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    root = logging.getLogger()
    if not root.handlers:  # else the records of any other library reach stderr through logging.lastResort
        saved.append((root, [], root.propagate))
        root.handlers = [handler]
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(OURS):
            show(message, category, filename, lineno, file, line)
        else:
            handler.emit(
                logging.LogRecord(
                    "py.warnings", logging.WARNING, str(filename), lineno, f"{category.__name__}: {message}", None, None
                )
            )

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        warnings.showwarning = show
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()
