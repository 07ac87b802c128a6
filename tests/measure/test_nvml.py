"""NVML's count of other GPU processes: the build process that started the measurement worker holds a
CUDA context but waits; counting it flagged every H200 speed of session 7/8 'under load'."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from optpipe.measure.nvml import Nvml, ancestor_pids


def _nvml_listing(pids: list[int]) -> Nvml:
    nv = Nvml.__new__(Nvml)
    nv.ok, nv.reason, nv.handle = True, "", None
    nv._nv = SimpleNamespace(nvmlDeviceGetComputeRunningProcesses=lambda handle: [SimpleNamespace(pid=p) for p in pids])
    return nv


def test_ancestors_are_the_parent_chain():
    assert os.getppid() in ancestor_pids() and os.getpid() not in ancestor_pids()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from optpipe.measure.nvml import ancestor_pids; import json; print(json.dumps(sorted(ancestor_pids())))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
    )
    assert os.getpid() in json.loads(child.stdout)


def test_the_parent_is_not_load_but_a_stranger_is():
    stranger = 2**22 + 12345  # above pid_max's default: no process of ours
    assert _nvml_listing([os.getpid(), os.getppid()]).other_compute_processes() == 0
    assert _nvml_listing([os.getpid(), os.getppid(), stranger]).other_compute_processes() == 1
