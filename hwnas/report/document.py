"""`hwnas report`: one self-contained HTML report and a Markdown summary of search runs, the
measurement store, a lookup table and trained architectures.

Every figure and table is written beside the report as a CSV, with numbers formatted by `fmt`
(4 significant digits) in the CSV, the HTML and summary.md alike, so any number a reader sees
can be found in a CSV. Every note (prose that may hold numbers) goes to notes.csv for the same
reason. A problem with one input is a warning and a note; only a report with nothing in it
is an error.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas.backends.protocol import usable
from hwnas.errors import HwnasError
from hwnas.jsonutil import canonical_json, content_hash, read_json, read_jsonl
from hwnas.report import figures as figs
from hwnas.search import METHOD_NAMES
from hwnas.spaces.mbconv import conv_out
from hwnas.spaces.references import reference_archs
from hwnas.surrogates.additivity import summarize

KNOWN_METHODS = METHOD_NAMES
# ImageNet top-1 (%) from the papers; not comparable with accuracy on the small data sets searched here.
PAPER_TOP1 = {"TF-NAS-A": 76.9, "TF-NAS-B": 76.3, "TF-NAS-C": 75.2, "TF-NAS-D": 74.2, "TF-NAS-A-wose": 76.5,
              "MobileNetV2": 72.0}
FUSION_ALPHA = 0.5


def fmt(v: Any) -> str:
    """The one text form of a value in CSVs, HTML and Markdown."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    return str(v)


# --- report structure -------------------------------------------------------------------------


@dataclass
class Table:
    name: str  # the CSV's stem
    title: str
    df: pd.DataFrame
    caption: str = ""


@dataclass
class Plot:
    name: str  # the CSV's and PNG's stem
    title: str
    data: pd.DataFrame
    draw: Callable[[], bytes]
    caption: str = ""
    png: bytes = b""


@dataclass
class Code:
    title: str
    text: str


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    @property
    def content(self) -> int:
        """Figures and tables that show something beyond the list of inputs."""
        return sum(isinstance(i, (Table, Plot)) and i.name not in ("runs",) for s in self.sections for i in s.items)


# --- inputs -----------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    path: Path
    config: dict[str, Any]
    log: list[dict[str, Any]]
    summary: dict[str, Any] | None
    samples: list[dict[str, Any]]
    final_arch: dict[str, Any] | None

    method = property(lambda self: self.config.get("method"))
    complete = property(lambda self: self.summary is not None)
    epochs_planned = property(lambda self: self.config.get("epochs"))
    target_ms = property(lambda self: self.config.get("target_ms"))

    @property
    def status(self) -> str:
        return "complete" if self.complete else f"incomplete ({len(self.log)} of {self.epochs_planned} epochs)"

    def deploy_space(self):
        from hwnas.surrogates.lut import space_from_config

        try:
            return space_from_config(self.config["deploy_space"])
        except (KeyError, TypeError, HwnasError):
            return None


def load_run(path: Path, name: str) -> Run:
    """A run directory as written by hwnas.search; HwnasError says why one cannot be read."""
    path = Path(path)
    if not path.exists():
        raise HwnasError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise HwnasError(f"{path} is not a run directory (a file)")
    if not (path / "config.json").exists():
        what = "a run from an older hwnas" if any((path / f).exists() for f in ("log.jsonl", "summary.json")) \
            else "not a search run directory"
        raise HwnasError(f"{path} has no config.json ({what}); skipped")
    config = read_json(path / "config.json", "run config")
    if not isinstance(config, dict):
        raise HwnasError(f"{path}/config.json is not a run config (not a JSON object); skipped")
    method = config.get("method")
    if method not in KNOWN_METHODS:
        raise HwnasError(f"{path}: unknown search method {method!r} (known: {', '.join(KNOWN_METHODS)}); skipped")
    summary = read_json(path / "summary.json", "run summary") if (path / "summary.json").exists() else None
    final = read_json(path / "final_arch.json", "final architecture") if (path / "final_arch.json").exists() else None
    log = read_jsonl(path / "log.jsonl", "run log")[0]
    for i, rec in enumerate(log, 1):
        if rec["epoch"] != i:  # a repeated or missing epoch: the plots would be wrong
            raise HwnasError(f"run log {path / 'log.jsonl'} is damaged: record {i} is of epoch {rec['epoch']}; "
                             f"repair it with `hwnas search ... --out {path} --repair`; skipped")
    return Run(name, path, config, log, summary if isinstance(summary, dict) else None,
               read_jsonl(path / "samples.jsonl", "sample log")[0], final if isinstance(final, dict) else None)


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).resolve().name) or "run"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def _load_lut(path: Path):
    """A lookup table file, or the table inside a fitted-model file (lut+linear, mlp, gbt)."""
    from hwnas.surrogates.lut import LookupTable

    try:
        return LookupTable.load(path)
    except HwnasError as e:
        first = e  # the lookup table's complaint is the one to show
    try:
        from hwnas.surrogates.models import load_model

        lut = getattr(load_model(path), "lut", None)
    except HwnasError:
        lut = None
    if lut is None:
        raise first
    return lut


def _spec_hash(spec: dict[str, Any]) -> str:
    return content_hash(spec["arch"]) if isinstance(spec, dict) and "arch" in spec else ""


