"""`hwnas search --method unas`: UNAS with RELAX gradients, on the true measured latency or a latency model."""

from __future__ import annotations

from typing import Any

import click

from hwnas.cli.methods.common import SMALL_ARGS, echo, mbconv_space_options, run_mbconv_search, training_options
from hwnas.cli.methods.registry import register_method
from hwnas.search.unas import CE_ESTIMATORS, PENALTIES, UNASConfig, search
from hwnas.surrogates.lut import LookupTable
from hwnas.validate import Float, Int

OPTIONS = [
    *mbconv_space_options(),
    *training_options(UNASConfig, epochs=12),
    click.option("--true-latency", is_flag=True, help="The latency term uses latency measured on --backend (else the latency model's, --lut: a table or a fitted model)."),
    click.option("--cost", type=click.Choice(PENALTIES), default=UNASConfig.penalty, show_default=True,
                 help="Latency cost: hinge-ms max(L - T, 0) in ms (UNAS's), hinge max(L/T - 1, 0) or abs |L/T - 1| (as TF-NAS's and SNAS's --cost)."),
    click.option("--lambda", "lam", type=Float(0, 1e6), default=UNASConfig.lam, show_default=True, help="Weight of the latency cost (hinge-ms is per ms: at a target of T ms its relative weight is lambda*T)."),
    click.option("--ce-estimator", type=click.Choice(CE_ESTIMATORS), default=UNASConfig.ce_estimator, show_default=True,
                 help="Gradient of the cross-entropy term: straight-through Gumbel-softmax, REBAR (discrete samples, "
                      "RELAX control variate), or RLOO (--ce-samples paths scored on one batch, each against the others)."),
    click.option("--ce-samples", type=Int(2, 1024), default=UNASConfig.ce_samples, show_default=True,
                 help="Paths drawn per architecture step by --ce-estimator rloo."),
    click.option("--generalization-loss", is_flag=True, help="L_train + 0.5 |L_val - L_train| as the architecture's loss."),
    click.option("--calibrate-widths/--no-calibrate-widths", default=True, show_default=True,
                 help="End with elasticity-scaling on the measured latency (elastic spaces)."),
    click.option("--table-target/--no-table-target", default=UNASConfig.table_target, show_default=True,
                 help="Without --true-latency, with --calibrate-widths: first measure the latency model's reading of the target "
                      "and search at it, so the model's error does not stretch the found net at the end."),
]


@register_method("unas", "UNAS: RELAX gradients on the measured (--true-latency) or modelled latency.", OPTIONS,
                 small_args=(*SMALL_ARGS, "--no-calibrate-widths"))
def run(opts: dict[str, Any]) -> dict[str, Any]:
    config = UNASConfig(
        target_ms=opts["target"], true_latency=opts["true_latency"], epochs=opts["epochs"],
        warmup_epochs=opts["warmup_epochs"], batch_size=opts["batch_size"], train_resolution=opts["train_resolution"],
        lr=opts["lr"], weight_decay=opts["weight_decay"], arch_lr=opts["arch_lr"], tau=opts["tau"], lam=opts["lam"],
        penalty=opts["cost"], ce_estimator=opts["ce_estimator"], ce_samples=opts["ce_samples"], generalization_loss=opts["generalization_loss"],
        calibrate_widths=opts["calibrate_widths"], table_target=opts["table_target"], measure_every=opts["measure_every"], seed=opts["seed"],
        train_threads=opts["train_threads"], width_align=opts["width_align"],
    )
    def go(data, measurer, model, model_info):
        lut = model if isinstance(model, LookupTable) else getattr(model, "lut", None)
        return search(config, data, model, opts["out"], measurer=measurer, lut=lut, measure_batch=opts["batch"],
                      run_info={"limit": opts["limit"], "backend": opts["backend_name"], **model_info},
                      echo=echo, repair=opts["repair"], stop_after_epoch=opts["stop_after_epoch"])

    return run_mbconv_search(opts, go)
