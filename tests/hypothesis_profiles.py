"""Hypothesis profiles of the fuzz tests (``tests/test_fuzz.py``), chosen by ``HYPOTHESIS_PROFILE``.

* ``ci`` (default, what ``make test`` runs): derandomized (the same examples every run, no
  example database), each test's ``examples(n)`` budget as given: a few hundred inputs in all,
  under a minute.
* ``long`` (by hand): random, ``HYPOTHESIS_FACTOR`` (default 25) times the budgets, e.g.
  ``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_fuzz.py
  --hypothesis-show-statistics``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # file I/O and imports make single examples slow now and then
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.filter_too_much],
    "print_blob": True,
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("long", database=None, **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
FACTOR = int(os.environ.get("HYPOTHESIS_FACTOR", "25")) if PROFILE == "long" else 1


def examples(n: int) -> settings:
    """``@examples(n)``: ``n`` examples in the ci profile, ``n * FACTOR`` in the long one."""
    return settings(max_examples=n * FACTOR)
