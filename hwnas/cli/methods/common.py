"""What the search methods' command-line glue shares: option groups with each method's own
defaults, the data, the measurer and the latency models a search starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hwnas.cli.options import make_measurer, make_new_space
from hwnas.spaces import get_space
from hwnas.spaces.mbconv import Space
from hwnas.validate import Float, Int


def mbconv_space_options(train_resolution: int = 32) -> list:
    """The MBConv spaces (tfnas, proxyless) at a deployment resolution and width."""
    return [
        click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space: tfnas or proxyless."),
        click.option("--width-mult", type=Float(0.1, 4), default=0.5, show_default=True, help="Channel width multiplier."),
        click.option("--resolution", type=Int(16, 2048), default=224, show_default=True,
                     help="Deployment resolution: latency is looked up and measured here."),
        click.option("--train-resolution", type=Int(16, 2048), default=train_resolution, show_default=True,
                     help="Resolution of the images the supernet trains on."),
        click.option("--width-step", type=Int(1, 4096), default=32, show_default=True,
                     help="Lookup-table width grid when the table is built here (elastic spaces)."),
        click.option("--width-align", type=Int(1, 64), default=4, show_default=True,
                     help="Elasticity-scaled widths are multiples of this."),
    ]


# A tiny run (the search conformance suite): 32 px deployment, 16 px training, the table on a coarse grid.
SMALL_ARGS = ("--target", "0.5", "--space", "tfnas", "--resolution", "32", "--width-mult", "0.25", "--train-resolution",
              "16", "--width-step", "64", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32")


def training_options(config, epochs: int, warmup: bool = True) -> list:
    """Epochs, batch size and the two optimisers, defaulting to the method's config class."""
    opts = [
        click.option("--epochs", type=Int(1, 10_000), default=epochs, show_default=True, help="Search epochs."),
        click.option("--batch-size", type=Int(2, 65_536), default=config.batch_size, show_default=True, help="Training batch size."),
        click.option("--lr", type=Float(0, 100, lo_open=True), default=config.lr, show_default=True,
                     help="Weights: SGD learning rate (cosine schedule)."),
        click.option("--weight-decay", type=Float(0, 1), default=config.weight_decay, show_default=True, help="Weights' weight decay."),
        click.option("--arch-lr", type=Float(0, 100, lo_open=True), default=config.arch_lr, show_default=True,
                     help="Architecture parameters: Adam learning rate."),
        click.option("--tau", type=Float(0, 1000, lo_open=True), default=config.tau, show_default=True,
                     help="Gumbel-softmax temperature (initial where it anneals)."),
    ]
    if warmup:
        opts.insert(1, click.option("--warmup-epochs", type=Int(0, 10_000), default=4, show_default=True,
                                    help="Epochs training the weights only."))
    return opts


def land_options(config) -> list:
    """--land and --land-rounds of the cell searches, defaulting to the method's config class."""
    return [
        click.option("--land", is_flag=True,
                     help="After the search, change the derived child's ops (fewest nats of alpha given up first) "
                          "until the cell table reads --target, then re-aim the table at the measured latency "
                          "(not the paper's; needs --target)."),
        click.option("--land-rounds", type=Int(1, 10), default=config.land_rounds, show_default=True,
                     help="Measured landing rounds at most (with --land)."),
    ]


def deploy_options() -> list:
    """Where the found cells are deployed (darts): the size at which latency is looked up and
    measured, while the supernet trains at --channels/--cells/--resolution."""
    return [
        click.option("--deploy-channels", type=Int(1, 4096), default=None,
                     help="Deployment: initial channels C (default: --channels)."),
        click.option("--deploy-cells", type=Int(1, 1000), default=None, help="Deployment: number of cells (default: --cells)."),
        click.option("--deploy-resolution", type=Int(8, 4096), default=None,
                     help="Deployment: input resolution (default: --resolution)."),
    ]


# A tiny cell-space run (the search conformance suite): 2 channels, 2 cells, 8 px.
SMALL_CELL_ARGS = ("--target", "0.5", "--channels", "2", "--cells", "2", "--resolution", "8", "--epochs", "2",
                   "--batch-size", "32")


def load_data(opts: dict[str, Any]):
    from hwnas.data import load_dataset

    return load_dataset(opts["data"], seed=opts["seed"], limit=opts["limit"])


