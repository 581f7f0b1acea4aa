"""benchmarks/alpha_diagnosis.py on a tiny UNAS run: one row per op decision, and the derived path
ranked among the random paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hwnas.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def test_the_diagnosis_reads_a_unas_run(lab, tmp_path):
    lut = tmp_path / "lut.json"
    lab.lut.save(lut)
    run = tmp_path / "run"
    code = cli_main.main(["search", "--method", "unas", "--target", "0.5", "--space", "tfnas", "--resolution", "32",
                          "--width-mult", "0.25", "--train-resolution", "16", "--epochs", "2", "--warmup-epochs", "1",
                          "--batch-size", "32", "--limit", "120", "--lut", str(lut), "--no-calibrate-widths",
                          "--processes", "1", "--no-reference", "--final-sessions", "1", "--min-time", "0",
                          "--warmup", "1", "--db", str(tmp_path / "m.sqlite"), "--out", str(run)])
    assert code == 0
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "alpha_diagnosis.py"), str(run), "--paths", "3",
                          "--batches", "1"], capture_output=True, text=True, check=True).stdout
    decisions = sum(s.max_depth for s in lab.space.stages)
    rows = [line for line in out.splitlines() if re.match(r"\d+\.\d+ ", line)]
    assert len(rows) == decisions
    assert all(float(line.split()[2]) >= 0 for line in rows)  # spreads
    m = re.search(r"derived at z ([-+0-9.]+), better than (\d+)% of them", out)
    assert m and 0 <= int(m[2]) <= 100

    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "alpha_diagnosis.py"), str(tmp_path / "none")],
                         check=False, capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
