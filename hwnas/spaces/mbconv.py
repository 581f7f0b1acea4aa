"""The MBConv spaces (tfnas, proxyless; `hwnas.space`) in the space registry."""

from __future__ import annotations

from functools import partial

from hwnas.space import SPACE_DEFS, Space
from hwnas.spaces import register_space

for _name in SPACE_DEFS:
    register_space(_name)(partial(Space, _name))
