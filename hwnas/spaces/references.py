"""Reference architectures, rebuilt from their papers' tables, for reports and sanity checks.

TF-NAS-A ... D and TF-NAS-A-wose: seed 000, Tables 14-18 (ImageNet, tfnas space at width 1.0),
each layer as (kernel, mid channels, SE channels). MobileNetV2 in the proxyless space: k3 e6
everywhere, its depths 2/3/4/3/3/1 reached by skipping the remaining layers.
"""

from __future__ import annotations

from hwnas.spaces.mbconv import SKIP, Arch, Space

# per stage (3..8): per layer (kernel, mid, se)
TFNAS_TABLES: dict[str, list[list[tuple[int, int, int]]]] = {
    "TF-NAS-A": [
        [(3, 83, 32), (5, 128, 0)],
        [(3, 138, 48), (3, 297, 0), (5, 170, 80)],
        [(5, 248, 80), (3, 500, 0), (3, 424, 0), (3, 477, 0)],
        [(3, 504, 160), (3, 796, 0), (3, 723, 224), (3, 555, 224)],
        [(3, 813, 0), (3, 1370, 0), (3, 1138, 384), (3, 1359, 384)],
        [(5, 1203, 384)],
    ],
    "TF-NAS-B": [
        [(3, 64, 32), (3, 118, 48)],
        [(5, 96, 48), (3, 203, 80), (5, 161, 80)],
        [(3, 224, 0), (5, 361, 160), (3, 323, 160), (3, 320, 160)],
        [(3, 324, 160), (3, 581, 0), (3, 482, 224), (3, 667, 0)],
        [(3, 579, 0), (3, 738, 0), (3, 1028, 384), (3, 1161, 384)],
        [(5, 881, 384)],
    ],
    "TF-NAS-C": [
        [(5, 64, 32)],
        [(5, 48, 24), (5, 160, 80), (5, 160, 80)],
        [(5, 160, 80), (5, 320, 0), (5, 160, 0), (3, 320, 160)],
        [(3, 320, 0), (5, 448, 224), (3, 448, 0), (3, 448, 224)],
        [(3, 448, 224), (5, 768, 384), (5, 768, 384), (3, 384, 192)],
        [(5, 768, 384)],
    ],
    "TF-NAS-D": [
        [(3, 65, 32), (3, 63, 0)],
        [(3, 58, 24), (5, 106, 0), (5, 80, 0)],
        [(3, 192, 80), (3, 219, 0), (5, 320, 0), (3, 212, 80)],
        [(3, 165, 0), (5, 245, 112), (3, 292, 112), (3, 408, 112)],
        [(3, 538, 0)],
        [(5, 768, 192)],
    ],
    "TF-NAS-A-wose": [
        [(3, 74, 0), (3, 127, 0)],
        [(3, 154, 0), (5, 239, 0), (5, 234, 0)],
        [(5, 270, 0), (3, 595, 0), (5, 506, 0), (3, 572, 0)],
        [(3, 640, 0), (3, 895, 0), (5, 802, 0), (3, 895, 0)],
        [(3, 817, 0), (5, 1536, 0), (3, 1281, 0), (5, 1495, 0)],
        [(5, 1536, 0)],
    ],
}

MOBILENETV2_DEPTHS = (2, 3, 4, 3, 3, 1)


def _tfnas_arch(space: Space, rows: list[list[tuple[int, int, int]]]) -> Arch:
    stages = []
    for i, layers in enumerate(rows):
        out = []
        for j, (k, mid, se) in enumerate(layers):
            c_in = space.layer_c_in(i, j)
            # SE width tells e3 (C_in) from e6 (2 C_in); without SE, a mid above 4 C_in is e6.
            e = 6 if se == 2 * c_in or (se == 0 and mid > 4 * c_in) else 3
            out.append({"op": f"k{k}_e{e}" + ("_se" if se else ""), "mid": mid, "se": se})
        stages.append({"depth": len(out), "layers": out})
    return space.validate({"space": "tfnas", "width_mult": 1.0, "stages": stages})


def reference_archs(space: Space) -> dict[str, Arch]:
    """The reference architectures that exist in `space` (the tables are at width 1.0)."""
    if space.width_mult != 1.0:
        return {}
    if space.name == "tfnas":
        return {name: _tfnas_arch(space, rows) for name, rows in TFNAS_TABLES.items()}
    if space.name == "proxyless":
        stages = []
        for i, shape in enumerate(space.stages):
            keep = MOBILENETV2_DEPTHS[i]
            stages.append({"layers": ["k3_e6" if j < keep else SKIP for j in range(shape.max_depth)]})
        return {"MobileNetV2": space.validate({"space": "proxyless", "stages": stages})}
    return {}