class Inputs:
    """Everything the report reads, loaded once; problems become warnings."""

    def __init__(self, run_dirs, store_path, lut_path, trained_paths, surrogates_csv, warn):
        self.warn = warn
        self.runs: list[Run] = []
        for p, name in zip(run_dirs, _unique_names(list(run_dirs))):
            try:
                self.runs.append(load_run(p, name))
            except HwnasError as e:
                warn(str(e))
        for r in self.runs:
            if not r.complete:
                warn(f"run {r.path} is incomplete: {len(r.log)} of {r.epochs_planned} epochs logged, no summary.json "
                     "yet; reporting the epochs so far")
        self.store_path = self._store_path(store_path)
        self.arch_df = self.layer_df = self.layers_df = None
        if self.store_path is not None:
            from hwnas.store import Store

            try:
                with Store(self.store_path) as store:
                    self.store_path = store.path  # a URL's password hidden: the report names the store
                    self.arch_df = store.dataframe(kind="arch")
                    self.layer_df = store.dataframe(kind="layer")
                    self.layers_df = store.dataframe(kind="layers")
            except HwnasError as e:
                warn(str(e))
                self.store_path = None
        if self.arch_df is not None:
            self.arch_df["arch_hash"] = self.arch_df["spec"].map(_spec_hash)
        self.luts: dict[str, Any] = {}  # resolved path -> table
        self.run_lut: dict[str, str] = {}  # run name -> resolved path
        self._find_luts(lut_path)
        self.trained: list[dict[str, Any]] = []
        for p in trained_paths:
            try:
                doc = read_json(p, "trained result")
                if not isinstance(doc, dict) or "arch_hash" not in doc or "test_acc" not in doc:
                    raise HwnasError(f"{p} is not an `hwnas train --out` result (no arch_hash / test_acc); skipped")
                doc["_file"] = str(p)
                self.trained.append(doc)
            except HwnasError as e:
                warn(str(e))
        self.surrogates = None
        if surrogates_csv is not None:
            try:
                self.surrogates = pd.read_csv(surrogates_csv)
                need = {"model", "n_train", "mape_pct"}
                if not need <= set(self.surrogates.columns):
                    raise HwnasError(f"{surrogates_csv} is not a `hwnas surrogate eval --out` CSV (needs columns "
                                     f"{', '.join(sorted(need))}); ignored")
            except (OSError, ValueError, pd.errors.ParserError) as e:
                warn(f"cannot read surrogate metrics {surrogates_csv}: {e}; ignored")
                self.surrogates = None
            except HwnasError as e:
                warn(str(e))
                self.surrogates = None
        self.fingerprints: dict[str, dict[str, Any]] = {}  # canonical -> {"fingerprint", "n", "used_for"}

    def _store_path(self, given):
        from hwnas.store import is_url

        if is_url(given):  # a fleet's PostgreSQL store: opened (and refused in one line) where it is read
            return given
        if given is not None:
            if not Path(given).is_file():
                self.warn(f"measurement store {given} does not exist; reporting without measurements from a store")
                return None
            return Path(given)
        from hwnas.store import default_db_path

        p = default_db_path()
        return p if p.is_file() else None

    def _find_luts(self, lut_path):
        def load(p) -> str | None:
            key = str(Path(p).resolve())
            if key not in self.luts:
                try:
                    self.luts[key] = _load_lut(Path(p))
                except HwnasError as e:
                    self.warn(str(e))
                    self.luts[key] = None
            return key if self.luts[key] is not None else None

        if lut_path is not None:
            key = load(lut_path)
            for r in self.runs:
                if key:
                    self.run_lut[r.name] = key
        for r in self.runs:
            if r.name in self.run_lut or r.method == "snas":  # snas runs hold a cell table, not a layer table
                continue
            for cand in (r.config.get("latency_model_file"), r.path / "lut.json"):
                if cand and Path(cand).is_file():
                    key = load(cand)
                    if key:
                        self.run_lut[r.name] = key
                        break
        self.luts = {k: v for k, v in self.luts.items() if v is not None}

    def use_fingerprint(self, fp: Any, what: str, n: int = 1) -> None:
        if not isinstance(fp, dict):
            return
        entry = self.fingerprints.setdefault(canonical_json(fp), {"fingerprint": fp, "n": 0, "used_for": set()})
        entry["n"] += n
        entry["used_for"].add(what)

    def spaces(self) -> list:
        """Deployment spaces of the runs and the tables, distinct, in order."""
        out, seen = [], set()
        for s in [r.deploy_space() for r in self.runs] + [t.space for t in self.luts.values()]:
            if s is not None and canonical_json(s.config) not in seen:
                seen.add(canonical_json(s.config))
                out.append(s)
        return out


# --- sections ---------------------------------------------------------------------------------


def _lut_rows(inp: Inputs, lut) -> pd.DataFrame:
    """The store's measured subnets of the table's space, batch and target."""
    from hwnas.surrogates.lut import TARGET_FIELDS

    df = inp.arch_df
    if df is None or df.empty:
        return pd.DataFrame()
    want = {k: lut.fingerprint.get(k) for k in TARGET_FIELDS}
    keep = [isinstance(s, dict) and s.get("space") == lut.space.config and s.get("batch") == lut.batch
            and b == lut.backend and all(fp.get(k) == v for k, v in want.items())
            for s, b, fp in zip(df["spec"], df["backend"], df["fingerprint"])]
    return df[keep]


def _stage_op_counts(space, arch) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for i, stage in enumerate(arch.stages):
        for c in stage:
            if c.op != "skip":
                counts[(f"stage{i + 3}", c.op)] = counts.get((f"stage{i + 3}", c.op), 0) + 1
    return counts


