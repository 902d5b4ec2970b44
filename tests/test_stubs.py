"""The hand-written stubs (_core.pyi) agree with the native module (mypy.stubtest)."""

import subprocess
import sys

import pytest


def test_core_stubs_match_the_native_module():
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy.stubtest", "polyvtd._core"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
