"""Measure layers, subnets and ONNX files on a backend, through the store: each thing is
measured once per target and protocol, and committed as soon as it is measured.

A measurement of an ONNX model is k processes (`MeasureProtocol.processes`), each a fresh
worker process with its own warm-up and timed runs, combined by `protocol.combine`. Each
process's result is committed to the store as it completes (an interrupted build resumes
per process). Many models are measured interleaved: round r measures every model once in
one fresh process, A B C, A B C, ..., so a slow minute is spread over all of them.

Every process times the reference model beside the measured one; its reading against the
target's baseline (stored per target; measured once when the store has none) normalises the
latency and flags a process the machine slowed (`drift_limit`), which is then re-measured.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from hwnas.backends import Backend, Measurement, MeasureProtocol, get_backend
from hwnas.backends.ort import check_batch
from hwnas.backends.protocol import combine
from hwnas.backends.reference import reference_path
from hwnas.backends.worker import MeasurementWorker
from hwnas.errors import HwnasError
from hwnas.jsonutil import cache_root, content_hash
from hwnas.spaces.mbconv import Arch, LayerSpec, Space
from hwnas.store import Store, measurement_key

RETRY_PAUSE_S = (0.01, 0.5)  # wait as long as the slowed measurement took, within these bounds, then retry
# The reference's baseline: the median of its samples over several processes (the machine's typical
# speed). The 25th percentile (its fast moments) put the typical moment at 1.3x, over the drift limit.
BASELINE_QUANTILE = 50


@dataclass
class Measured:
    measurement: Measurement
    cached: bool  # True where the store already held it

    @property
    def latency_ms(self) -> float:
        """The latency every consumer uses: the median over processes (reference-normalised)."""
        return self.measurement.median_ms

    @property
    def ci95_ms(self) -> list[float]:
        return self.measurement.ci95_ms

    @property
    def flags(self) -> list[str]:
        return self.measurement.flags


@dataclass
class Item:
    """One thing to measure: what it is stored as, and how to get the model the backend loads."""

    kind: str
    spec: dict[str, Any]
    batch: int
    load: Callable[[], Any]
    key: str = ""


class Pending:
    """A measurement under way in the background; `result()` waits for it and stores it."""

    def __init__(self, measurer: "Measurer", item: Item | None = None, future: Future | None = None,
                 done: Measured | None = None):
        self.measurer, self.item, self.future, self._done = measurer, item, future, done

    def result(self) -> Measured:
        if self._done is None:
            store = self.measurer.store
            for m, retried in self.future.result():
                store.put_replicate(self.item.key, len(store.replicates(self.item.key)), m, retried)
            self._done = self.measurer._finish(self.item, store.replicates(self.item.key),
                                               store.replicate_retries(self.item.key))
        return self._done


def arch_spec(space, arch, batch: int) -> dict[str, Any]:
    """What a measured network of any space is stored as: the architecture, the space's config
    (so two spaces' networks never collide), the batch."""
    return {"arch": arch.to_json(), "space": space.config, "batch": batch}


class Measurer:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        protocol: MeasureProtocol | None = None,
        cache_dir: Path | None = None,
        force: bool = False,
        worker: MeasurementWorker | None = None,
        cpus: list[int] | None = None,
        own_cpus: list[int] | None = None,
        isolation: str = "",
        echo: Callable[[str], None] = lambda s: None,
    ):
        self.backend = backend
        self.store = store
        self.protocol = protocol or MeasureProtocol()
        self.cache_dir = cache_dir
        self.force = force
        self.isolation = isolation
        self.echo = echo
        if worker is not None and backend.input != "onnx":
            raise HwnasError(f"backend {backend.name} measures in-process PyTorch modules; it cannot use a worker")
        if worker is None and backend.input == "onnx":
            worker = MeasurementWorker(backend.name, backend.threads, backend.precision, cpus=cpus)
        # Each process in a worker: a crash or hang costs one measurement, and processes are fresh.
        self.worker = worker
        self._baseline: float | None = None
        # pin: this process (export, training) keeps off the worker's cores until close().
        self._restore_cpus = None
        if own_cpus is not None:
            self._restore_cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, own_cpus)
        self._background = ThreadPoolExecutor(max_workers=getattr(worker, "slots", 1), thread_name_prefix="hwnas-measurer")

    @property
    def overlap(self) -> bool:
        """Export the next model while one is timed only where the worker has cores of its own."""
        return self.worker is not None and (self.worker.cpus is not None or getattr(self.worker, "slots", 0) > 0)

    def __enter__(self) -> "Measurer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None:  # first: a fleet cancels what is still running (after Ctrl-C, say)
            self.worker.close()
        self._background.shutdown(wait=True)
        if self._restore_cpus is not None:
            os.sched_setaffinity(0, self._restore_cpus)
            self._restore_cpus = None
        self.store.close()

    # --- keys and the store ---------------------------------------------------------------------

    def _key(self, kind: str, spec: dict[str, Any], batch: int) -> str:
        return measurement_key(kind, spec, self.backend.fingerprint(batch), self.protocol.to_json())

    def _cached(self, key: str, force: bool = False) -> Measured | None:
        found = None if self.force or force else self.store.get(key)
        return Measured(found, cached=True) if found is not None else None

    @property
    def uses_reference(self) -> bool:
        return self.protocol.reference and self.backend.input == "onnx"

    def target_hash(self) -> str:
        """The target the reference baseline belongs to: the fingerprint at batch 1 (the reference's)."""
        return content_hash(self.backend.fingerprint(1), length=24)

    def baseline_ms(self) -> float | None:
        """The reference's baseline on this target, from the store; measured now where it has none."""
        if not self.uses_reference:
            return None
        if self._baseline is None:
            found = self.store.reference_baseline(self.target_hash())
            self._baseline = found["baseline_ms"] if found else self.measure_baseline()["baseline_ms"]
        return self._baseline

    def measure_baseline(self) -> dict[str, Any]:
        """Time the reference alone in k (at least 3) fresh processes, each for the protocol's
        minimum time; its baseline is the median of every sample, stored for this target."""

        self.echo(f"measuring the reference model's baseline for this target ({self.backend.name}); "
                  "it is stored and used by every later measurement")
        path = reference_path(self.cache_dir / "reference" if self.cache_dir else cache_root() / "reference")
        proto = replace(self.protocol, reference=False, min_time_s=max(self.protocol.min_time_s, 0.05),
                        min_runs=max(self.protocol.min_runs, 50))
        samples, medians = [], []
        for _ in range(max(self.protocol.processes, 3)):
            self.worker.restart()
            m = self.worker.measure(path, proto, 1)
            samples += m.samples_ms
            medians.append(m.stats["median_ms"])
        row = {"baseline_ms": float(np.percentile(samples, BASELINE_QUANTILE)), "process_medians_ms": medians,
               "n": len(samples), "fingerprint": self.backend.fingerprint(1)}
        self.store.put_reference_baseline(self.target_hash(), row)
        self._baseline = row["baseline_ms"]
        return row

    # --- measuring --------------------------------------------------------------------------------

    def _process(self, path: Any, batch: int, fresh: bool) -> tuple[Measurement, int]:
        """One process's measurement, re-measured (up to `retries`) while the reference reads the
        machine slower than `drift_limit` of its baseline. Returns it and the retries it took."""
        baseline = self.baseline_ms()
        for attempt in range(self.protocol.retries + 1):
            started = time.perf_counter()
            if fresh and self.worker is not None:
                self.worker.restart()
            if self.worker is not None:
                m = self.worker.measure(path, self.protocol, batch)
            else:
                m = self.backend.measure(path, self.protocol, batch=batch)
            ref = m.stats.get("ref_median_ms")
            if baseline is None or ref is None or ref / baseline <= self.protocol.drift_limit:
                return m, attempt
            if attempt < self.protocol.retries:  # so the retry samples another moment of the machine
                time.sleep(min(max(time.perf_counter() - started, RETRY_PAUSE_S[0]), RETRY_PAUSE_S[1]))
        return m, self.protocol.retries

    def _processes_of(self, path: Any, batch: int, n: int) -> list[tuple[Measurement, int]]:
        """`n` processes of one model, fresh where there are several (no store access: this runs
        in the background thread)."""
        return [self._process(path, batch, fresh=self.protocol.processes > 1) for _ in range(n)]

    def _processes(self) -> int:
        # A torch backend runs in this process: one process is all there is to time.
        return self.protocol.processes if self.worker is not None else 1

    def _finish(self, item: Item, replicates: list[Measurement], retried: int) -> Measured:
        m = combine(replicates, self.protocol, self.baseline_ms(), retried)
        m.isolation = self.isolation
        if self.baseline_ms() is not None:
            m.stats["baseline_ms"] = self.baseline_ms()
        self.store.put(item.key, item.kind, item.spec, m)
        self.store.drop_replicates(item.key)
        return Measured(m, cached=False)

    def measure(self, item: Item, force: bool = False) -> Measured:
        """One item, its k processes each committed as it completes (resuming those the store holds)."""
        item.key = item.key or self._key(item.kind, item.spec, item.batch)
        found = self._cached(item.key, force)
        if found is not None:
            return found
        path = item.load()
        reps = [] if (self.force or force) else self.store.replicates(item.key)
        while len(reps) < self._processes():
            m, r = self._process(path, item.batch, fresh=True)
            self.store.put_replicate(item.key, len(reps), m, r)
            reps.append(m)
        return self._finish(item, reps, self.store.replicate_retries(item.key))

    def many(self, items: list[Item], desc: str = "models", show_progress: bool = True) -> list[Measured]:
        """Measure every item, interleaved: round r times each unfinished item once, all in one fresh
        process, so k rounds give each item k processes and spread drift over all of them. The
        next model is exported while the worker times the current one. Order of results = items."""

        results: list[Measured | None] = []
        for it in items:
            it.key = it.key or self._key(it.kind, it.spec, it.batch)
            results.append(self._cached(it.key))
        todo = [i for i, r in enumerate(results) if r is None]
        have = {i: len(self.store.replicates(items[i].key)) if not self.force else 0 for i in todo}
        if self.force:
            for i in todo:
                self.store.drop_replicates(items[i].key)
        k = self._processes()
        for i in todo:
            if have[i] >= k:  # every process stored before an interruption, the measurement not yet combined
                results[i] = self._finish(items[i], self.store.replicates(items[i].key),
                                          self.store.replicate_retries(items[i].key))
        todo = [i for i in todo if have[i] < k]
        total = sum(k - have[i] for i in todo)
        paths: dict[int, Any] = {}
        bar = tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True,
                   disable=not show_progress or total < 2)
        if todo:
            self.baseline_ms()
        slots = getattr(self.worker, "slots", 1)  # a fleet measures on several devices at once
        for r in range(k):
            need = [i for i in todo if have[i] <= r]
            if not need:
                continue
            if self.worker is not None:
                self.worker.restart()  # one fresh process per round
            running: deque[tuple[int, Future]] = deque()

            def collect() -> None:
                i, future = running.popleft()
                m, retried = future.result()
                self.store.put_replicate(items[i].key, have[i], m, retried)
                have[i] += 1
                bar.update(1)
                if have[i] >= k:
                    results[i] = self._finish(items[i], self.store.replicates(items[i].key),
                                              self.store.replicate_retries(items[i].key))

            for i in need:
                if not self.overlap:
                    while running:  # nothing of hwnas runs beside a timing
                        collect()
                if i not in paths:
                    paths[i] = items[i].load()  # with overlap: exported while the previous items are timed
                while len(running) >= slots:
                    collect()
                running.append((i, self._background.submit(self._process, paths[i], items[i].batch, False)))
            while running:
                collect()
        bar.close()
        return results  # type: ignore[return-value]

    # --- what there is to measure -----------------------------------------------------------------

    def _model(self, specs: list[LayerSpec]) -> Callable[[], Any]:
        """What the backend loads for these consecutive layers: an ONNX file, or a torch module."""
        if self.backend.input == "torch":
            from hwnas.exporters.networks import layers_module

            return lambda: (layers_module(specs), specs[0].input_shape)
        from hwnas.exporters.onnx import export_layers

        return lambda: export_layers(specs, self.cache_dir).path

    def layers_item(self, specs: list[LayerSpec]) -> Item:
        kind = "layer" if len(specs) == 1 else "layers"
        spec = {"layer": specs[0].key()} if len(specs) == 1 else {"layers": [s.key() for s in specs]}
        return Item(kind, spec, specs[0].batch, self._model(specs))

    def arch_item(self, space: Space, arch: Arch | dict, batch: int = 1) -> Item:
        arch = space.validate(arch)
        return Item("arch", arch_spec(space, arch, batch), batch, self._model(space.layers(arch, batch)))

    def layers(self, specs: list[LayerSpec]) -> Measured:
        """Consecutive layers as one model: one layer, an adjacent pair, or a whole subnet."""
        return self.measure(self.layers_item(specs))

    def layer(self, spec: LayerSpec) -> Measured:
        return self.layers([spec])

    def arch(self, space: Space, arch: Arch | dict, batch: int = 1, force: bool = False,
             processes: int | None = None) -> Measured:
        """`arch` end to end; force: fresh processes even when the store has it (it replaces the
        stored one); processes: at least this many processes for this one measurement."""
        if processes is not None and processes > self.protocol.processes and self.worker is not None:
            return self.with_processes(processes).arch(space, arch, batch, force)
        return self.measure(self.arch_item(space, arch, batch), force)

    def with_processes(self, processes: int) -> "Measurer":
        """This measurer (same worker, store and baseline) with another process count."""
        other = Measurer.__new__(Measurer)
        other.__dict__.update(self.__dict__, protocol=replace(self.protocol, processes=processes))
        return other

    def submit_arch(self, space: Space, arch: Arch | dict, batch: int = 1, processes: int | None = None) -> Pending:
        """Start measuring `arch` in the background and return at once (export happens here, in
        the caller's process); `.result()` gives the Measured and stores it. processes: this many
        instead of the protocol's; 1 keeps the worker's process between calls (a search's many
        samples: a fresh process each would cost more than the training they run beside)."""
        if processes is not None and processes != self.protocol.processes and self.worker is not None:
            return self.with_processes(processes).submit_arch(space, arch, batch)
        item = self.arch_item(space, arch, batch)
        item.key = self._key(item.kind, item.spec, item.batch)
        found = self._cached(item.key)
        if found is not None:
            return Pending(self, done=found)
        path = item.load()
        self.baseline_ms()  # measured here, once, not in the background thread
        n = self._processes() - len(self.store.replicates(item.key))
        return Pending(self, item, future=self._background.submit(self._processes_of, path, item.batch, n))

    def onnx(self, path: str | Path, batch: int = 1) -> Measured:
        """Any ONNX file a user brings, keyed by its content and the batch it is run at."""
        if self.backend.input != "onnx":
            raise HwnasError(f"backend {self.backend.name} measures PyTorch modules, not ONNX files")
        path = Path(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise HwnasError(f"cannot read ONNX file {path}: {e.strerror or e}") from None

        check_batch(path, batch)
        return self.measure(Item("onnx", {"onnx_sha256": digest, "batch": batch}, batch, lambda: path))


def parse_cpus(text: str | None) -> list[int] | None:
    """'1' or '2,3' or '0-3' as a list of cores this process may use; an unknown core is refused."""
    if text is None:
        return None
    cores: set[int] = set()
    try:
        for part in str(text).split(","):
            lo, _, hi = part.strip().partition("-")
            cores.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise HwnasError(f"--measure-cpus must be core numbers like 1 or 2,3 or 0-3, got {text!r}")
    allowed = os.sched_getaffinity(0)
    unknown = sorted(cores - allowed)
    if unknown or not cores:
        raise HwnasError(f"--measure-cpus names core(s) {unknown or text} that this machine does not let hwnas use "
             f"(available: {','.join(map(str, sorted(allowed)))})")
    return sorted(cores)


def isolation_cores(isolation: str, cpus: list[int] | None, backend) -> tuple[str, list[int] | None, list[int] | None]:
    """(the mode, the worker's cores, the cores left for this process): with pin the worker gets
    `cpus` (default: the last `threads` cores) and this process the rest; auto is pin where that
    leaves this process a core, else pause."""
    allowed = sorted(os.sched_getaffinity(0))
    if isolation not in ("pin", "auto"):
        return isolation, None, None
    worker = cpus or allowed[-max(1, backend.threads):]
    rest = [c for c in allowed if c not in worker]
    if not rest:
        if isolation == "auto":
            return "pause", None, None
        raise HwnasError(f"--isolation pin needs a core for the measurement worker ({len(worker)}) and one for hwnas's own work, "
             f"but only {len(allowed)} core(s) are available; use --isolation pause")
    return "pin", worker, rest


def open_measurer(backend: str = "ort-cpu", *, threads: int = 1, precision: str = "fp32", warmup: int = 5,
                  min_runs: int = 20, min_time: float = 0.3, db: str | Path | None = None, force: bool = False,
                  processes: int = 3, reference: bool = True, isolation: str = "auto",
                  cpus: str | list[int] | None = None, sessions: int = 1) -> Measurer:
    """A measurer on a named backend with the default protocol: k fresh processes, the reference
    model, isolation from this process's own work. Close it (or use `with`) to restore affinity."""

    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= 100:
        raise HwnasError(f"--processes must be in [1, 100], got {processes}")
    target = get_backend(backend, threads=threads, precision=precision)
    protocol = MeasureProtocol(warmup_runs=warmup, min_runs=min_runs, min_time_s=min_time,
                               processes=processes, reference=reference, sessions=sessions)
    cores = parse_cpus(cpus) if isinstance(cpus, str) or cpus is None else parse_cpus(",".join(map(str, cpus)))
    mode, worker_cores, own_cores = isolation_cores(isolation, cores, target)
    return Measurer(target, Store(db), protocol, force=force, cpus=worker_cores, own_cpus=own_cores, isolation=mode)