def lookup_section(rep: Report, inp: Inputs) -> None:
    sec = rep.section("Lookup-table error")
    if not inp.luts:
        sec.notes.append("no lookup table: give --lut, or runs whose config names a latency_model_file or whose "
                         "directory holds lut.json")
    points = []  # rows with _arch and _lut also feed the per-(stage, op) fit
    for key, lut in inp.luts.items():
        rows = _lut_rows(inp, lut)
        best: dict[str, dict] = {}
        skipped = 0
        for _, r in rows.iterrows():
            try:
                arch = lut.space.validate(r["spec"]["arch"])
                pred = lut.predict(arch)
            except HwnasError:
                skipped += 1
                continue
            best[arch.hash] = {"source": "store", "run": "", "arch_hash": arch.hash, "measured_ms": float(r["median_ms"]),
                               "lookup_ms": pred, "lut": Path(key).name, "_arch": arch, "_lut": lut,
                               "ci_low_ms": r.get("ci_low_ms"), "ci_high_ms": r.get("ci_high_ms"),
                               "flags": ",".join(r.get("flags") or [])}
            inp.use_fingerprint(r["fingerprint"], "subnets against the lookup table")
        if skipped:
            sec.notes.append(f"{skipped} stored subnets of {lut.space} fall outside lookup table {Path(key).name}")
        points.extend(best.values())
    for r in inp.runs:
        seen = set()
        for s in r.samples:
            if s.get("source") == "measured" and s.get("lookup_ms") is not None and s.get("latency_ms") \
                    and s.get("arch_hash") not in seen:
                seen.add(s.get("arch_hash"))
                ci = s.get("ci95_ms") or [None, None]
                points.append({"source": "unas samples", "run": r.name, "arch_hash": s.get("arch_hash"),
                               "measured_ms": float(s["latency_ms"]), "lookup_ms": float(s["lookup_ms"]), "lut": "",
                               "ci_low_ms": ci[0], "ci_high_ms": ci[1], "flags": ",".join(s.get("flags") or [])})
        if r.summary and r.summary.get("measured_ms"):
            lookup = r.summary.get("lookup_ms")
            if lookup is None and r.method == "tfnas" and r.config.get("latency_model") == "lut":
                lookup = r.summary.get("predicted_ms")
            if lookup is not None:
                ci = r.summary.get("measured_ci95_ms") or [None, None]
                p = {"source": "final", "run": r.name, "arch_hash": r.summary.get("arch_hash"),
                     "measured_ms": float(r.summary["measured_ms"]), "lookup_ms": float(lookup), "lut": "",
                     "ci_low_ms": ci[0], "ci_high_ms": ci[1], "flags": ",".join(r.summary.get("measured_flags") or [])}
                lut = inp.luts.get(inp.run_lut.get(r.name, ""))
                if lut is not None and r.final_arch is not None:
                    try:
                        p.update(_arch=lut.space.validate(r.final_arch), _lut=lut, lut=Path(inp.run_lut[r.name]).name)
                    except HwnasError:
                        pass
                points.append(p)
    if not points:
        if inp.luts:
            sec.notes.append("no architecture measured on the lookup tables' targets: measure subnets with "
                             "`hwnas sample` or give runs with measured latencies")
        additivity_part(sec, inp)
        return
    df = pd.DataFrame(points)
    for col in ("ci_low_ms", "ci_high_ms"):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    df["flags"] = df.get("flags", pd.Series("", index=df.index)).fillna("")
    df["error_pct"] = 100.0 * (df["lookup_ms"] - df["measured_ms"]) / df["measured_ms"]
    public = df[["source", "run", "arch_hash", "lut", "measured_ms", "ci_low_ms", "ci_high_ms", "flags", "lookup_ms",
                 "error_pct"]]
    sec.items.append(Plot("lookup_scatter", "Lookup-table against measured latency", public,
                          lambda: figs.lookup_scatter(public),
                          "Points: the store's measured subnets (store), UNAS samples measured during the search, "
                          "and the final architectures, with their measurements' 95% confidence intervals; "
                          "hollow points were flagged noisy or disturbed; bands at ±5 % and ±10 %."))
    quality = []
    for source, g in df.groupby("source", sort=False):
        flags = g["flags"].str.split(",")
        quality.append({"source": source, "n": len(g),
                        **{f: int(flags.map(lambda fs, f=f: f in fs).sum()) for f in ("noisy", "disturbed", "retried", "single-process")},
                        "median_ci_halfwidth_pct": float((100 * (g["ci_high_ms"] - g["ci_low_ms"]) / 2 / g["measured_ms"]).median())
                        if g["ci_high_ms"].notna().any() else float("nan")})
    sec.items.append(Table("measurement_quality", "Measurement quality", pd.DataFrame(quality),
                           "Counts of flagged measurements. The rule: measurements flagged noisy (95% CI wider than "
                           "±2%) or disturbed (the reference model read the machine >15% slow, after retries) are "
                           "left out of every statistic below; single-process: measured by the old protocol."))

    df = df[df["flags"].str.split(",").map(usable)]
    if df.empty:
        sec.notes.append("every measurement against the table was flagged: no lookup-error statistics")
        additivity_part(sec, inp)
        return
    stats = []
    for source, g in [("all", df), *df.groupby("source", sort=False)]:
        e = g["error_pct"].abs()
        stats.append({"source": source, "n": len(g), "mape_pct": e.mean(), "bias_pct": g["error_pct"].mean(),
                      "within5_pct": 100 * (e <= 5).mean(), "within10_pct": 100 * (e <= 10).mean(),
                      "max_abs_pct": e.max()})
    sec.items.append(Table("lookup_error_stats", "Lookup error by source", pd.DataFrame(stats),
                           "error = (lookup − measured) / measured"))
    counts, edges = np.histogram(df["error_pct"], bins=int(min(20, max(5, len(df) // 3))))
    hist = pd.DataFrame({"bin_lo_pct": edges[:-1], "bin_hi_pct": edges[1:], "count": counts})
    sec.items.append(Plot("lookup_error_hist", "Distribution of the lookup error", hist, lambda: figs.error_histogram(hist)))
    _stage_op_fit(sec, df)
    additivity_part(sec, inp)


def _stage_op_fit(sec: Section, df: pd.DataFrame) -> None:
    """Least squares of (measured − lookup) on per-(stage, op) layer counts and an intercept:
    what each kind of layer adds to the error, in ms per layer."""
    if "_arch" not in df:
        sec.notes.append("no architectures with a lookup table to break the error down by stage and op")
        return
    d = df[df["_arch"].notna()]
    rows = [_stage_op_counts(lut.space, arch) for arch, lut in zip(d["_arch"], d["_lut"])]
    cols = sorted({k for r in rows for k in r})
    if len(d) < 3 or not cols:
        sec.notes.append("fewer than 3 architectures with a lookup table: no breakdown by stage and op")
        return
    X = np.array([[r.get(c, 0) for c in cols] + [1.0] for r in rows], dtype=float)
    y = (d["measured_ms"] - d["lookup_ms"]).to_numpy(dtype=float)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)  # minimum-norm where the counts do not pin every term
    out = pd.DataFrame({"stage": [c[0] for c in cols] + ["all"], "op": [c[1] for c in cols] + ["per model"],
                        "layers": list(X[:, :-1].sum(0).astype(int)) + [len(d)], "ms_per_layer": coef})
    note = (f"fitted on {len(d)} architectures for {len(cols) + 1} terms"
            + ("; fewer architectures than terms: the minimum-norm solution, indicative only" if len(d) <= len(cols) else ""))
    sec.items.append(Plot("lookup_error_by_stage_op", "Lookup error by stage and op", out,
                          lambda: figs.error_by_stage_op(out), note))


def _layer_label(key: dict[str, Any], spaces) -> tuple[str, str]:
    """(op kind, stage) of a stored layer spec, inferred from its shape in the known spaces."""
    from hwnas.surrogates.lut import stage_input_hw

    kind = key.get("kind")
    if kind != "mbinvres":
        return str(kind), str(kind)
    c_in, c_out, mid, h = key.get("c_in"), key.get("c_out"), key.get("mid"), key.get("h")
    if mid == c_in:
        return "k3_e1 (fixed)", "stage2"
    op = f"k{key.get('kernel')}_e{6 if mid > 4 * c_in else 3}" + ("_se" if key.get("se") else "")
    for sp in spaces:
        hs = stage_input_hw(sp)
        for i, st in enumerate(sp.stages):
            if st.c_out == c_out and c_in in (st.c_in, st.c_out) and h in (hs[i], conv_out(hs[i], 3, st.stride)):
                return op, f"stage{i + 3}"
    return op, f"{c_in}->{c_out}ch@{h}px"


def additivity_part(sec: Section, inp: Inputs) -> None:
    if inp.layers_df is None:
        return
    parts = {}
    for spec, fp, proto, ms in zip(inp.layer_df["spec"], inp.layer_df["fingerprint"], inp.layer_df["protocol"],
                                   inp.layer_df["median_ms"]):
        parts[(canonical_json(spec), canonical_json(fp), canonical_json(proto))] = float(ms)
    spaces = inp.spaces()
    rows = []
    for _, r in inp.layers_df.iterrows():
        layers = r["spec"].get("layers") if isinstance(r["spec"], dict) else None
        if not layers or len(layers) != 2:
            continue
        ctx = (canonical_json(r["fingerprint"]), canonical_json(r["protocol"]))
        t = [parts.get((canonical_json({"layer": k}), *ctx)) for k in layers]
        if None in t:
            continue
        (op1, st1), (op2, _) = _layer_label(layers[0], spaces), _layer_label(layers[1], spaces)
        t12 = float(r["median_ms"])
        gap = t[0] + t[1] - t12
        rows.append({"backend": r["backend"], "stage": st1, "op_first": op1, "op_second": op2, "t1_ms": t[0],
                     "t2_ms": t[1], "t12_ms": t12, "nonadditive_ms": gap, "nonadditive_share": gap / (t[0] + t[1]),
                     "fused": gap > FUSION_ALPHA * min(t[0], t[1])})
        inp.use_fingerprint(r["fingerprint"], "additivity pairs", 3)
    if not rows:
        sec.notes.append("additivity: the store holds no layer pair measured with both its parts; measure pairs with "
                         "`hwnas additivity --space S --backend B`")
        return
    pairs = pd.DataFrame(rows)
    summary = summarize(pairs)
    sec.items.append(Table("additivity_pairs", "Additivity: adjacent layer pairs", pairs,
                           f"T1, T2 measured alone, T12 as one model; fused where T1 + T2 − T12 > {FUSION_ALPHA} · min(T1, T2)"))
    sec.items.append(Plot("additivity_summary", "Non-additive share per op kind and stage", summary,
                          lambda: figs.additivity_bars(summary),
                          "share = (T1 + T2 − T12) / (T1 + T2); op kind of the first layer of each pair"))


def surrogate_section(rep: Report, inp: Inputs) -> None:
    """The metrics `hwnas surrogate eval --out` wrote (the report fits no model: what it shows was
    scored on usable held-out measurements, by the command that says so)."""
    sec = rep.section("Latency surrogates")
    if inp.surrogates is None:
        sec.notes.append("no surrogate metrics given: `hwnas surrogate eval --out metrics.csv` fits each model on "
                         "measured subnets and scores it on held-out ones; `--surrogates metrics.csv` shows them here")
        return
    curves = inp.surrogates
    sec.notes.append("metrics read from the given `hwnas surrogate eval --out` CSV")
    last = curves.loc[curves.groupby("model", sort=False)["n_train"].idxmax()]
    cols = [c for c in ("model", "n_train", "n_test", "rmse_ms", "mape_pct", "mape_pct_scaled", "within2_pct",
                        "within5_pct", "within10_pct", "kendall_tau", "bias_pct", "refused", "beats_lut") if c in last]
    sec.items.append(Table("surrogate_metrics", "Surrogates on held-out subnets", last[cols].reset_index(drop=True),
                           "each model at its largest training set; within2/5/10: share of subnets within ±2 / ±5 / ±10 %; "
                           "*_scaled: after removing one machine-wide scale; repeat: the held-out subnets measured "
                           "again against the first measurement, the floor below which no model can be shown better; "
                           "refused: its learning curve rises; beats_lut: better than the table by more than that floor"))
    if {"kendall_tau"} <= set(curves.columns):
        sec.items.append(Plot("surrogate_learning_curves", "Learning curves", curves,
                              lambda: figs.learning_curves(curves), "lut: not fitted (dashed)"))


# snas logs (hwnas.search.snas) under its own names: the cell table's latency, the derived child's accuracy, edge entropy
SNAS_LOG_NAMES = {"table_ms": "lookup_ms", "val_acc_child": "val_acc", "edge_entropy": "alpha_entropy"}


def _log_frame(run: Run) -> pd.DataFrame:
    if run.method == "snas":
        run = Run(run.name, run.path, run.config, [{SNAS_LOG_NAMES.get(k, k): v for k, v in r.items()} for r in run.log],
                  run.summary, run.samples, run.final_arch)
    cols = ["epoch", "lookup_ms", "predicted_ms", "surrogate_ms", "measured_ms", "seed_predicted_ms", "soft_latency_ms",
            "sampled_latency_ms", "train_acc", "val_acc", "alpha_entropy", "beta_entropy"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in run.log])
    df = df[[c for c in cols if c in df and df[c].notna().any()]]
    if run.method == "tfnas" and "predicted_ms" in df and run.config.get("latency_model") == "lut":
        df = df.rename(columns={"predicted_ms": "lookup_ms"})  # tfnas's latency model is the lookup table
    return df.astype(float)


def search_section(rep: Report, inp: Inputs) -> None:
    sec = rep.section("Searches")
    if not inp.runs:
        sec.notes.append("no search runs to show")
        return
    runs = pd.DataFrame([{"run": r.name, "method": r.method, "status": r.status, "epochs_logged": len(r.log),
                          "epochs_planned": r.epochs_planned, "target_ms": r.target_ms,
                          "latency_model": r.config.get("latency_model"), "data": r.config.get("data"),
                          "path": str(r.path)} for r in inp.runs])
    sec.items.append(Table("runs", "Runs", runs))
    for r in inp.runs:
        if r.method == "modnas":  # a slot search has trials, not epochs: its own section
            continue
        if not r.log:
            sec.notes.append(f"run {r.name}: no epoch logged yet")
            continue
        df = _log_frame(r)
        sec.items.append(Plot(f"search_{r.name}", f"Search {r.name} ({r.method}, {r.status})", df,
                              lambda df=df, t=r.target_ms: figs.search_curves(df, t),
                              "latency of the derived architecture each epoch (dashed: target); supernet accuracy; "
                              "entropy of the architecture parameters"))
        moved = distribution_frame(r)
        if moved is not None:
            sec.items.append(Table(f"distribution_{r.name}", f"How {r.name}'s architecture distribution moved", moved))


# What an epoch logs about the architecture distribution, and how it is shown.
DISTRIBUTION_COLUMNS = ("alpha_entropy", "grad_norm_ce", "grad_agreement_ce", "grad_norm_latency", "grad_agreement_latency",
                        "grad_var_relax", "grad_var_reinforce")


def distribution_frame(run: Run) -> pd.DataFrame | None:
    """Per epoch: entropy, the mean and lowest per-decision max probability, and (UNAS) the gradient
    norms, their agreement over the epoch and the variances that moved it. None for a log written before these were recorded."""
    rows = []
    for rec in run.log:
        probs = rec.get("max_prob")
        if not isinstance(probs, list) or not probs:
            continue
        rows.append({"epoch": rec.get("epoch"), "max_prob_mean": float(np.mean(probs)), "max_prob_min": float(np.min(probs)),
                     **{c: rec.get(c) for c in DISTRIBUTION_COLUMNS}})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return df[[c for c in df if df[c].notna().any()]]


def slot_search_section(rep: Report, inp: Inputs) -> None:
    """Slot searches (--method modnas): each run's trials against measured latency, its Pareto front
    with the measured interval, the table's prediction and the lookup error along it."""
    runs = [r for r in inp.runs if r.method == "modnas" and (r.path / "trials.csv").exists()]
    if not runs:
        return
    sec = rep.section("Slot searches: Pareto fronts on measured latency")
    rows = []
    for r in runs:
        trials = pd.read_csv(r.path / "trials.csv")
        done = trials[(trials["state"] == "COMPLETE") & trials["feasible"]].drop_duplicates("arch_hash")
        front = pd.read_csv(r.path / "pareto.csv") if (r.path / "pareto.csv").stat().st_size > 1 else pd.DataFrame()
        on_front = set(front["arch_hash"]) if len(front) else set()
        s = r.summary or {}
        err = front["lookup_error_pct"].abs() if "lookup_error_pct" in front else pd.Series(dtype=float)
        rows.append({"run": r.name, "optimizer": r.config.get("optimizer", {}).get("name"),
                     "estimator": r.config.get("estimator", {}).get("name"), "trials": len(trials),
                     "feasible": len(done), "front": len(front), "hypervolume": s.get("hypervolume"),
                     "front_lookup_error_abs_median_pct": float(err.median()) if len(err) else None})
        if done.empty:
            sec.notes.append(f"{r.name}: no feasible trial among {len(trials)} (constraints {r.config.get('constraints')})")
            continue
        df = pd.DataFrame({"label": "", "kind": ["front" if h in on_front else "dominated" for h in done["arch_hash"]],
                           "latency_ms": done["latency"].astype(float), "accuracy": done["accuracy"].astype(float),
                           "pareto": [h in on_front for h in done["arch_hash"]]})
        sec.items.append(Plot(f"slot_front_{r.name}", f"{r.name}: accuracy against measured latency", df,
                              lambda df=df: figs.accuracy_latency(df),
                              "every feasible trial (accuracy: the estimator's search-val); dashed: the Pareto front"))
        if len(front):
            cols = ["number", "accuracy", "latency", "latency_ci_low", "latency_ci_high", "lut_latency",
                    "lookup_error_pct", "latency_flags", "arch_hash"]
            sec.items.append(Table(f"slot_front_points_{r.name}", f"{r.name}: the front", front[[c for c in cols if c in front]],
                                   "latency: measured median (ms) with its 95% interval; lut_latency: the slot table's "
                                   "prediction; lookup error = lut / measured − 1"))
            flagged = front["latency_flags"].fillna("").str.contains("noisy|disturbed")
            if flagged.any():
                sec.notes.append(f"{r.name}: {int(flagged.sum())} front point(s) carry a flagged latency "
                                 "(noisy or disturbed, measured twice); see latency_flags")
    sec.items.insert(0, Table("slot_searches", "Slot searches", pd.DataFrame(rows),
                              "hypervolume of (accuracy, latency) up to accuracy 0 and the run's reference latency"))


def _store_latency(inp: Inputs, arch_hash: str, spaces) -> tuple[float | None, str]:
    """Measured latency of an architecture from the store, on a deployment space of the runs first."""
    df = inp.arch_df
    if df is None or not arch_hash:
        return None, ""
    hits = df[df["arch_hash"] == arch_hash]
    if hits.empty:
        return None, ""
    configs = [canonical_json(s.config) for s in spaces]
    ranked = sorted(hits.itertuples(), key=lambda r: canonical_json(r.spec.get("space")) not in configs)
    r = ranked[0]
    inp.use_fingerprint(r.fingerprint, "accuracy against latency")
    return float(r.median_ms), f"measured ({r.backend})"


def accuracy_section(rep: Report, inp: Inputs) -> None:
    sec = rep.section("Accuracy against latency")
    spaces = inp.spaces()
    by_hash = {t["arch_hash"]: t for t in inp.trained}
    finals = {r.summary.get("arch_hash") for r in inp.runs if r.summary}
    rows = []
    for r in inp.runs:
        if not r.summary:
            continue
        h = r.summary.get("arch_hash")
        if h in by_hash:
            acc, acc_src = by_hash[h].get("test_acc"), "trained test_acc"
        else:
            vals = [e["val_acc"] for e in r.log if e.get("val_acc") is not None]
            acc, acc_src = (vals[-1], "supernet val_acc (not trained)") if vals else (None, "")
        lat, lat_src = (r.summary.get("measured_ms"), "measured") if r.summary.get("measured_ms") else (None, "")
        if lat is None:
            lat, lat_src = _store_latency(inp, h, spaces)
        if lat is None:
            lat = r.summary.get("lookup_ms") or r.summary.get("predicted_ms")
            lat_src = "predicted"
        rows.append({"label": r.name, "kind": "final", "arch_hash": h, "latency_ms": lat, "latency_source": lat_src,
                     "accuracy": acc, "accuracy_source": acc_src})
    for t in inp.trained:
        if t["arch_hash"] in finals:
            continue
        lat, lat_src = _store_latency(inp, t["arch_hash"], spaces)
        if lat is None and t.get("predicted_ms") is not None:  # under the model it was scaled with
            lat, lat_src = t["predicted_ms"], "predicted"
        if lat is None:
            for lut in inp.luts.values():
                sp = t.get("space") or {}
                if (sp.get("space"), sp.get("width_mult"), sp.get("num_classes")) == \
                        (lut.space.name, lut.space.width_mult, lut.space.num_classes) and "arch" in t:
                    try:
                        lat, lat_src = lut.predict(lut.space.validate(t["arch"])), "lookup"
                        break
                    except HwnasError:
                        pass
        if lat is None:
            sec.notes.append(f"trained architecture {t['arch_hash']} ({Path(t['_file']).name}) has no latency "
                             "(not in the store, no matching lookup table); left out")
            continue
        rows.append({"label": Path(t["_file"]).stem, "kind": "random", "arch_hash": t["arch_hash"], "latency_ms": lat,
                     "latency_source": lat_src, "accuracy": t.get("test_acc"), "accuracy_source": "trained test_acc"})
    df = pd.DataFrame(rows, columns=["label", "kind", "arch_hash", "latency_ms", "latency_source", "accuracy",
                                     "accuracy_source"])
    df = df[df["latency_ms"].notna() & df["accuracy"].notna()].reset_index(drop=True)
    if df.empty:
        sec.notes.append("no architecture with both an accuracy and a latency: give finished runs or --trained results")
    else:
        df["latency_ms"] = df["latency_ms"].astype(float)
        df["accuracy"] = df["accuracy"].astype(float)
        best, pareto = -np.inf, []
        for i in df.sort_values(["latency_ms", "accuracy"], ascending=[True, False]).index:
            pareto.append((i, df.at[i, "accuracy"] > best))
            best = max(best, df.at[i, "accuracy"])
        df["pareto"] = pd.Series(dict(pareto)).astype(bool)
        if (df["accuracy_source"] != "trained test_acc").any():
            sec.notes.append("some final architectures are not trained: their accuracy is the supernet's last "
                             "val_acc, not comparable with trained test accuracy (train them with `hwnas train --arch "
                             "RUN/final_arch.json --out result.json` and pass --trained)")
        sec.items.append(Plot("accuracy_latency", "Accuracy against latency", df, lambda: figs.accuracy_latency(df),
                              "final: the runs' architectures; random: other trained architectures; dashed: Pareto front"))
    _reference_part(sec, inp, spaces)


def _reference_part(sec: Section, inp: Inputs, spaces) -> None:
    rows = []
    for space in spaces:
        refs = reference_archs(space)
        if not refs:
            sec.notes.append(f"reference architectures exist at width 1.0 only: none for {space}")
        for name, arch in refs.items():
            lat, src = _store_latency(inp, arch.hash, [space])
            rows.append({"name": name, "space": space.name, "resolution": space.resolution,
                         "paper_imagenet_top1_pct": PAPER_TOP1.get(name), "macs_m": space.macs(arch) / 1e6,
                         "params_m": space.params(arch) / 1e6, "measured_ms": lat, "latency_source": src})
    if rows:
        sec.items.append(Table("reference_archs", "Reference architectures (ImageNet accuracy from the papers)",
                               pd.DataFrame(rows), "paper accuracy is ImageNet top-1, not the searched data set"))


def target_section(rep: Report, inp: Inputs) -> None:
    sec = rep.section("Target precision")
    rows = []
    for r in inp.runs:
        s = r.summary or {}
        measured, ci, flags = s.get("measured_ms"), s.get("measured_ci95_ms") or [None, None], s.get("measured_flags")
        if measured is None and not r.complete:
            logged = [e for e in r.log if e.get("measured_ms") is not None]
            measured, flags = (logged[-1]["measured_ms"], logged[-1].get("measured_flags")) if logged else (None, None)
        predicted = s.get("predicted_ms") if s else (r.log[-1].get("predicted_ms") or r.log[-1].get("surrogate_ms")
                                                     if r.log else None)
        t = r.target_ms
        rows.append({"run": r.name, "method": r.method, "status": "complete" if r.complete else "incomplete",
                     "target_ms": t, "measured_ms": measured, "ci_low_ms": ci[0], "ci_high_ms": ci[1],
                     "flags": ",".join(flags or []),
                     "measured_error_pct": 100 * (measured - t) / t if measured and t else None,
                     "predicted_ms": predicted, "predicted_error_pct": 100 * (predicted - t) / t if predicted and t else None})
        landing_part(sec, r)
    if not rows:
        sec.notes.append("no search runs")
        return
    sec.items.insert(0, Table("target_precision", "Target against measured latency", pd.DataFrame(rows),
                              "error = (latency − target) / target; measured: median with its 95% interval and the "
                              "protocol's flags (noisy, disturbed: not fit to judge a target by); incomplete runs: "
                              "their last logged epoch"))


def landing_part(sec: Section, r: Run) -> None:
    """A cell search's `--land` rounds, after a row for the derived child they start from (round 0,
    with the search's own last reading of it): where each aimed the table, what it measured, which
    was kept, and the validation accuracy landing cost with the supernet's weights."""
    landing = (r.summary or {}).get("landing")
    if not landing:
        return
    last = r.log[-1] if r.log and r.log[-1].get("arch_hash") == landing.get("derived_arch_hash") else {}
    derived = {"round": 0, "table_ms": last.get("table_ms"), "measured_ms": last.get("measured_ms"),
               "measured_flags": last.get("measured_flags"), "val_acc": landing.get("derived_val_acc")}
    rounds = landing["rounds"]
    kept = next((i for i, x in enumerate(rounds) if x.get("kept")), len(rounds) - 1)
    t = r.target_ms
    rows = []
    for i, x in enumerate([derived, *rounds]):
        ci = x.get("measured_ci95_ms") or [None, None]
        rows.append({"round": x["round"], "table_target_ms": x.get("table_target_ms"), "changes": x.get("changes"),
                     "table_ms": x.get("table_ms"), "measured_ms": x.get("measured_ms"), "ci_low_ms": ci[0],
                     "ci_high_ms": ci[1], "flags": ",".join(x.get("measured_flags") or []),
                     "measured_error_pct": 100 * (x["measured_ms"] / t - 1) if x.get("measured_ms") and t else None,
                     "kept": i == kept + 1, "val_acc": landing.get("landed_val_acc") if i == kept + 1 else x.get("val_acc")})
    sec.items.append(Table(f"landing_{r.name}", f"{r.name}: landing on the target (--land)", pd.DataFrame(rows),
                           "round 0: the derived child, as the search last read it; each round lands the table on "
                           "table_target_ms and measures the landed child; the kept round is measured afresh as the "
                           "run's final measurement; val_acc: with the supernet's weights"))


def provenance_section(rep: Report, inp: Inputs) -> None:
    sec = rep.section("Hardware, software and configurations")
    for key, lut in inp.luts.items():
        inp.use_fingerprint(lut.fingerprint, f"lookup table {Path(key).name}", sum(len(m) for m, _ in lut.entries.values()))
    if inp.fingerprints:
        # One column per fingerprint: fields down the side read better than a wide row.
        cols = {}
        for e in inp.fingerprints.values():
            fp = e["fingerprint"]
            cols[content_hash(fp, 8)] = {"used_for": "; ".join(sorted(e["used_for"])), "measurements": str(e["n"]),
                                         **{k: fmt(v) for k, v in fp.items()}}
        fields = list(dict.fromkeys(k for c in cols.values() for k in c))
        table = pd.DataFrame({"field": fields, **{h: [c.get(k, "") for k in fields] for h, c in cols.items()}})
        sec.items.append(Table("fingerprints", "Measurement targets (distinct fingerprints)", table,
                               "one column per distinct hardware and software fingerprint"))
    else:
        sec.notes.append("no measurements involved")
    if inp.store_path is not None:
        sec.notes.append(f"measurement store: {inp.store_path}")
    if not inp.runs:
        return
    keys = list(dict.fromkeys(k for r in inp.runs for k in r.config))
    table = pd.DataFrame({"key": keys, **{r.name: [json.dumps(r.config[k], sort_keys=True) if k in r.config else ""
                                                   for k in keys] for r in inp.runs}})
    sec.items.append(Table("run_configs", "Run configurations (config.json, one column per run)", table))
    for r in inp.runs:
        sec.items.append(Code(f"{r.name}: command (reconstructed from config.json)", _command(r)))


def _command(r: Run) -> str:
    c = r.config
    if c.get("method") == "modnas":  # its configuration is the command: written back as the YAML it reads
        import yaml

        cfg = {k: v for k, v in c.items() if k != "method"}
        return f"hwnas search --method modnas --config search.yaml --out {r.path}\n# search.yaml:\n" + yaml.safe_dump(cfg)
    space = c.get("deploy_space") or {}
    train = c.get("train_space") or {}
    parts = ["hwnas search", f"--method {c.get('method')}", f"--target {json.dumps(c.get('target_ms'))}",
             f"--out {r.path}", f"--data {c.get('data', 'digits').split(':')[0]}"]
    flags = [("--limit", c.get("limit")), ("--space", space.get("space")), ("--width-mult", space.get("width_mult")),
             ("--resolution", space.get("resolution")), ("--train-resolution", train.get("resolution")),
             ("--backend", c.get("backend")), ("--batch", c.get("measure_batch")), ("--epochs", c.get("epochs")),
             ("--warmup-epochs", c.get("warmup_epochs")), ("--batch-size", c.get("batch_size")), ("--lr", c.get("lr")),
             ("--lambda", c.get("lam")), ("--seed", c.get("seed")), ("--measure-every", c.get("measure_every")),
             ("--lut", c.get("latency_model_file"))]
    parts += [f"{k} {json.dumps(v) if not isinstance(v, str) else v}" for k, v in flags if v is not None]
    if c.get("true_latency"):
        parts.append("--true-latency")
    return " ".join(parts)


# --- writing ----------------------------------------------------------------------------------


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in df.columns if str(c).startswith("_")]).astype(object).map(fmt)


