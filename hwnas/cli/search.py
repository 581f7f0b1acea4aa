"""`hwnas search` (latency-constrained architecture search) and `hwnas train` (an architecture from scratch)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hwnas.backends import get_backend
from hwnas.cli.options import (
    backend_options,
    check_out,
    fail,
    is_new_space,
    load_new_arch,
    make_new_space,
    size_options,
)
from hwnas.cli.options import is_new_space as _is_new
from hwnas.errors import HwnasError
from hwnas.jsonutil import read_json, write_json
from hwnas.cli.methods.registry import get_method, method_names
from hwnas.spaces.elastic import elasticity_scale
from hwnas.spaces.mbconv import Space
from hwnas.validate import POSITIVE_MS, SEED, Float, Int, check_latency

# Options every method shares; each method adds its own (hwnas.cli.methods.<name>).
SHARED_OPTIONS = [
    click.option("--method", default="tfnas", show_default=True,
                 help=f"Search method: {', '.join(method_names())}. `hwnas search --method M --help` lists M's options."),
    click.option("--target", type=POSITIVE_MS, default=None,
                 help="Target latency in ms (snas: the target of --resource, in its units)."),
    click.option("--out", type=click.Path(path_type=Path), required=True,
                 help="Run directory: config, log, checkpoints, final architecture. An existing one resumes."),
    click.option("--repair", is_flag=True,
                 help="Resume a run whose log has a damaged line: keep the lines before it (the rest is redone)."),
    click.option("--data", default="digits", show_default=True, help="digits, digits-translated, cifar10:DIR or folder:DIR."),
    click.option("--limit", type=Int(2, 100_000_000), default=None, help="Use at most this many training images (search-train + search-val)."),
    backend_options,
    click.option("--lut", "--latency-model", "model_path", type=click.Path(path_type=Path), default=None,
                 help="Latency model file (lookup table, fitted model or cell table); default: a table built on --backend."),
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the data splits, weights and sampling."),
    click.option("--measure-every", type=Int(0, 10_000), default=4, show_default=True,
                 help="Measure the derived architecture every K epochs (0: only at the end)."),
    click.option("--final-sessions", type=Int(1, 100), default=3, show_default=True,
                 help="The final architecture's latency: the median of this many measurements."),
    click.option("--train-threads", type=Int(1, 1024), default=1, show_default=True,
                 help="Torch threads for training (--threads are the measurement's)."),
    click.option("--stop-after-epoch", type=Int(1, 10_000), default=None, hidden=True,
                 help="Stop after checkpointing this epoch, as an interruption would (for tests of resuming)."),
]


def _params(decorators) -> list[click.Parameter]:
    """The click parameters a list of option decorators declares, in the list's order."""
    def holder():
        pass

    for decorate in reversed(decorators):
        holder = decorate(holder)
    return list(reversed(holder.__click_params__))


