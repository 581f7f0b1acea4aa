"""Faults with real processes: two writers on one export cache, two searches on one run
directory, and a SIGKILL at each of the run directory's write points. Each ends with nothing
lost and the report right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
from cases import TINY, digits, search_config, table_doc  # noqa: E402

FAST = ["--warmup", "1", "--min-runs", "5", "--min-time", "0"]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HWNAS_CACHE": str(cache), "HWNAS_DB": str(cache / "default.sqlite")}


def test_two_measure_processes_share_one_cache(tmp_path):
    cache, db = tmp_path / "cache", tmp_path / "m.sqlite"
    # one process per subnet, no reference: what is shared here is the cache, not the protocol
    cmd = [sys.executable, "-m", "hwnas.cli", "measure", *TINY, *FAST, "--processes", "1", "--no-reference", "--random",
           "--n", "4", "--seed", "3", "--db", str(db)]
    procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"{i}.csv")], env=_env(cache), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0 and "Traceback" not in err, err
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "0.csv"), pd.read_csv(tmp_path / "1.csv")
    assert list(a["name"]) == list(b["name"]) and (a["median_ms"] > 0).all() and (b["median_ms"] > 0).all()
    files = list((cache / "onnx").iterdir())
    assert not [f for f in files if f.name.endswith(".tmp")], files  # no temporary file left behind
    for onnx in (f for f in files if f.suffix == ".onnx"):  # every entry complete and recorded
        meta = json.loads(onnx.with_suffix(".json").read_text())
        assert meta["sha256"] and meta["max_abs_diff"] >= 0
    from hwnas.store import Store

    with Store(db) as store:  # each subnet stored once, whichever process measured it
        assert len(store.dataframe(kind="arch")) == 4


def test_a_damaged_cache_entry_is_exported_again(tmp_path, tiny_space):
    from hwnas.exporters.onnx import export_arch

    arch = tiny_space.default_arch()
    first = export_arch(tiny_space, arch, cache_dir=tmp_path)
    first.path.write_bytes(first.path.read_bytes()[:100])  # truncated
    again = export_arch(tiny_space, arch, cache_dir=tmp_path)
    assert not again.cached and again.path.stat().st_size > 100
    meta = first.path.with_suffix(".json")
    meta.write_text("{}")
    assert not export_arch(tiny_space, arch, cache_dir=tmp_path).cached
    assert export_arch(tiny_space, arch, cache_dir=tmp_path).cached


def _search_args(tmp_path: Path, run: Path, epochs: int) -> list[str]:
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps(table_doc()))
    return ["search", "--target", "0.6", "--out", str(run), "--lut", str(lut), "--width-mult", "0.25", "--resolution",
            "32", "--train-resolution", "16", "--epochs", str(epochs), "--warmup-epochs", "1", "--batch-size", "32",
            "--limit", "40", "--measure-every", "0", "--final-sessions", "1", *FAST, "--db", str(tmp_path / "m.sqlite")]


def test_a_second_search_on_one_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    args = _search_args(tmp_path, run, epochs=6)
    first = subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 240
    while not (run / "log.jsonl").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first search holds the lock and has logged an epoch: five are to come
    second = subprocess.run([sys.executable, "-m", "hwnas.cli", *args], capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1 and "in use by another hwnas process" in lines[0], second.stderr
    from hwnas.report.document import load_run

    report_run = load_run(run, "run")
    assert report_run.complete and [r["epoch"] for r in report_run.log] == [1, 2, 3, 4, 5, 6]


# A search in a child process killed by SIGKILL at one write point of its run directory, then
# resumed here: the log has each epoch once and the summary is the uninterrupted run's.
KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {fuzz!r})
import torch
from hwnas.jsonutil import atomic_path
from hwnas.search import rundir
from hwnas.search.tfnas import search
from hwnas.surrogates.lut import LookupTable
from cases import digits, search_config, table_doc

point, when, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = 0


def die():
    os.kill(os.getpid(), signal.SIGKILL)


original = getattr(rundir.RunDir, point)


def hooked(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == nth:
        if when == "before":
            die()
        if when == "mid" and point == "append_log":  # half a record written, no newline
            with open(self.log_path, "a") as f:
                f.write('{{"epoch": 2, "train_a')
            die()
        if when == "mid" and point == "save_checkpoint":  # written to its temporary file, not yet renamed
            import hwnas.search.rundir as r
            real_save = torch.save
            r.torch.save = lambda state, tmp: (real_save(state, tmp), die())
    result = original(self, *args, **kwargs)
    if calls == nth and when == "after":
        die()
    return result


setattr(rundir.RunDir, point, hooked)
search(search_config(), digits(), LookupTable.from_json(table_doc()), sys.argv[4], show_progress=False)
"""

KILL_POINTS = [("start", "after", 1), ("append_log", "mid", 2), ("append_log", "after", 2),
               ("save_checkpoint", "mid", 2), ("save_checkpoint", "after", 2), ("write_final_arch", "after", 1),
               ("write_summary", "before", 1)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from hwnas.search.tfnas import search
    from hwnas.surrogates.lut import LookupTable

    run = tmp_path_factory.mktemp("whole") / "run"
    summary = search(search_config(), digits(), LookupTable.from_json(table_doc()), run, show_progress=False)
    return summary, [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("point,when,nth", KILL_POINTS)
def test_a_kill_at_a_write_point_loses_nothing(tmp_path, uninterrupted, point, when, nth):
    from hwnas.report.document import load_run
    from hwnas.search.tfnas import search
    from hwnas.surrogates.lut import LookupTable

    run = tmp_path / "run"
    script = KILL_SCRIPT.format(fuzz=str(Path(__file__).parent / "fuzz"))
    child = subprocess.run([sys.executable, "-c", script, point, when, str(nth), str(run)], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    summary = search(search_config(), digits(), LookupTable.from_json(table_doc()), run, show_progress=False)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))  # a killed write's temporary file is cleared
    whole_summary, whole_log = uninterrupted
    assert summary == whole_summary
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(log) == strip(whole_log)  # each epoch once, as the uninterrupted run logged it
    assert load_run(run, "run").complete


@pytest.mark.parametrize("damage", [b"", b"\x80\x02garbage", None])
def test_a_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path, uninterrupted, damage):
    """Found by the fuzz benchmark: an empty checkpoint once gave an IndexError, not one line."""
    import shutil

    import torch

    from hwnas.errors import HwnasError
    from hwnas.search.tfnas import search
    from hwnas.surrogates.lut import LookupTable

    run = tmp_path / "run"
    search(search_config(), digits(), LookupTable.from_json(table_doc()), run, show_progress=False, stop_after_epoch=2)
    if damage is None:
        torch.save({"epoch": 2}, run / "checkpoint.pt")  # its state dicts missing
    else:
        (run / "checkpoint.pt").write_bytes(damage)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    with pytest.raises(HwnasError, match="checkpoint") as e:
        search(search_config(), digits(), LookupTable.from_json(table_doc()), run, show_progress=False)
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before
    shutil.rmtree(run)
