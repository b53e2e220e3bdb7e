"""The suite's serial lanes form (tests/conftest.py ``SERIAL_LANES``): under
``--dist loadgroup``, every test of a lane runs in one pytest-xdist process.

They silently did not, for two reasons: pytest-xdist read the ``xdist_group`` marks
before conftest added them (the hook is ``tryfirst`` now), and pytest-xdist groups
by rewriting node ids, which pytest 9.2's structured ids ignore
(pytest-dev/pytest-xdist#1386; pytest stays below 9.2). So the training tests ran
on every process at once, and each process trained the shared fixture's model
again."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.processes


def test_a_lanes_tests_run_in_one_xdist_process() -> None:
    # Quick ones that import no TensorFlow: two tests of the training lane, five of none.
    lane_file = "tests/test_cli_training.py"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"]
        + ["--dist", "loadgroup", "-v", lane_file, "tests/test_codes.py"]
        + ["-k", "refuses_an_unknown_name or without_the_dataset or test_codes"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    passed = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED (\S+)", run.stdout)
    training = [(worker, test) for worker, test in passed if test.startswith(lane_file)]
    assert len(training) == 2 and all(test.endswith("@training") for _, test in training), passed
    assert len({worker for worker, _ in training}) == 1, passed
    assert len(passed) == 7, run.stdout[-3000:]