QUALITY_COLUMNS = ("method", "target_ms", "seeds", "found_acc", "random_acc", "difference_se",
                   "measured_vs_target_pct", "lookup_error_pct", "wall_s")


def quality_section(rep: Report, path: Path | None) -> None:
    """benchmarks/search_quality.py's table: every method on one hardware target, side by side."""
    if path is None:
        return
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise HwnasError(f"cannot read search-quality table {path}: {e}") from None
    missing = [c for c in QUALITY_COLUMNS if c not in df]
    if missing:
        raise HwnasError(f"{path} is not a search-quality table (benchmarks/search_quality.py): no column {missing[0]!r}")
    # tables written before 2026-12-03 lack the count of flagged landings and the search options
    columns = list(QUALITY_COLUMNS) + [c for c in ("landings_flagged", "search_args") if c in df]
    if "search_args" in df:
        df = df.assign(search_args=df["search_args"].fillna(""))  # pandas reads an empty field as NaN
    sec = rep.section("Every method on one hardware target")
    sec.items.append(Table("search_quality", "Found against random architectures of the same latency, pooled over search seeds",
                           df[columns]))
    sec.notes.append("difference_se: (found - random mean) in standard errors; above 2 is a difference neither "
                     "training noise nor the draw of random architectures explains")
    if "landings_flagged" in df:
        sec.notes.append("landings_flagged: runs whose final measurement is flagged; measured_vs_target_pct and "
                         "lookup_error_pct pool the others only")