def _method_in(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--method" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    return "tfnas"


class SearchCommand(click.Command):
    """`hwnas search`: the shared options plus those of the method named by --method, so that
    `--method M --help` shows M's options and an option of another method is refused by name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        name = _method_in(args)
        try:
            method = get_method(name)
        except HwnasError as e:
            fail(str(e))
        self.help = f"Search a latency-constrained architecture on real data.\n\n--method {method.name}: {method.help}"
        self.params = _params(SHARED_OPTIONS) + _params(method.options)
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            owners = [m for m in method_names() if m != name and e.option_name in _option_names(m)]
            if owners:
                fail(f"{e.option_name} is an option of --method {' or '.join(owners)}, not {name}")
            raise


def _option_names(method: str) -> set[str]:
    try:
        return {o for p in _params(get_method(method).options) for o in p.opts + p.secondary_opts}
    except HwnasError:
        return set()


@click.command(cls=SearchCommand)
def search(**opts):
    """Search a latency-constrained architecture on real data."""
    check_out(opts["out"], directory=True)
    method = get_method(opts["method"])
    if opts["target"] is None and method.name not in ("snas", "modnas"):  # modnas: constraints in its config
        fail(f"--method {method.name} needs --target (ms)")
    summary = method.run(opts)
    if summary is None:
        click.echo(f"stopped after epoch {opts['stop_after_epoch']}; run the same command again to resume", err=True)
        return
    # Never a silent NaN or negative latency on stdout: a model that gives one is refused here.
    for key in ("predicted_ms", "measured_ms"):
        if summary.get(key) is not None:
            try:
                check_latency(key, summary[key])
            except HwnasError as e:
                fail(f"the search's latency model gives no latency for its final architecture ({e}); "
                     f"check the latency model file")
    click.echo(json.dumps(summary, indent=2))
    if summary.get("target_ms") is None:  # snas with a non-latency cost: its value is in the summary
        if "resource" in summary:
            click.echo(f"{summary['resource']} {summary['resource_value']}; architecture in {Path(opts['out']) / 'final_arch.json'}", err=True)
        return
    target, m, lookup_err = summary["target_ms"], summary.get("measured_ms"), summary.get("lookup_error_pct")
    line = f"target {target:.4g} ms: predicted {summary['predicted_ms']:.4g} ms ({100 * (summary['predicted_ms'] / target - 1):+.2f}%)"
    if m is not None:
        line += f", measured {m:.4g} ms ({100 * (m / target - 1):+.2f}%)"
    if lookup_err is not None:
        line += f", lookup error {lookup_err:+.2f}%"
    click.echo(line + f"; architecture in {Path(opts['out']) / 'final_arch.json'}", err=True)


def _check_target_here(model, path) -> None:
    """A table or model measured on another target (CPU, runtime version, threads) would scale
    widths to the wrong latency here; refuse it as `surrogate eval` and `search` do."""
    from hwnas.surrogates.lut import check_config

    target = getattr(model, "target", None) or {"fingerprint": getattr(model, "fingerprint", None)}
    fp = target.get("fingerprint")
    if not isinstance(fp, dict):
        return  # fitted on a CSV: the target is the user's word
    if not isinstance(fp.get("backend"), str) or isinstance(fp.get("threads"), bool) or not isinstance(fp.get("threads"), int):
        fail(f"latency model {path} records no usable target (backend and threads)")
    backend = get_backend(fp["backend"], threads=fp["threads"], precision=fp.get("precision") or "fp32")
    check_config({"fingerprint": fp}, "latency model", path, None, None, None, backend.fingerprint(fp.get("batch") or 1))


@click.command()
@click.option("--arch", "arch_path", type=click.Path(path_type=Path), required=True,
              help="Architecture JSON (darts: or darts-v1 / darts-v2).")
@click.option("--data", default="digits", show_default=True, help="digits, digits-translated, cifar10:DIR or folder:DIR.")
@click.option("--limit", type=Int(2, 100_000_000), default=None, help="Use at most this many training images.")
@click.option("--space", "space_name", default="tfnas", show_default=True, help="Search space.")
@click.option("--width-mult", type=Float(0.1, 4), default=None, help="Width multiplier (default: the architecture's).")
@click.option("--resolution", type=Int(16, 2048), default=32, show_default=True, help="Training and test resolution.")
@click.option("--epochs", type=Int(1, 10_000), default=10, show_default=True, help="Training epochs from scratch.")
@click.option("--batch-size", type=Int(1, 65_536), default=64, show_default=True, help="Training batch size.")
@click.option("--lr", type=Float(0, 100, lo_open=True), default=0.05, show_default=True, help="SGD learning rate (cosine).")
@click.option("--weight-decay", type=Float(0, 1), default=4e-5, show_default=True, help="SGD weight decay.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the data splits and the weights.")
@click.option("--train-threads", "threads", type=Int(1, 1024), default=1, show_default=True, help="Torch threads for training.")
@size_options
@click.option("--target", type=POSITIVE_MS, default=None,
              help="First elasticity-scale the widths to this latency (ms) under --lut: same-latency comparisons.")
@click.option("--lut", "--latency-model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Lookup table or differentiable latency model for --target.")
@click.option("--width-align", type=Int(1, 64), default=4, show_default=True, help="With --target: scaled widths are multiples of this.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the result JSON here.")
def train(arch_path, data, limit, space_name, width_mult, resolution, epochs, batch_size, lr, weight_decay, seed,
          threads, target, model_path, width_align, out):
    """Train an architecture from scratch and report its test accuracy."""
    from hwnas.search.train import train_arch


    check_out(out, (".json",))
    doc = {} if _is_new(space_name) else read_json(arch_path, "architecture file")
    if width_mult is None:
        width_mult = doc.get("width_mult", 1.0) if isinstance(doc, dict) else 1.0
    if (target is None) != (model_path is None):
        fail("give --target and --lut together")
    if target is not None and not target > 0:
        fail(f"--target must be a positive number of ms, got {target}")
    from hwnas.data import load_dataset

    dataset = load_dataset(data, seed=seed, limit=limit)

    if is_new_space(space_name):  # darts: --channels/--cells; --arch may name a reference (darts-v2)
        if target is not None:
            fail("--target scales widths of the MBConv spaces; it does not apply to darts")
        space = make_new_space(space_name, resolution, dataset.num_classes, own={"resolution": resolution})
        arch = load_new_arch(space, arch_path)
        result = train_arch(space, arch, dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, seed=seed, threads=threads)
        return _report_training(result, arch_path, {}, out, dataset)
    space = Space(space_name, resolution, width_mult, dataset.num_classes)
    arch = space.validate(doc)
    scaled = {}
    if target is not None:
        from hwnas.surrogates.models import load_model

        model = load_model(model_path)
        _check_target_here(model, model_path)
        m = model.space
        if (m.name, m.width_mult, m.num_classes) != (space.name, space.width_mult, space.num_classes):
            fail(f"latency model {model_path} is for {m}, not space {space.name} at width {space.width_mult} "
                 f"with {space.num_classes} classes")
        r = elasticity_scale(model, arch.to_json(), target, align=width_align)
        check_latency(f"latency model {model_path}: predicted latency", r.latency_ms)
        arch = space.validate(r.arch.to_json())
        scaled = {"target_ms": target, "predicted_ms": r.latency_ms, "seed_predicted_ms": r.seed_latency_ms,
                  "width_bound_note": r.message, "latency_model_file": str(model_path)}
    result = train_arch(space, arch, dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, seed=seed, threads=threads)
    _report_training(result, arch_path, scaled, out, dataset)


def _report_training(result, arch_path, scaled, out, dataset) -> None:
    result["arch_file"] = str(arch_path)
    result.update(scaled)
    if out is not None:
        try:
            write_json(out, result)
        except OSError as e:
            fail(f"cannot write {out}: {e.strerror or e}")
    keys = ("arch_hash", "data", "epochs", "params_m", "val_acc", "test_acc", "predicted_ms")
    click.echo(json.dumps({k: result[k] for k in keys if k in result}))
    click.echo(f"test accuracy {result['test_acc']:.4f} ({dataset.size('test')} images)", err=True)


commands = [search, train]
