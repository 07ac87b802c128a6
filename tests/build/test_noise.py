"""Third-party noise stays out of the console: quantization libraries are imported only by the passes
that use them, and library log records / warnings go to the build's log file."""

import subprocess
import sys
import textwrap

import pytest

QUANT_LIBS = ("torchao", "bitsandbytes", "gptqmodel", "llmcompressor")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_pass_modules_do_not_import_quantization_libraries():
    code = f"""
        import sys
        import optpipe.passes, optpipe.passes.precision_cast, optpipe.passes.attention, optpipe.passes.compile
        import optpipe.passes.quantize, optpipe.build.engine, optpipe.measure.worker
        from optpipe.passes import get_pass
        get_pass("precision_cast"); get_pass("quantize")
        print(sorted(m for m in {QUANT_LIBS!r} if m in sys.modules))
    """
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_third_party_records_go_to_the_log_not_stderr(tmp_path):
    """What a bf16-only build imports (a transformers Llama, which imports torchao when installed)
    prints nothing; torchao's and torch's records land in the log; optpipe's own warnings still show."""
    log = tmp_path / "logs" / "build.log"
    code = f"""
        import warnings, logging
        from pathlib import Path
        from optpipe.build.noise import third_party_logs_to, OURS
        with third_party_logs_to(Path({str(log)!r})):
            import torchao  # noqa: F401  (transformers imports it for any model when it is installed)
            logging.getLogger("torch.utils._pytree").warning("pytree deprecation stand-in")
            logging.getLogger("some.other.lib").warning("other library record")
            warnings.warn_explicit("third-party warning", UserWarning, "/site-packages/lib.py", 1)
            warnings.warn_explicit("optpipe's own warning", UserWarning, OURS + "/x.py", 1)
        logging.getLogger("torch").warning("after the build: torch's handler is back")
    """
    res = _run(code)
    assert res.returncode == 0, res.stderr
    for noise in ("Failed to load", "_C_mxfp8", "pytree", "other library record", "third-party warning"):
        assert noise not in res.stderr, res.stderr
    assert "optpipe's own warning" in res.stderr and "after the build" in res.stderr
    text = log.read_text()
    assert "pytree deprecation stand-in" in text and "other library record" in text and "third-party warning" in text


@pytest.mark.slow
def test_cli_build_stderr_has_no_third_party_noise(tiny_model_dir, tmp_path):
    from tests.conftest import tiny_recipe_text

    recipe = tmp_path / "r.yaml"
    recipe.write_text(tiny_recipe_text(tiny_model_dir, tmp_path / "out", passes="  - pass: precision_cast\n    dtype: bf16\n"))
    res = _run(f"from optpipe.cli import app; app(['build', {str(recipe)!r}])")
    assert "Failed to load" not in res.stderr and "_pytree" not in res.stderr, res.stderr
    assert (tmp_path / "out" / "logs" / "build.log").exists()
