"""Small user models for the slot-space tests: importable as `toy_model:NAME` (this folder is on
sys.path under pytest, and put there for the subprocesses the tests start)."""

from torch import nn

from hwnas.spaces.slots import Slot


def toy(num_classes: int = 10):
    """A user's own network with two Slot placeholders."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        Slot(8, 8, 1, kind="mbconv"), Slot(8, 16, 2, kind="mbconv", candidates=["MB3E3", "MB5E3", "MB3E6"]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def plain(num_classes: int = 10):
    """Nothing a rule converts: 1x1 convolutions and a linear layer."""
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def not_a_module(num_classes: int = 10):
    return "a string"
