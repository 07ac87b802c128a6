"""The forecast must run where torch is not installed: importing it and reading checkpoints may not
import torch, directly or through a dependency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = """
import sys
import optpipe.forecast as f
from optpipe.forecast import candidates, dtypes, formats, headers, memory, shape, speed
s = f.read_hf_directory(sys.argv[1])
g = f.read_gguf(sys.argv[2])
rows = f.render_table(f.forecast_chain(s, [{"name": "a", "dtype": "fp16"}], 16, 8, target_memory_gb=1,
                                       target_bandwidth_gbs=100))
m = f.fit_step_time([(1e9, 0.01), (2e9, 0.02), (3e9, 0.031)], 1000)
f.project(m, 2e9, 500)
assert g.total_params > 0 and len(rows) == 2
"""


def run(code: str, *args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False, capture_output=True, text=True, cwd=REPO)


def test_forecast_never_imports_torch(tiny_hf_dir, tiny_gguf):
    check = "\nloaded = sorted(k for k in sys.modules if k.split('.')[0] == 'torch')\nassert not loaded, loaded\n"
    proc = run(RUN + check, tiny_hf_dir, tiny_gguf)
    assert proc.returncode == 0, proc.stderr


def test_forecast_runs_with_torch_unimportable(tiny_hf_dir, tiny_gguf):
    block = "import sys\nsys.modules['torch'] = None  # `import torch` now raises ImportError\n"
    proc = run(block + RUN, tiny_hf_dir, tiny_gguf)
    assert proc.returncode == 0, proc.stderr


def test_the_check_would_see_torch(tiny_hf_dir, tiny_gguf):
    """Guard on the guard: the same check fails once something imports torch."""
    check = "\nimport torch\nloaded = sorted(k for k in sys.modules if k.split('.')[0] == 'torch')\nassert not loaded, loaded\n"
    proc = run(RUN + check, tiny_hf_dir, tiny_gguf)
    assert proc.returncode != 0 and "AssertionError" in proc.stderr