def build(run_dirs, store=None, lut=None, trained=(), surrogates=None, title=None,
          warn: Callable[[str], None] = lambda s: None, quality: Path | None = None) -> Report:
    warnings: list[str] = []

    def w(msg: str) -> None:
        warnings.append(msg)
        warn(msg)

    if not run_dirs:
        w("no run directories given: reporting the store, lookup table and trained results only")
    inp = Inputs(list(run_dirs), store, lut, list(trained), surrogates, w)
    if run_dirs and not inp.runs:
        w("none of the run directories could be read")
    rep = Report(title or "hwnas report")
    lookup_section(rep, inp)
    surrogate_section(rep, inp)
    search_section(rep, inp)
    slot_search_section(rep, inp)
    accuracy_section(rep, inp)
    target_section(rep, inp)
    quality_section(rep, quality)
    provenance_section(rep, inp)
    rep.warnings = warnings
    if rep.content == 0 and not inp.runs:
        raise HwnasError("nothing to report: " + (warnings[-1] if warnings else "no runs, store, lookup table or results")
                         + "; give run directories, --store, --lut, --trained or --quality")
    return rep


def write(rep: Report, out: Path) -> Path:
    """Write report.html, summary.md, one CSV (and PNG) per figure and table, and notes.csv."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        notes = [{"section": "warnings", "note": w} for w in rep.warnings]
        notes += [{"section": s.title, "note": n} for s in rep.sections for n in s.notes]
        contents = []
        for s in rep.sections:
            for item in s.items:
                if isinstance(item, Plot):
                    item.png = item.draw()
                    (out / f"{item.name}.png").write_bytes(item.png)
                if isinstance(item, (Plot, Table)):
                    df = item.data if isinstance(item, Plot) else item.df
                    formatted(df).to_csv(out / f"{item.name}.csv", index=False)
                    contents.append({"section": s.title, "title": item.title, "csv": f"{item.name}.csv",
                                     "caption": item.caption})
                elif isinstance(item, Code):
                    contents.append({"section": s.title, "title": item.title, "csv": "", "caption": item.text})
        pd.DataFrame(notes, columns=["section", "note"]).to_csv(out / "notes.csv", index=False)
        pd.DataFrame(contents, columns=["section", "title", "csv", "caption"]).to_csv(out / "contents.csv", index=False)
        (out / "report.html").write_text(render_html(rep), encoding="utf-8")
        (out / "summary.md").write_text(render_markdown(rep), encoding="utf-8")
    except OSError as e:
        raise HwnasError(f"cannot write the report to {out}: {e.strerror or e}") from None
    return out / "report.html"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em;line-height:1.4}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #aaa;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#f0f0f0}
td.t{text-align:left}figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption,.cap{font-size:12px;color:#555}.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:4px 8px;margin:4px 0}
.note{font-size:13px;color:#333}pre{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap}
a.csv{font-size:11px;color:#06c}
"""


