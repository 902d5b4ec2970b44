"""Shared pytest configuration: a hypothesis profile sized for a 2-core CI box (no deadline:
the first call of a kernel may compile or spin up a thread pool)."""

import os
import sys

from hypothesis import HealthCheck, settings

# Make `import reference` work however pytest is invoked (rootdir or tests/ as cwd).
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "polyvtd",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
# HYPOTHESIS_PROFILE=thorough runs many more examples (minutes, not for CI).
settings.register_profile("thorough", parent=settings.get_profile("polyvtd"), max_examples=1500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "polyvtd"))
