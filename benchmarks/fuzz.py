"""The fuzz suite (tests/fuzz) with many more generated cases: every command's numeric options,
output paths, architecture, table, model and CSV files, store rows, damaged run directories
resumed and read by the report. Prints the counts docs/reliability.md records.

    python benchmarks/fuzz.py      # HWNAS_FUZZ_SCALE=5 by default: about 4,400 cases

Exit status 1 when any case broke the property (a traceback, a NaN or non-positive latency,
a lost record or a changed run directory after a refused resume)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HWNAS_FUZZ_SCALE", "5")  # read when the tests are imported


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hwnas-fuzz-") as tmp:
        work = Path(tmp)
        os.environ["HWNAS_CACHE"] = str(work / "cache")  # never the user's cache or store
        os.environ["HWNAS_DB"] = str(work / "cache" / "default.sqlite")
        sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
        import test_fuzz
        from cases import STATS

        (work / "blocker").write_text("a file, so nothing can be created under it")
        tests = [getattr(test_fuzz, n) for n in dir(test_fuzz)
                 if n.startswith("test_") and hasattr(getattr(test_fuzz, n), "hypothesis")]
        failures = []
        started = time.monotonic()
        for test in tests:
            t0, before = time.monotonic(), STATS["cases"]
            try:
                test(work=work)
                status = "ok"
            except Exception:  # noqa: BLE001 - a broken property: reported, counted, and the run goes on
                failures.append(test.__name__)
                status = "FAILED\n" + traceback.format_exc(limit=3)
            print(f"{test.__name__:45s} {STATS['cases'] - before:6d} cases {time.monotonic() - t0:7.1f} s  {status}",
                  flush=True)
        print(f"\ncases {STATS['cases']}: exit 0 {STATS['exit_0']}, exit 2 {STATS['exit_2']}; "
              f"tracebacks {STATS['tracebacks']}, NaN or non-positive latencies {STATS['nan_or_negative']}, "
              f"lost records or changed run directories {STATS['lost_records']}; "
              f"failed properties {len(failures)}; {time.monotonic() - started:.0f} s")
        return 1 if failures or STATS["tracebacks"] or STATS["nan_or_negative"] or STATS["lost_records"] else 0


if __name__ == "__main__":
    sys.exit(main())
