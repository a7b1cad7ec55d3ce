"""How much of its tolerance each floating-point comparison of the test suite uses, on this machine.

A comparison that passes here with 90% of its tolerance used can fail on a machine whose BLAS
build, CPU (OPENBLAS_CORETYPE) or thread count sums in another order; one that uses 10% will not.
Run the suite with this file as a pytest plugin, then print the tests closest to their bounds:

    PYTHONPATH=scripts python -m pytest -q -p tolerance_margins          # writes margins.jsonl
    python scripts/tolerance_margins.py margins.jsonl                     # the report

Every call of `numpy.testing.assert_allclose` (tests/helpers.assert_close included) records
max(|actual - desired| / (atol + rtol * |desired|)) under the running test's id; ratios far above 1
are comparisons expected to fail (inside `pytest.raises` or a strict xfail).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

LOG = os.environ.get("TOLERANCE_MARGINS_LOG", "margins.jsonl")
_real_assert_allclose = np.testing.assert_allclose


def _ratio(actual, desired, rtol: float, atol: float) -> float:
    try:
        a, d = np.broadcast_arrays(np.asarray(actual, np.float64), np.asarray(desired, np.float64))
    except (TypeError, ValueError):
        return -1.0  # not numeric or shapes differ: assert_allclose itself reports it
    if a.size == 0:
        return 0.0
    diff, tol = np.abs(a - d), atol + rtol * np.abs(d)
    finite = np.isfinite(diff)
    if not finite.any():
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
    return float(r[finite].max())


def _recording_assert_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
    with open(LOG, "a") as fh:
        record = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "?").split(" (")[0],
            "ratio": _ratio(actual, desired, rtol, atol),
            "rtol": rtol,
            "atol": atol,
        }
        fh.write(json.dumps(record) + "\n")
    return _real_assert_allclose(actual, desired, rtol, atol, *args, **kwargs)


def pytest_configure(config) -> None:  # the plugin hook: patch before test modules import it
    np.testing.assert_allclose = _recording_assert_allclose


def report(path: str, top: int = 15) -> None:
    worst: dict[str, dict] = {}
    count = 0
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            count += 1
            if r["ratio"] > worst.get(r["test"], {"ratio": -1.0})["ratio"]:
                worst[r["test"]] = r
    passing = {t: r for t, r in worst.items() if r["ratio"] <= 1.0}
    print(f"{count} comparisons in {len(worst)} tests; {len(worst) - len(passing)} tests hold a")
    print("comparison beyond its tolerance (expected failures). Closest to their bound:")
    for t, r in sorted(passing.items(), key=lambda kv: -kv[1]["ratio"])[:top]:
        print(f"  {r['ratio']:6.3f} of rtol {r['rtol']:g} + atol {r['atol']:g}  {t}")


if __name__ == "__main__":
    report(sys.argv[1] if len(sys.argv) > 1 else LOG)