def search_measurer(opts: dict[str, Any]):
    """A measurer whose ONNX measurements run in worker processes, out of the training process,
    where ONNX Runtime read up to 6% slow (TF-NAS's final architecture: 2.85 ms there, 2.67 ms
    in a fresh process), and isolated from the training by --isolation."""
    return make_measurer(opts["backend_name"], opts["batch"], opts["threads"], opts["precision"], opts["warmup"],
                         opts["min_runs"], opts["min_time"], opts["db"])


def echo(line: str) -> None:
    click.echo(line, err=True)


def run_mbconv_search(opts: dict[str, Any], search) -> dict[str, Any]:
    """Load the data, open the measurer, get the latency model, and run
    `search(data, measurer, model, model_info)`; the measurer is closed however it ends."""
    data = load_data(opts)
    measurer = search_measurer(opts)
    try:
        model, model_info = mbconv_latency_model(opts, data.num_classes, measurer)
        return search(data, measurer, model, model_info)
    finally:
        measurer.close()


def mbconv_latency_model(opts: dict[str, Any], num_classes: int, measurer):
    """The given model file (a lookup table or a differentiable fitted model), else a lookup
    table built on the backend at the deployment resolution and kept in the run directory."""
    from hwnas.surrogates.lut import LookupTable
    from hwnas.surrogates.models import load_model

    deploy = Space(opts["space_name"], opts["resolution"], opts["width_mult"], num_classes)
    expect = dict(expect_space=deploy, expect_backend=opts["backend_name"], expect_batch=opts["batch"],
                  expect_fingerprint=measurer.backend.fingerprint(opts["batch"]))
    if opts["model_path"] is not None:
        return load_model(opts["model_path"], **expect), {"latency_model_file": str(Path(opts["model_path"]).resolve())}
    path = Path(opts["out"]) / "lut.json"
    if path.exists():  # resuming: the table this run was built with
        model = LookupTable.load(path, **expect)
    else:
        echo(f"building a lookup table for {deploy} on {opts['backend_name']} (cached in the measurement store)")
        model = LookupTable.build(deploy, measurer, batch=opts["batch"], width_step=opts["width_step"])
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model, {"latency_model_file": str(path.resolve()), "width_step": opts["width_step"]}


def run_cell_search(opts: dict[str, Any], search, config, size: dict[str, int]) -> dict[str, Any]:
    """A search on the darts cell space (SNAS, EnTranNAS): the data, the space at `size` unless
    --channels/--cells are given, the deployment space (--deploy-*, else the same), the config
    checked against them (`check_space`, where the config has one) before the cell table of the
    deployment space is built, then `search(config, space, data, out, ..., deploy=deploy)`."""
    data = load_data(opts)
    space = make_new_space("darts", opts["resolution"], data.num_classes, own={"resolution": opts["resolution"]},
                           channels=size["channels"], cells=size["cells"])
    deploy = get_space("darts", channels=opts["deploy_channels"] or space.channels, cells=opts["deploy_cells"] or space.cells,
                       resolution=opts["deploy_resolution"] or space.resolution, num_classes=space.num_classes)
    if hasattr(config, "check_space"):
        config.check_space(space)
    measurer = search_measurer(opts)
    try:
        table, info = cell_table(opts, deploy, measurer)
        return search(config, space, data, opts["out"], table=table, measurer=measurer, measure_batch=opts["batch"],
                      run_info={"limit": opts["limit"], "backend": opts["backend_name"], **info}, echo=echo,
                      stop_after_epoch=opts["stop_after_epoch"], deploy=deploy)
    finally:
        measurer.close()


def cell_table(opts: dict[str, Any], space, measurer):
    """The given cell table (--latency-model), else one built on the backend, kept in the run directory."""
    from hwnas.latency.cells import CellLatencyTable

    if opts["model_path"] is not None:
        return CellLatencyTable.load(opts["model_path"], expect_space=space), {
            "latency_model_file": str(Path(opts["model_path"]).resolve())}
    path = Path(opts["out"]) / "cell_lut.json"
    if path.exists():
        table = CellLatencyTable.load(path, expect_space=space)
    else:
        echo(f"building a cell latency table for {space} on {opts['backend_name']} (cached in the measurement store)")
        table = CellLatencyTable.build(space, measurer, batch=opts["batch"])
        table.save(path)
    return table, {"latency_model_file": str(path.resolve())}
