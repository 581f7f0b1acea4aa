"""Discrete searches: the Optuna mapping, the optimizers on a synthetic objective, and a real
NSGA-II study on a toy model with measured latency, killed and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from hwnas.errors import HwnasError
from hwnas.search.discrete import (
    STUDY_NAME,
    arch_of,
    distributions,
    hypervolume,
    make_optimizer,
    open_study,
    params_of,
    pareto_mask,
    run_study,
)
from hwnas.spaces.slots import SlotSpace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))  # toy_model


@pytest.fixture(scope="module")
def space():
    return SlotSpace("torchvision:mobilenet_v2", resolution=16, num_classes=10, width_mult=0.25)


def test_optuna_mapping_round_trips(space):
    dists = distributions(space)
    assert list(dists) == [s.name for s in space.slots]
    assert all(list(d.choices) == list(s.candidates) for d, s in zip(dists.values(), space.slots))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask(dists)
        arch = arch_of(space, trial.params)
        assert params_of(space, arch) == trial.params
        assert arch_of(space, params_of(space, arch)) == arch
        study.tell(trial, 0.0)


class Synthetic:
    """An additive objective over the slots' choices (each candidate of each slot a fixed score)."""

    def __init__(self, space, seed: int):
        rng = np.random.default_rng(seed)
        self.weights = {s.name: dict(zip(s.candidates, rng.normal(size=len(s.candidates)))) for s in space.slots}

    def compute(self, arch):
        return {"accuracy": float(sum(self.weights[n][c] for n, c in zip(arch.slots, arch.choices)))}


def best_after(space, name: str, seed: int, budget: int) -> float:
    opt = make_optimizer(name, seed=seed, population=10, tournament=4, init=10, batch=4)
    study = optuna.create_study(direction="maximize", sampler=opt.sampler(seed))
    run_study(study, opt, space, Synthetic(space, seed), ["accuracy"], {}, budget)
    return study.best_value


def test_evolution_and_smbo_beat_random(space):
    seeds, budget = range(3), 50
    scores = {name: np.mean([best_after(space, name, s, budget) for s in seeds]) for name in ("random", "evolution", "smbo")}
    assert scores["evolution"] > scores["random"], scores
    assert scores["smbo"] > scores["random"], scores


def test_pareto_and_hypervolume():
    acc, lat = np.array([0.5, 0.7, 0.6, 0.9]), np.array([1.0, 2.0, 2.5, 3.0])
    assert pareto_mask(acc, lat).tolist() == [True, True, False, True]
    # staircase area up to (accuracy 0, latency 4): 0.5*3 + 0.2*2 + 0.2*1
    assert hypervolume(acc, lat, 4.0) == pytest.approx(0.5 * 3 + 0.2 * 2 + 0.2 * 1)


def toy_config(tmp: Path, **over) -> Path:
    cfg = {"model": "toy_model:toy", "resolution": 16,
           "optimizer": {"name": "nsga2", "trials": 6, "population": 4},
           "estimator": {"name": "spos", "epochs": 1, "batch_size": 32},
           "objectives": ["accuracy", "latency"], "lookup_table": False,
           "backend": {"processes": 1, "min_time": 0.0, "min_runs": 5, "warmup": 1, "reference": False,
                       "isolation": "none", "db": str(tmp / "store.sqlite")},
           "data": {"name": "digits", "limit": 300}, **over}
    path = tmp / f"search{len(over)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def hwnas(*args, **kw):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{HERE}"}
    return subprocess.Popen([sys.executable, "-m", "hwnas.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def finished(db: Path) -> dict[int, tuple]:
    if not db.exists():
        return {}
    # the search writes as we read: wait for its lock as the search itself does (60 s, not SQLite's 5)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        return {}
    return {t.number: (tuple(t.values), t.params) for t in study.trials if t.state.name == "COMPLETE"}


def complete_count(db: Path) -> int:
    """Finished trials, read-only with plain SQLite: opening Optuna's storage while the search
    creates its schema would race it (both would write the schema version)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not there yet, or no tables yet
        return 0


def test_killed_study_keeps_every_finished_trial(tmp_path):
    config, out = toy_config(tmp_path), tmp_path / "run"
    proc = hwnas("search", "--method", "modnas", "--config", str(config), "--out", str(out))
    deadline = time.monotonic() + 240
    while complete_count(out / "study.db") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = finished(out / "study.db")
    assert 2 <= len(before) < 6
    again = hwnas("search", "--method", "modnas", "--config", str(config), "--out", str(out))
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-2000:]
    after = finished(out / "study.db")
    assert len(after) == 6
    assert all(after[n] == before[n] for n in before)  # every finished trial kept, unchanged
    assert (out / "pareto.csv").exists() and (out / "trials.csv").read_text().count("COMPLETE") == 6
    # the report renders the run: its front, with the measured interval of each point
    from hwnas.report import document as report

    rep = report.build([out])
    sec = next(s for s in rep.sections if s.title.startswith("Slot searches"))
    points = next(i for i in sec.items if i.name.startswith("slot_front_points"))
    assert len(points.df) >= 1 and (points.df["latency_ci_low"] <= points.df["latency"]).all()



def test_storage_of_another_search_is_refused(tmp_path, capsys):
    from hwnas.cli.main import main

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(url, "first-search", ["maximize", "minimize"], make_optimizer("nsga2"))
    other = toy_config(tmp_path, storage=str(tmp_path / "study.db"))
    assert main(["search", "--method", "modnas", "--config", str(other), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another search's study" in err, err


def test_storage_of_something_else_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(study_name="someone-elses", storage=url)
    opt = make_optimizer("random")
    with pytest.raises(HwnasError, match="holds other studies"):
        open_study(url, "abc", ["maximize"], opt)
    (tmp_path / "junk.db").write_text("not a database")
    with pytest.raises(HwnasError, match="cannot open study storage"):
        open_study(f"sqlite:///{tmp_path / 'junk.db'}", "abc", ["maximize"], opt)


@pytest.mark.parametrize("args, message", [
    (["--objectives", "accuracy,speed"], "objective 'speed' is not a metric the chain computes"),
    (["--constraint", "energy=3"], "constraint 'energy' is not a metric"),
    (["--constraint", "latency"], "--constraint must be METRIC=BOUND"),
    (["--optimizer", "annealing"], "unknown optimizer 'annealing'"),
    (["--model", "toy_model:plain"], "no slot-able module"),
])
def test_bad_search_input(tmp_path, capsys, args, message):
    from hwnas.cli.main import main

    rc = main(["search", "--method", "modnas", "--config", str(toy_config(tmp_path)), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err
