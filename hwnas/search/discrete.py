"""Discrete searches over slot spaces on Optuna's ask/tell loop (ModularNAS's components, seed 001).

  parameter space  one categorical decision per slot (`distributions`), one-to-one with Optuna's
                   CategoricalDistribution; `arch_of` / `params_of` map back and forth
  optimizers       random, regularized evolution, SMBO (a fitted score model proposes the next
                   batch), NSGA-II and TPE (Optuna's; a constraint through `constraints_func`).
                   Evolution and SMBO enqueue the architectures they propose; the others leave
                   it to their sampler. Every one runs on the same ask/tell loop (`run_study`).
  metrics chain    traversal (params, MACs, memory traffic), data (lookup-table latency) and
                   hardware (latency measured on the backend, median of k fresh processes with its
                   95% interval) metrics, and the estimator's accuracy; any of them can be an
                   objective or a constraint (an upper bound).

The study lives in Optuna's RDB storage (SQLite in the run directory by default). Each trial is
told as soon as it is scored, so a killed search loses no finished trial: a rerun reopens the
study, closes the trial the kill interrupted as failed (its measurements are in the store, so
scoring that architecture again is cheap) and goes on to the asked number of finished trials.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError, first_line

STUDY_NAME = "hwnas-slots"


# --- metrics chain -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    stage: str  # traversal, data, hardware or estimator
    direction: str  # minimize or maximize
    what: str


METRICS = {
    "accuracy": Metric("estimator", "maximize", "search-val accuracy from the estimator"),
    "latency": Metric("hardware", "minimize", "latency measured on the backend (ms, median of k fresh processes)"),
    "lut_latency": Metric("data", "minimize", "latency from the slot lookup table (ms)"),
    "params": Metric("traversal", "minimize", "parameters"),
    "macs": Metric("traversal", "minimize", "multiply-accumulates of convolutions and linear layers"),
    "memory": Metric("traversal", "minimize", "memory traffic: elements read and written by convolutions and linear layers"),
}


def check_metric_names(names, what: str, available: set[str] | None = None) -> None:
    for name in names:
        if name not in METRICS:
            raise HwnasError(f"{what} {name!r} is not a metric the chain computes; known: {', '.join(METRICS)}")
        if available is not None and name not in available:
            stage = METRICS[name].stage
            raise HwnasError(f"{what} {name!r} needs the {stage} stage of the metrics chain, which this search "
                             f"has turned off (" + ("lookup_table: false" if stage == "data" else stage) + ")")


class MetricsChain:
    """Every metric available for an architecture: traversal always, the table's latency when there
    is a table, measured latency when there is a measurer, accuracy when there is an estimator."""

    def __init__(self, space, estimator=None, measurer=None, table=None, batch: int = 1):
        self.space, self.estimator, self.measurer, self.table, self.batch = space, estimator, measurer, table, batch

    @property
    def available(self) -> set[str]:
        names = {"params", "macs", "memory"}
        names |= {"lut_latency"} if self.table is not None else set()
        names |= {"latency"} if self.measurer is not None else set()
        names |= {"accuracy"} if self.estimator is not None else set()
        return names

    def compute(self, arch) -> dict[str, Any]:
        c = self.space.costs(arch)
        out: dict[str, Any] = {"params": c["params"], "macs": c["macs"], "memory": c["mac"]}
        if self.table is not None:
            out["lut_latency"] = self.table.predict(self.space, arch)
        if self.measurer is not None:
            out.update(self.measure(arch))
        if self.estimator is not None:
            out["accuracy"] = self.estimator.accuracy(arch)
        return out

    def measure(self, arch, force: bool = False) -> dict[str, Any]:
        from hwnas.measure.networks import measure_arch

        m = measure_arch(self.measurer, self.space, arch, self.batch, force=force).measurement
        if not usable(m.flags) and not force:  # once more, fresh (as UNAS); the flags of what is used are kept
            return self.measure(arch, force=True)
        ci = m.ci95_ms or [math.nan, math.nan]
        return {"latency": m.stats["median_ms"], "latency_ci_low": ci[0], "latency_ci_high": ci[1],
                "latency_flags": ",".join(m.flags), "latency_usable": usable(m.flags)}


# --- parameter space ---------------------------------------------------------------------------


def distributions(space) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution

    return {name: CategoricalDistribution(list(cands)) for name, cands in space.decisions()}


def arch_of(space, params: dict[str, Any]):
    return space.validate({"space": "slots", "choices": dict(params)})


def params_of(space, arch) -> dict[str, str]:
    return dict(space.validate(arch).to_json()["choices"])


# --- optimizers --------------------------------------------------------------------------------


def constraint_violations(trial) -> list[float]:
    """Each constraint's value less its bound (<= 0 is feasible), as Optuna 5 keeps them
    (`Trial.set_constraint`, which replaces the deprecated constraints_func)."""
    return list(trial.constraints.values())


def _done(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def _score(trial, directions: list[str]) -> float:
    """The first objective as larger-is-better (evolution and SMBO are single-objective, as
    ModularNAS's); an infeasible trial scores below every feasible one."""
    v = trial.values[0] if directions[0] == "maximize" else -trial.values[0]
    violation = sum(max(x, 0.0) for x in constraint_violations(trial))
    return v if violation <= 0 else -1e12 - violation


def _mutate(space, params: dict[str, str], rng: np.random.Generator, seen: set[tuple]) -> dict[str, str]:
    """One decision changed to another candidate; an unseen child where one is found in bounded tries
    (ModularNAS's loop could hang once the space was exhausted)."""
    decisions = [(n, c) for n, c in space.decisions() if len(c) > 1]
    child = dict(params)
    for _ in range(50):
        child = dict(params)
        name, cands = decisions[int(rng.integers(len(decisions)))]
        child[name] = rng.choice([c for c in cands if c != params[name]]).item()
        if tuple(child.values()) not in seen:
            return child
    return child


class Optimizer:
    name = ""

    def __init__(self, seed: int = 0, **options: Any):
        self.seed = seed

    def sampler(self, seed: int):
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)

    def propose(self, study, space, directions: list[str]) -> list[dict[str, str]]:
        """Architectures to enqueue; [] leaves the next one to the sampler."""
        return []


