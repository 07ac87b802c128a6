"""`optpipe nightly`: rebuild what a new model release (or package release) changed, record it in the
history, compare it with the previous build and report regressions. Sits between `api` and `history`."""

from optpipe.nightly.config import NightlyConfig, load_nightly
from optpipe.nightly.run import NightlyResult, run_nightly

__all__ = ["NightlyConfig", "NightlyResult", "load_nightly", "run_nightly"]
