"""The report's figures: matplotlib on the Agg canvas (no display, no pyplot state), as PNG bytes.

Each function takes the same DataFrame that is written beside the figure as its CSV, so a
figure shows nothing its CSV does not hold.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

COLORS = {"store": "tab:blue", "unas samples": "tab:orange", "final": "tab:red"}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def lookup_scatter(df: pd.DataFrame) -> bytes:
    """Lookup-predicted against measured latency, y = x and the +-5 / +-10 % bands."""
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    lo = float(min(df["measured_ms"].min(), df["lookup_ms"].min())) * 0.9
    hi = float(max(df["measured_ms"].max(), df["lookup_ms"].max())) * 1.1
    x = np.linspace(lo, hi, 50)
    ax.fill_between(x, 0.9 * x, 1.1 * x, color="0.9", label="±10 %")
    ax.fill_between(x, 0.95 * x, 1.05 * x, color="0.8", label="±5 %")
    ax.plot(x, x, "k-", lw=1, label="y = x")
    for source, g in df.groupby("source", sort=False):
        flagged = g["flags"].fillna("").str.contains("noisy|disturbed") if "flags" in g else pd.Series(False, index=g.index)
        color = COLORS.get(source)
        if "ci_low_ms" in g and g["ci_low_ms"].notna().any():
            err = np.vstack([(g["measured_ms"] - g["ci_low_ms"]).fillna(0), (g["ci_high_ms"] - g["measured_ms"]).fillna(0)])
            ax.errorbar(g["measured_ms"], g["lookup_ms"], xerr=np.clip(err, 0, None), fmt="none", ecolor=color,
                        alpha=0.5, lw=0.8, zorder=2)
        for bad, h in g.groupby(flagged):
            ax.scatter(h["measured_ms"], h["lookup_ms"], s=28 if source == "final" else 14,
                       marker="*" if source == "final" else "o", facecolors="none" if bad else color,
                       edgecolors=color, label=f"{source} (flagged)" if bad else source, zorder=3)
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="lookup-table latency (ms)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def error_histogram(hist: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    ax.bar(hist["bin_lo_pct"], hist["count"], width=hist["bin_hi_pct"] - hist["bin_lo_pct"], align="edge",
           color="tab:blue", edgecolor="white")
    for v in (-10, -5, 5, 10):
        ax.axvline(v, color="0.5", ls=":", lw=1)
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="lookup error (% of measured; > 0: the table over-predicts)", ylabel="architectures")
    return _png(fig)


def error_by_stage_op(df: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(7.5, 1.0 + 0.16 * len(df)))
    ax = fig.add_subplot()
    labels = [f"{s} {o}" for s, o in zip(df["stage"], df["op"])]
    colors = ["tab:red" if v > 0 else "tab:blue" for v in df["ms_per_layer"]]
    ax.barh(range(len(df)), df["ms_per_layer"], color=colors)
    ax.set_yticks(range(len(df)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="(measured − lookup) ms per layer (> 0: the table under-predicts)")
    return _png(fig)


def additivity_bars(summary: pd.DataFrame) -> bytes:
    groups = list(summary["group"].unique())
    fig = Figure(figsize=(7.5, 3.2 * len(groups)))
    for k, group in enumerate(groups):
        g = summary[summary["group"] == group]
        ax = fig.add_subplot(len(groups), 1, k + 1)
        ax.bar(range(len(g)), 100 * g["mean_share"], color="tab:purple", label="mean")
        ax.scatter(range(len(g)), 100 * g["max_share"], color="k", marker="_", s=120, label="max", zorder=3)
        for x, (fused, pairs) in enumerate(zip(g["fused"], g["pairs"])):
            ax.annotate(f"{int(fused)}/{int(pairs)} fused", (x, 0), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
        ax.set_xticks(range(len(g)), list(g["value"]), rotation=30, ha="right", fontsize=7)
        ax.axhline(0, color="k", lw=1)
        ax.set(ylabel="(T1+T2−T12)/(T1+T2) %", title=f"per {group}")
        ax.legend(fontsize=7)
    fig.subplots_adjust(hspace=0.6)
    return _png(fig)


def learning_curves(df: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(9, 3.6))
    for k, (col, label) in enumerate((("mape_pct", "MAPE (%)"), ("kendall_tau", "Kendall τ"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for model, g in df.groupby("model", sort=False):
            if model == "lut" or len(g) == 1 and g["n_train"].iloc[0] == 0:
                ax.axhline(float(g[col].iloc[0]), ls="--", color="0.3", lw=1, label=model)
            else:
                ax.plot(g["n_train"], g[col], "o-", label=model)
        ax.set(xlabel="training subnets", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def search_curves(df: pd.DataFrame, target_ms: float | None) -> bytes:
    """Latency of the derived architecture (lookup / surrogate / measured) with the target,
    accuracy, and the architecture parameters' entropy, per epoch."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax = fig.add_subplot(1, 3, 1)
    styles = {"measured_ms": ("k", "s"), "lookup_ms": ("tab:blue", "o"), "predicted_ms": ("tab:blue", "o"),
              "surrogate_ms": ("tab:green", "^"), "seed_predicted_ms": ("0.6", "."),
              "soft_latency_ms": ("tab:purple", "."), "sampled_latency_ms": ("tab:orange", ".")}
    for col, (color, marker) in styles.items():
        if col in df and df[col].notna().any():
            d = df[["epoch", col]].dropna()
            ax.plot(d["epoch"], d[col], marker=marker, color=color, ls="-" if len(d) > 1 else "", label=col[:-3])
    if target_ms is not None:
        ax.axhline(target_ms, color="tab:red", ls="--", lw=1, label="target")
    ax.set(xlabel="epoch", ylabel="latency (ms)", title="derived architecture")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _epoch_panel(fig.add_subplot(1, 3, 2), df, ("train_acc", "val_acc"), "accuracy (supernet)", "accuracy")
    _epoch_panel(fig.add_subplot(1, 3, 3), df, ("alpha_entropy", "beta_entropy"), "entropy (nats)", "architecture entropy")
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    return _png(fig)


def accuracy_latency(df: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(7, 4.6))
    ax = fig.add_subplot()
    styles = {"final": ("tab:red", "*", 120), "random": ("tab:blue", "o", 30), "front": ("tab:red", "o", 36),
              "dominated": ("tab:blue", "o", 14)}
    for kind, g in df.groupby("kind", sort=False):
        color, marker, size = styles.get(kind, ("0.5", "o", 30))
        ax.scatter(g["latency_ms"], g["accuracy"], color=color, marker=marker, s=size, label=kind, zorder=3)
    for _, r in df[df["kind"] == "final"].iterrows():
        ax.annotate(r["label"], (r["latency_ms"], r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = df[df["pareto"]].sort_values("latency_ms")
    if len(front):
        ax.step(front["latency_ms"], front["accuracy"], where="post", color="k", lw=1, ls="--", label="Pareto front")
    ax.set(xlabel="latency (ms)", ylabel="accuracy (this data set)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _epoch_panel(ax, df, cols, ylabel: str, title: str) -> None:
    """The logged columns that exist, against the epoch."""
    for col in cols:
        if col in df and df[col].notna().any():
            d = df[["epoch", col]].dropna()
            ax.plot(d["epoch"], d[col], "o-", label=col)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