class RandomSearch(Optimizer):
    name = "random"


class NSGA2(Optimizer):
    name = "nsga2"

    def __init__(self, seed: int = 0, population: int = 10, **options: Any):
        super().__init__(seed)
        self.population = population

    def sampler(self, seed: int):
        import optuna

        return optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)


class TPE(Optimizer):
    name = "tpe"

    def __init__(self, seed: int = 0, init: int = 10, **options: Any):
        super().__init__(seed)
        self.init = init

    def sampler(self, seed: int):
        import optuna

        return optuna.samplers.TPESampler(n_startup_trials=self.init, seed=seed, multivariate=True)


class RegularizedEvolution(Optimizer):
    """Real et al. (2019): the population is the last `population` finished trials (the oldest
    leaves: aging); a tournament of `tournament` picks the parent; its child changes one slot."""

    name = "evolution"

    def __init__(self, seed: int = 0, population: int = 10, tournament: int = 5, **options: Any):
        super().__init__(seed)
        self.population, self.tournament = population, min(tournament, population)

    def propose(self, study, space, directions):
        done = _done(study)
        if len(done) < self.population:
            return []
        rng = np.random.default_rng([self.seed, len(study.trials)])
        pop = done[-self.population:]
        contenders = [pop[i] for i in rng.choice(len(pop), self.tournament, replace=False)]
        parent = max(contenders, key=lambda t: _score(t, directions))
        seen = {tuple(t.params[n] for n, _ in space.decisions()) for t in study.trials if t.params}
        return [_mutate(space, dict(parent.params), rng, seen)]


class SMBO(Optimizer):
    """Sequential model-based optimisation (ModularNAS's ModelBasedOptim): after `init` random
    trials, a random forest fitted on one-hot architectures scores a pool of random and mutated
    architectures, and the `batch` best unseen ones are tried next."""

    name = "smbo"

    def __init__(self, seed: int = 0, init: int = 10, batch: int = 4, pool: int = 500, **options: Any):
        super().__init__(seed)
        self.init, self.batch, self.pool = init, batch, pool

    def propose(self, study, space, directions):
        from sklearn.ensemble import RandomForestRegressor

        done = _done(study)
        if len(done) < self.init:
            return []
        decisions = space.decisions()

        def features(params) -> list[float]:
            return [float(params[n] == c) for n, cands in decisions for c in cands]

        scores = np.array([_score(t, directions) for t in done])
        feasible = scores > -1e12
        if not feasible.any():
            return []
        floor = scores[feasible].min() - (np.ptp(scores[feasible]) or 1.0)
        y = np.where(feasible, scores, floor)  # infeasible: below every feasible one, on the same scale
        rng = np.random.default_rng([self.seed, len(study.trials)])
        model = RandomForestRegressor(n_estimators=100, random_state=int(rng.integers(2**31))).fit(
            np.array([features(t.params) for t in done]), y)
        seen = {tuple(t.params[n] for n, _ in decisions) for t in study.trials if t.params}
        best = [dict(done[i].params) for i in np.argsort(-y)[:5]]
        pool = [params_of(space, space.sample(rng)) for _ in range(self.pool // 2)]
        pool += [_mutate(space, best[int(rng.integers(len(best)))], rng, seen) for _ in range(self.pool - len(pool))]
        unique = {tuple(p.values()): p for p in pool if tuple(p.values()) not in seen}
        if not unique:
            return []
        cands = list(unique.values())
        predicted = model.predict(np.array([features(p) for p in cands]))
        return [cands[i] for i in np.argsort(-predicted)[:self.batch]]


OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (RandomSearch, RegularizedEvolution, SMBO, NSGA2, TPE)}


def make_optimizer(name: str, **options: Any) -> Optimizer:
    if name not in OPTIMIZERS:
        raise HwnasError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](**options)


