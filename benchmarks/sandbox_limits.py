"""How promptly the sandbox ends a child: the wall-clock limit's overshoot, and a child started after
``kill_running`` (an interrupted search), each against a child that returns at once, measured in the same run.

    python benchmarks/sandbox_limits.py [--repeats 3]

The tests check what happens (tests/test_sandbox.py: the status and reason of a child past its limit, a
child killed at once after ``kill_running``); how long it takes depends on the machine's load, so it is
measured here instead. For each isolation (``auto``: bubblewrap where usable, ``none``: rlimits only):

* ``echo_s``: a child that returns at once (process start, worker imports, result channel): the reference;
* ``timeout_s``: a busy-looping child under a 1.5 s wall-clock limit (the limit counts from the process start,
  so start-up is inside it), and ``overshoot_s`` = its wall time minus the limit: how long the sandbox takes to
  notice, kill the tree and return;
* ``refused_s``: a busy-looping child (60 s limit) started while ``kill_running`` refuses new children,
  and ``refused_over_echo``: its wall time as a multiple of the reference (below 1: killed before its worker
  had even started; a child left to its limit would take 60 s).

Medians of --repeats; written to benchmarks/results/sandbox_limits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evo.sandbox.runner import (SandboxLimits, allow_new, describe_isolation, kill_running,  # noqa: E402
                                run_in_sandbox)

TESTS = str(REPO / "tests")   # the test entries (tests/sandbox_entries.py: echo, spin) reach the child from here
OUT = REPO / "benchmarks" / "results" / "sandbox_limits.json"
LIMIT_S = 1.5


def timed(entry: str, timeout_s: float, isolation: str) -> tuple[float, str]:
    t0 = time.monotonic()
    res = run_in_sandbox(f"sandbox_entries:{entry}", {}, "", SandboxLimits(timeout_s=timeout_s, isolation=isolation),
                         extra_pythonpath=[TESTS])
    return time.monotonic() - t0, res.status


def measure(isolation: str, repeats: int) -> dict:
    echo, spin, refused = [], [], []
    for _ in range(repeats):
        s, status = timed("echo", 30, isolation)
        assert status == "ok", status
        echo.append(s)
        s, status = timed("spin", LIMIT_S, isolation)
        assert status == "timeout", status
        spin.append(s)
        kill_running()
        try:
            s, status = timed("spin", 60, isolation)
        finally:
            allow_new()
        assert status != "ok", status
        refused.append(s)
    e, t, r = statistics.median(echo), statistics.median(spin), statistics.median(refused)
    return {"isolation": isolation, "protections": describe_isolation(SandboxLimits(isolation=isolation)),
            "echo_s": e, "echo_s_all": echo,
            "timeout_s": t, "timeout_s_all": spin, "limit_s": LIMIT_S, "overshoot_s": t - LIMIT_S,
            "refused_s": r, "refused_s_all": refused, "refused_over_echo": r / e}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    result = {"what": "the sandbox's wall-clock limit and kill_running, against a child that returns at once",
              "conditions": f"{os.cpu_count()} CPUs, load average {load:.1f} at the start (shared machine: timings "
                            f"under load), Python {platform.python_version()}; medians of {args.repeats}",
              "runs": [measure(iso, args.repeats) for iso in ("auto", "none")]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["runs"]:
        print(f"isolation={r['isolation']}: echo {r['echo_s']:.2f} s; {LIMIT_S} s limit ended after "
              f"{r['timeout_s']:.2f} s (overshoot {r['overshoot_s']:+.2f} s); refused child {r['refused_s']:.2f} s "
              f"= {r['refused_over_echo']:.2f}x echo")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
