"""proxyless-elastic: the ProxylessNAS/UNAS layout (k in {3, 5, 7} x e in {3, 6}, ReLU6,
stages of 24/40/80/96/192/320 channels) with TF-NAS's searchable parts: each op's expansion
elastic within a range (e3: 2-4, e6: 4-8, as tfnas's) and each stage's depth chosen by
sink-connecting depth (1-4 layers) rather than by skip ops, so TF-NAS and UNAS both search it.

The whole space is this file and one line in `hwnas.spaces.SPACES`: the issue's proof that a
new MBConv space needs no other change."""

from __future__ import annotations

from hwnas.spaces.mbconv import OpDef, SpaceDef, StageDef, register_mbconv

OPS = tuple(OpDef(f"k{k}_e{e}", k, e, lo, hi, 0) for k in (3, 5, 7) for e, (lo, hi) in ((3, (2, 4)), (6, (4, 8))))

PROXYLESS_ELASTIC = register_mbconv(SpaceDef(
    name="proxyless-elastic",
    stem_channels=32,
    stem_act="relu6",
    fixed_out=16,
    fixed_se=0,
    fixed_act="relu6",
    stages=(
        StageDef(24, 2, 1, 4, "relu6"),
        StageDef(40, 2, 1, 4, "relu6"),
        StageDef(80, 2, 1, 4, "relu6"),
        StageDef(96, 1, 1, 4, "relu6"),
        StageDef(192, 2, 1, 4, "relu6"),
        StageDef(320, 1, 1, 1, "relu6"),
    ),
    ops=tuple(sorted(OPS, key=lambda o: o.name)),
    head_channels=1280,
    head_act="relu6",
    elastic=True,
    skip_op=False,
    description="ProxylessNAS layout with elastic widths and sink-connecting depth: 6 MBConv ops, 1-4 layers a stage",
))