def _html_table(df: pd.DataFrame) -> str:
    f = formatted(df)
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) for c in f.columns}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in f.columns)
    td = {c: "<td>" if numeric[c] else '<td class="t">' for c in f.columns}  # text left, numbers right
    body = "".join("<tr>" + "".join(f"{td[c]}{html.escape(v)}</td>" for c, v in zip(f.columns, row)) + "</tr>"
                   for row in f.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(rep: Report) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(rep.title)}</title>",
           f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{e(rep.title)}</h1>",
           (f"<p class=\"cap\">generated by hwnas on {e(datetime.now().isoformat(timespec='seconds'))}; "
            "every figure's and table's data is in the CSV named beside it</p>")]
    out += [f'<div class="warn">warning: {e(w)}</div>' for w in rep.warnings]
    out.append("<ul>" + "".join(f'<li><a href="#s{i}">{e(s.title)}</a></li>' for i, s in enumerate(rep.sections)) + "</ul>")
    for i, s in enumerate(rep.sections):
        out.append(f'<section id="s{i}">')
        out.append(f"<h2>{e(s.title)}</h2>")
        out += [f'<p class="note">{e(n)}</p>' for n in s.notes]
        for item in s.items:
            if isinstance(item, Plot):
                src = "data:image/png;base64," + base64.b64encode(item.png).decode("ascii")
                out.append(f"<figure><h3>{e(item.title)}</h3><img alt=\"{e(item.title)}\" src=\"{src}\">"
                           f"<figcaption>{e(item.caption)} <a class=\"csv\" href=\"{e(item.name)}.csv\">"
                           f"{e(item.name)}.csv</a></figcaption></figure>")
            elif isinstance(item, Table):
                out.append(f"<h3>{e(item.title)}</h3>")
                out.append(_html_table(item.df))
                out.append(f'<p class="cap">{e(item.caption)} <a class="csv" href="{e(item.name)}.csv">'
                           f"{e(item.name)}.csv</a></p>")
            elif isinstance(item, Code):
                out.append(f"<h3>{e(item.title)}</h3><pre>{e(item.text)}</pre>")
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _md_cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: Report) -> str:
    lines = [f"# {rep.title}", "", ("Data of every figure and table: the CSV named with it; notes: notes.csv; "
                                    "figures: report.html and the PNG files."), ""]
    lines += [f"- **warning**: {w}" for w in rep.warnings]
    for s in rep.sections:
        lines += ["", f"## {s.title}", ""]
        lines += [f"- {n}" for n in s.notes]
        for item in s.items:
            if isinstance(item, Plot):
                lines += ["", f"![{item.title}]({item.name}.png)", "", f"*{item.title}*, data: `{item.name}.csv`"]
            elif isinstance(item, Table):
                f = formatted(item.df)
                lines += ["", f"### {item.title}", "", f"data: `{item.name}.csv`", "",
                          "| " + " | ".join(_md_cell(str(c)) for c in f.columns) + " |",
                          "|" + "---|" * len(f.columns)]
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in f.itertuples(index=False)]
            elif isinstance(item, Code):
                lines += ["", f"### {item.title}", "", "```", item.text, "```"]
    return "\n".join(lines) + "\n"


def default_out(name: str | None = None) -> Path:
    return Path("reports") / (name or datetime.now().strftime("%Y%m%d-%H%M%S"))
