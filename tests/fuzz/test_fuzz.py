"""Property-based fuzzing of the CLI's inputs and the file readers (see cases.py for the property).

Bounded for CI: about a minute in all. benchmarks/fuzz.py runs the same tests with many more
examples (HWNAS_FUZZ_SCALE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))  # the shared properties (pytest runs with --import-mode=importlib)
from cases import (  # noqa: E402
    NUMBER_TEXT,
    STATS,
    TINY,
    check_cli,
    check_latency,
    check_sane_text,
    check_store_row,
    examples,
    finished_run,
    model_doc,
    mutate_doc,
    mutate_text,
    refused,
    resume_property,
    run_cli,
    snapshot,
    table_doc,
    tiny_space,
)

FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None,
            phases=[Phase.explicit, Phase.generate])  # no shrinking: a failure is reported as found, in bounded time


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "blocker").write_text("a file, so nothing can be created under it")
    return root


# Each command with options that fail cheaply after every option is parsed and checked (a
# missing input file, or a store that cannot be created), so a case takes milliseconds.
def _commands(w: Path) -> dict[str, tuple[list[str], list[str]]]:
    bad_db = ["--db", str(w / "blocker" / "m.sqlite")]
    backend = ["--batch", "--threads", "--warmup", "--min-runs", "--min-time"]
    space = ["--resolution", "--width-mult", "--classes"]
    return {
        "arch": (["arch", *TINY, "--random"], ["--seed", *space]),
        "info": (["info", *TINY], ["--batch", *space]),
        "measure": (["measure", *TINY, "--arch", str(w / "none.json"), "--db", str(w / "m.sqlite")],
                    [*backend, *space, "--seed"]),
        "search": (["search", "--target", "1", "--out", str(w / "run"), "--data", f"folder:{w}/none"],
                   ["--target", "--limit", "--width-mult", "--resolution", "--train-resolution", "--width-step", "--lambda",
                    "--epochs", "--warmup-epochs", "--batch-size", "--lr", "--weight-decay", "--arch-lr",
                    "--arch-weight-decay", "--tau", "--tau-decay", "--seed", "--measure-every", "--final-sessions",
                    "--train-threads", "--width-align", *backend]),
        "train": (["train", "--arch", str(w / "none.json")],
                  ["--limit", "--width-mult", "--resolution", "--epochs", "--batch-size", "--lr", "--weight-decay", "--seed",
                   "--train-threads", "--width-align"]),
        "lut": (["lut", "build", *TINY, "--out", str(w / "t.json"), *bad_db], [*backend, *space, "--width-step"]),
        "sample": (["sample", *TINY, "--n", "2", *bad_db], [*backend, *space, "--n", "--seed", "--width-align"]),
        "fit": (["surrogate", "fit", *TINY, "--model", "linear", "--out", str(w / "m.json"), *bad_db],
                [*backend, *space, "--seed", "--train", "--width-step"]),
        "eval": (["surrogate", "eval", *TINY, *bad_db], [*backend, *space, "--seed", "--train", "--test", "--width-step"]),
        "additivity": (["additivity", *TINY, "--out", str(w / "a.csv"), *bad_db],
                       [*backend, *space, "--n", "--seed", "--alpha"]),
        "demo": (["demo", "--out", str(w / "demo"), "--report", str(w / "rep"), *bad_db],
                 ["--resolution", "--width-mult", "--width-step", "--epochs", "--warmup-epochs", "--target", "--limit",
                  "--seed"]),
    }


@settings(max_examples=examples(250), **FUZZ)
@given(data=st.data())
def test_numeric_options_of_every_command(work, data):
    commands = _commands(work)
    base, options = commands[data.draw(st.sampled_from(sorted(commands)))]
    args = list(base)
    for option in data.draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True)):
        args += [option, data.draw(NUMBER_TEXT)]
    check_cli(args, *run_cli(args))


@settings(max_examples=examples(40), **FUZZ)
@given(data=st.data())
def test_output_paths(work, data):
    out = data.draw(st.sampled_from([work, work / "blocker", work / "blocker" / "x.json", work / "x.xlsx", work / "",
                                     Path("/proc/x.json"), work / "ok.json"]))
    command = data.draw(st.sampled_from([["arch", *TINY, "--out"], ["search", "--target", "1", "--data", "bad:", "--out"],
                                         ["report", "--out"]]))
    args = [*command, str(out)]
    check_cli(args, *run_cli(args))


@settings(max_examples=examples(150), **FUZZ)
@given(data=st.data())
def test_architecture_files(work, data):
    doc = tiny_space().default_arch().to_json()
    text = mutate_text(data, json.dumps(doc)) if data.draw(st.booleans()) else mutate_doc(data, doc)
    path = work / "arch.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    args = ["info", *TINY, "--arch", str(path)]
    check_cli(args, *run_cli(args))


def _table_or_model(data, work: Path, doc: dict) -> Path:
    text = mutate_text(data, json.dumps(doc)) if data.draw(st.integers(0, 3)) == 0 else mutate_doc(data, doc)
    if data.draw(st.integers(0, 9)) == 0:  # an entry twice
        d = json.loads(json.dumps(doc))
        if "entries" in d:
            d["entries"].append(d["entries"][0])
            text = json.dumps(d)
    path = work / "latency.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@settings(max_examples=examples(150), **FUZZ)
@given(data=st.data())
def test_lookup_table_files(work, data):
    from hwnas.surrogates.lut import LookupTable

    path = _table_or_model(data, work, table_doc())
    space = tiny_space()
    archs = [space.default_arch(), *space.random_archs(3, data.draw(st.integers(0, 100)))]
    was_refused, table = refused(lambda: (t := LookupTable.load(path), [t.predict(a) for a in archs])[1])
    STATS["cases"] += 1
    if not was_refused:
        for ms in table:
            check_latency("table prediction", ms)


@settings(max_examples=examples(100), **FUZZ)
@given(data=st.data())
def test_latency_model_files(work, data):
    from hwnas.surrogates.models import load_model

    path = _table_or_model(data, work, model_doc() if data.draw(st.integers(0, 2)) else table_doc())
    space = tiny_space()
    archs = [space.default_arch(), *space.random_archs(3, data.draw(st.integers(0, 100)))]
    was_refused, predictions = refused(lambda: (m := load_model(path), [m.predict(a) for a in archs])[1])
    STATS["cases"] += 1
    if not was_refused:
        for ms in predictions:
            check_latency("model prediction", ms)


@settings(max_examples=examples(100), **FUZZ)
@given(data=st.data())
def test_csv_files(work, data):
    from hwnas.surrogates.data import read_csv

    space = tiny_space()
    rows = ["arch,latency_ms"]
    for arch in space.random_archs(data.draw(st.integers(0, 4)), data.draw(st.integers(0, 100))):
        arch_text = json.dumps(json.dumps(arch.to_json()))  # a quoted CSV cell; JSON's escapes suit CSV's
        arch_text = '"' + json.dumps(arch.to_json()).replace('"', '""') + '"'
        if data.draw(st.integers(0, 3)) == 0:
            arch_text = '"' + mutate_doc(data, arch.to_json()).replace('"', '""') + '"'
        rows.append(f"{arch_text},{data.draw(st.one_of(st.sampled_from(['1.5', '0.25']), NUMBER_TEXT))}")
    text = "\n".join(rows) + "\n"
    if data.draw(st.integers(0, 4)) == 0:
        text = mutate_text(data, text)
    path = work / "subnets.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    was_refused, subnets = refused(read_csv, path, space)
    STATS["cases"] += 1
    if not was_refused:
        for ms in subnets.latency_ms:
            check_latency("CSV latency", float(ms))


@settings(max_examples=examples(60), **FUZZ)
@given(data=st.data())
def test_store_rows(work, data):
    check_store_row(data, work / "fuzz.sqlite")


@settings(max_examples=examples(6, cap=40), **FUZZ)  # seconds each: a resume may train an epoch again
@given(data=st.data())
def test_resume_of_a_damaged_run(work, data):
    resume_property(data, work, work / "case")


@settings(max_examples=examples(30), **FUZZ)
@given(data=st.data())
def test_report_reads_of_a_damaged_run(work, data):
    """The report never plots a damaged log: a run is read with each epoch once, or skipped."""
    import shutil

    from hwnas.report.document import load_run

    case = work / "report-case"
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(finished_run(str(work)), case)
    name = data.draw(st.sampled_from(["log.jsonl", "config.json", "summary.json", "final_arch.json"]))
    path = case / name
    path.write_text(mutate_text(data, path.read_text()), encoding="utf-8", errors="surrogatepass")
    was_refused, run = refused(load_run, case, "r")
    STATS["cases"] += 1
    if not was_refused:
        assert [r["epoch"] for r in run.log] == list(range(1, len(run.log) + 1))


# --- a few cases as a user runs them: a real process, its real stderr --------------------------------


def test_no_traceback_reaches_the_user(work):
    lut = work / "lut.json"
    lut.write_text(json.dumps(table_doc()))
    run = work / "cli-run"
    search = ["search", "--target", "0.6", "--out", str(run), "--lut", str(lut), "--width-mult", "0.25", "--resolution",
              "32", "--train-resolution", "16", "--epochs", "3", "--warmup-epochs", "1", "--batch-size", "32", "--limit",
              "40", "--measure-every", "0", "--final-sessions", "1", "--warmup", "1", "--min-runs", "5", "--min-time", "0",
              "--db", str(work / "cli.sqlite")]
    code, out, err = run_cli(search)
    assert code == 0, err
    lines = (run / "log.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"
    (run / "log.jsonl").write_text("".join(lines))
    deep = work / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    cases = [
        ["info", *TINY, "--arch", str(deep)],
        ["measure", *TINY, "--random", "--n", "1", "--seed", "9" * 5000],
        ["search", "--target", "nan", "--out", str(work / "r")],
        search,  # the damaged run: refused, naming the file and line
    ]
    before = snapshot(run)
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "hwnas.cli", *args], capture_output=True, text=True, timeout=300)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr[-3000:])
        assert lines[-1].startswith("hwnas: error: "), (args, r.stderr[-3000:])
        check_sane_text(args, r.stdout)
    assert "log.jsonl line 2" in lines[-1] and "--repair" in lines[-1], lines[-1]
    assert snapshot(run) == before  # the refused resume changed nothing
    # --repair resumes it: the lost epoch is named, the others kept, the summary rewritten.
    code, out, err = run_cli([*search, "--repair"])
    assert code == 0 and "epochs 2 have no record" in err, err
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 3]
