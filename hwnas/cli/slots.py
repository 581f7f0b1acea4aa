"""`hwnas info --model M`: the slots found in a model (name, kind, shapes, candidates). It is
`hwnas info` with one more option; without --model the command is the space info it was."""

from __future__ import annotations

import json

import click

from hwnas.cli.main import info


def slot_info(model: str, resolution: int, num_classes: int, as_json: bool) -> None:
    from hwnas.spaces.slots import SlotSpace

    space = SlotSpace(model=model, resolution=resolution, num_classes=num_classes)
    default = space.default_arch()
    costs = space.costs(default)
    doc = {"space": space.config, "slots": [s.to_json() for s in space.slots], "default_arch": default.to_json(),
           "default_costs": costs, "architectures": int(__import__("math").prod(len(s.candidates) for s in space.slots))}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{space}: {doc['architectures']:.3g} architectures; the original network "
               f"{costs['params'] / 1e6:.3f} M parameters, {costs['macs'] / 1e6:.1f} M MACs")
    for s in space.slots:
        c, h, w = s.in_shape
        co, ho, wo = s.out_shape
        click.echo(f"  {s.name:<16} {s.kind:<7} {c}x{h}x{w} -> {co}x{ho}x{wo}  {' '.join(s.candidates)}")


def _with_model(base: click.Command) -> click.Command:
    model = click.Option(["--model"], default=None,
                         help="List the slots of this model instead: torchvision:NAME or package.module:factory "
                              "(with --resolution and --classes).")

    def callback(model, **kwargs):
        if model is None:
            return base.callback(**kwargs)
        return slot_info(model, kwargs["resolution"], kwargs["num_classes"], kwargs["as_json"])

    return click.Command(base.name, params=[*base.params, model], callback=callback, help=base.help,
                         short_help=base.short_help)


def _commands() -> list[click.Command]:
    return [_with_model(info)]


commands = _commands()