# --- the study and the loop --------------------------------------------------------------------


def storage_url(path_or_url: str) -> str:
    return path_or_url if "://" in str(path_or_url) else f"sqlite:///{path_or_url}"


def open_study(url: str, search_hash: str, directions: list[str], optimizer: Optimizer):
    """The search's study in the storage: created there, or reopened when it is this search's; a
    storage holding another search's study (or anything else) is refused."""
    import optuna
    from optuna.exceptions import OptunaError
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                             if url.startswith("sqlite") else {})
        names = [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
    except (SQLAlchemyError, OptunaError, ValueError, OSError, RuntimeError) as e:
        raise HwnasError(f"cannot open study storage {url}: {first_line(e)}") from None
    if names and STUDY_NAME not in names:
        raise HwnasError(f"study storage {url} holds other studies ({', '.join(names[:3])}), not a hwnas slot search; "
                         "use another storage")
    previous = 0
    if STUDY_NAME in names:
        probe = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        found = probe.user_attrs.get("hwnas_search")
        if found != search_hash:
            raise HwnasError(f"study storage {url} holds another search's study (configuration {found}, this one "
                             f"{search_hash}); use another storage or run directory")
        previous = len(probe.trials)
    # Seeded by the trials already there, so a resumed search does not draw its first trials again.
    sampler = optimizer.sampler(int(np.random.SeedSequence([optimizer.seed, previous]).generate_state(1)[0]))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if previous == 0 and "hwnas_search" not in study.user_attrs:
        study.set_user_attr("hwnas_search", search_hash)
    return study


def run_study(study, optimizer: Optimizer, space, chain: MetricsChain, objectives: list[str],
              constraints: dict[str, float], n_trials: int, echo: Callable[[str], None] = lambda s: None,
              on_trial: Callable[[Any], None] | None = None) -> None:
    """Ask, score, tell until the study holds `n_trials` finished trials."""
    from optuna.trial import TrialState

    dists = distributions(space)
    directions = [METRICS[o].direction for o in objectives]
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)  # interrupted by a kill; nothing of it was told
    while len(_done(study)) < n_trials:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            for params in optimizer.propose(study, space, directions):
                study.enqueue_trial(params)
        trial = study.ask(dists)
        arch = arch_of(space, trial.params)
        metrics = chain.compute(arch)
        trial.set_user_attr("arch_hash", arch.hash)
        trial.set_user_attr("metrics", metrics)
        for m, bound in constraints.items():
            trial.set_constraint(m, float(metrics[m] - bound))
        study.tell(trial, [float(metrics[o]) for o in objectives])
        done = len(_done(study))
        flags = f" [latency flagged {metrics['latency_flags']}]" if not metrics.get("latency_usable", True) else ""
        echo(f"trial {trial.number} ({done}/{n_trials}): " + ", ".join(f"{o} {metrics[o]:.4g}" for o in objectives) + flags)
        if on_trial is not None:
            on_trial(trial)


# --- results -----------------------------------------------------------------------------------


def trial_rows(study, space) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if not t.params:
            continue
        m = t.user_attrs.get("metrics", {})
        viol = constraint_violations(t)
        row = {"number": t.number, "state": t.state.name, "arch_hash": t.user_attrs.get("arch_hash", ""),
               **{k: m.get(k) for k in ("accuracy", "latency", "latency_ci_low", "latency_ci_high", "lut_latency",
                                         "params", "macs", "memory", "latency_flags")},
               "feasible": all(v <= 0 for v in viol), "choices": json.dumps(t.params, sort_keys=True)}
        if row["latency"] is not None and row["lut_latency"] is not None:
            row["lookup_error_pct"] = 100 * (row["lut_latency"] / row["latency"] - 1)
        rows.append(row)
    return rows


def pareto_mask(acc: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Points no other point beats on accuracy (higher) and latency (lower) at once."""
    keep = np.ones(len(acc), dtype=bool)
    for i in range(len(acc)):
        better = (acc >= acc[i]) & (lat <= lat[i]) & ((acc > acc[i]) | (lat < lat[i]))
        keep[i] = not better.any()
    return keep


def hypervolume(acc, lat, ref_latency: float, ref_accuracy: float = 0.0) -> float:
    """Area dominated by the (accuracy, latency) points up to the reference point (Optuna's helper,
    on minimised values: -accuracy and latency)."""
    from optuna._hypervolume import compute_hypervolume

    pts = np.array([[-a, l] for a, l in zip(acc, lat) if a > ref_accuracy and l < ref_latency], dtype=float)
    if len(pts) == 0:
        return 0.0
    return float(compute_hypervolume(pts, np.array([-ref_accuracy, ref_latency], dtype=float)))
