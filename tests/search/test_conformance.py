"""One conformance suite over every registered search method, through `hwnas search` as a user
runs it: a tiny search runs end to end (a summary naming its architecture, a run the report reads
back as complete with that final architecture), and a search stopped after its first epoch and resumed ends as an
uninterrupted one. Each method gives its own tiny run (`Method.small_args`)."""

from __future__ import annotations

import json

import pytest

from hwnas.cli import main as cli_main
from hwnas.cli.methods.registry import get_method, method_names
from hwnas.search.cost import COSTS

# Fast timing, one process, no reference: nothing here is a latency figure. The final network is
# measured once; nothing measured during the run decides a step (the methods' small_args see to it).
SHARED = ["--limit", "64", "--measure-every", "0", "--final-sessions", "1", "--warmup", "1", "--min-runs", "5",
          "--min-time", "0", "--processes", "1", "--no-reference"]
# Keys of a log record that are timings or measurements, not the search's state.
UNREPEATABLE = ("seconds", "measured", "lookup_error", "wall", "ci95", "flags")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module: a method's latency table is measured once and read by every run."""
    return tmp_path_factory.mktemp("conformance") / "store.sqlite"


def search(monkeypatch, capsys, name, out, store, *extra):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    args = ["search", "--method", name, *get_method(name).small_args, *SHARED, "--db", str(store), "--out", str(out),
            *extra]
    code = cli_main.main(args)
    out_text, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return out_text, err


def repeatable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(word in k for word in UNREPEATABLE)}


def log_of(run) -> list[dict]:
    return [repeatable(json.loads(line)) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", method_names())
def test_a_tiny_search_runs_end_to_end_and_a_resumed_run_equals_an_uninterrupted_one(monkeypatch, capsys, tmp_path,
                                                                                       store, name):
    from hwnas.report.document import load_run

    if not get_method(name).small_args:
        pytest.skip(f"--method {name} runs trials, not epochs: its kill and resume keep every finished trial "
                    "(tests/search/test_discrete.py)")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    out, _ = search(monkeypatch, capsys, name, whole, store)
    summary = json.loads(out)
    assert summary == json.loads((whole / "summary.json").read_text())
    final = json.loads((whole / "final_arch.json").read_text())
    run = load_run(whole, name)  # the report reads the run back: complete, with this final architecture
    assert summary["arch_hash"] and run.complete and run.final_arch == final

    _, err = search(monkeypatch, capsys, name, cut, store, "--stop-after-epoch", "1")
    assert "stopped after epoch 1" in err and not (cut / "summary.json").exists()
    first = (cut / "log.jsonl").read_text()
    assert len(log_of(cut)) == 1
    search(monkeypatch, capsys, name, cut, store)
    assert (cut / "log.jsonl").read_text().startswith(first)  # epoch 1 kept as it was, not trained again
    assert json.loads((cut / "final_arch.json").read_text()) == final
    assert log_of(cut) == log_of(whole)
    resumed = json.loads((cut / "summary.json").read_text())
    assert repeatable(resumed) == repeatable(summary)


def test_stop_after_epoch_is_refused_where_there_are_no_epochs(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    code = cli_main.main(["search", "--method", "modnas", "--out", str(tmp_path / "r"), "--stop-after-epoch", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "runs trials, not epochs" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", method_names())
def test_a_latency_cost_name_means_one_cost_in_every_method(monkeypatch, capsys, name):
    """Every method with a --cost offers the shared relative costs under their names (the costs
    themselves are one function, `hwnas.search.cost`; UNAS's extra hinge-ms is tested beside it)."""
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["hwnas.cli.search"])
    assert cli_main.main(["search", "--method", name, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    if "--cost [" not in text:
        pytest.skip(f"--method {name} has no latency cost option")
    choices = text.split("--cost [", 1)[1].split("]", 1)[0].split("|")
    assert set(COSTS) <= set(choices), choices
