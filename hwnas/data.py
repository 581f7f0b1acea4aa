"""Image-classification data for the architecture searches.

A TF-NAS-style bi-level search trains weights on a "search-train" split and
architecture parameters on a "search-val" split, and the final network is judged
on a held-out test split.  `load_dataset` builds all three from one of:

    digits        scikit-learn's bundled 8x8 handwritten digits (no download needed)
    digits-translated  the same digits, each placed at random on a 16x16 canvas: a harder
                  task made from them (see `_translate`)
    cifar10:DIR   the *binary* CIFAR-10 release (data_batch_*.bin, test_batch.bin)
    folder:DIR    one sub-directory of images per class

Images are kept as uint8 at their native resolution, so memory stays small;
`Dataset.batches` converts, resizes and normalises one batch at a time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import HwnasError

SPLITS = ("train", "val", "test")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
SPEC_FORMS = "'digits', 'digits-translated', 'cifar10:DIR' or 'folder:DIR'"
TRANSLATED_CANVAS = 16  # px; an 8x8 digit moves by up to 8 px each way

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B planes
CIFAR10_TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR10_TEST_FILE = "test_batch.bin"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(eq=False)  # eq=False: comparing tensor fields with == is not meaningful
class Dataset:
    name: str
    num_classes: int
    class_names: list[str]
    train_images: torch.Tensor  # uint8 [N,3,H,W], native resolution
    train_labels: torch.Tensor  # int64 [N]
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    # Per-channel statistics of the train split in 0..1 scale, shape [1,3,1,1].
    mean: torch.Tensor = field(init=False, repr=False)
    std: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.mean, self.std = _channel_stats(self.train_images)

    def size(self, split: str) -> int:
        return int(self._split(split)[1].shape[0])

    def batches(self, split: str, batch_size: int, resolution: int,
                shuffle: bool = False,
                generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float32 [B,3,R,R] normalised images, int64 [B] labels).

        The last batch may be smaller than batch_size.  Pass a seeded
        `generator` to make a shuffled order reproducible.
        """
        images, labels = self._split(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HwnasError(f"batch size must be a positive integer, got {batch_size!r}")
        if (isinstance(resolution, bool) or not isinstance(resolution, int)
                or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
            raise HwnasError(f"resolution must be an integer from {MIN_RESOLUTION} to "
                             f"{MAX_RESOLUTION}, got {resolution!r}")
        n = labels.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self._prepare(images[idx], resolution), labels[idx]

    def _prepare(self, images: torch.Tensor, resolution: int) -> torch.Tensor:
        x = images.float().div_(255.0)
        height, width = x.shape[-2:]
        if (height, width) != (resolution, resolution):
            # Antialiasing only matters when shrinking; it avoids aliasing artefacts.
            shrinking = resolution < max(height, width)
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=False, antialias=shrinking)
        return (x - self.mean) / self.std

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise HwnasError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        return getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")


def load_dataset(spec: str, seed: int = 0, test_fraction: float = 0.2,
                 val_fraction: float = 0.2, limit: int | None = None,
                 image_size: int = 64) -> Dataset:
    """Load a dataset and split it into train / val (search splits) / test.

    seed        fixes every random choice (splits and the `limit` subsample).
    test_fraction  share of all images held out for test (digits, folder);
                CIFAR-10 has its own fixed test batch, so it is ignored there.
    val_fraction   share of the remaining training part used as search-val.
    limit       cap on the training part (search-train + search-val together),
                drawn at random by seed before the train/val split; test is untouched.
    image_size  folder only: every image is resized to image_size x image_size at
                load time so they can be stacked.
    """
    if not isinstance(spec, str):
        raise HwnasError(f"dataset spec must be a string such as {SPEC_FORMS}, got {spec!r}")
    for label, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < value < 1.0:
            raise HwnasError(f"{label} must be between 0 and 1 (exclusive), got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise HwnasError(f"limit must be an integer of at least 2, got {limit!r}")
    rng = np.random.default_rng(seed)

    kind, _, arg = spec.partition(":")
    if spec in ("digits", "digits-translated"):
        name, class_names = spec, [str(d) for d in range(10)]
        images, labels = _load_digits()
        pool, test = _stratified_split(labels, test_fraction, rng)
        train_part = (images[pool], labels[pool])
        test_part = (images[test], labels[test])
    elif kind == "cifar10" and arg:
        directory = _cifar10_dir(Path(arg).expanduser())
        name, class_names = f"cifar10:{directory}", _cifar10_class_names(directory)
        train_part = _read_cifar10(directory, CIFAR10_TRAIN_FILES)
        test_part = _read_cifar10(directory, [CIFAR10_TEST_FILE])
    elif kind == "folder" and arg:
        root = Path(arg).expanduser()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise HwnasError(f"image_size must be a positive integer, got {image_size!r}")
        images, labels, class_names = _load_folder(root, image_size)
        name = f"folder:{root.resolve()}"
        pool, test = _stratified_split(labels, test_fraction, rng)
        train_part = (images[pool], labels[pool])
        test_part = (images[test], labels[test])
    else:
        raise HwnasError(f"unknown dataset spec {spec!r}: expected {SPEC_FORMS}")

    images, labels = train_part
    if limit is not None and limit < len(labels):
        keep = np.sort(rng.permutation(len(labels))[:limit])
        images, labels = images[keep], labels[keep]
    train, val = _stratified_split(labels, val_fraction, rng)

    splits = {"train": (images[train], labels[train]),
              "val": (images[val], labels[val]),
              "test": test_part}
    for split, (_, split_labels) in splits.items():
        if len(split_labels) == 0:
            raise HwnasError(f"dataset {name} has too few images to fill the {split} split")
    if spec == "digits-translated":
        splits = {split: (_translate(split_images, rng), split_labels)
                  for split, (split_images, split_labels) in splits.items()}
    tensors = {}
    for split, (split_images, split_labels) in splits.items():
        tensors[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(split_images))
        tensors[f"{split}_labels"] = torch.from_numpy(split_labels.astype(np.int64))
    return Dataset(name=name, num_classes=len(class_names),
                   class_names=list(class_names), **tensors)


# ----------------------------------------------------------------- splitting


def _stratified_split(labels: np.ndarray, fraction: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest, held) index arrays; each class gives ~fraction of its images to held.

    Done per class so small splits still see every class; indices come back
    sorted so the split depends only on the seed, not on iteration order.
    """
    rest, held = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_held = int(round(fraction * len(members)))
        held.append(members[:n_held])
        rest.append(members[n_held:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std in 0..1 scale, accumulated in chunks (CIFAR-10 is 150 MB as uint8)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    # A constant channel would divide by zero; leave it unscaled instead.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


# -------------------------------------------------------------------- digits


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (no download): 8x8 images of 0..16 and their labels. Read
    from the CSV scikit-learn ships, as its `load_digits` does: importing scikit-learn takes ~3 s,
    which every search process would pay. Its own loader where the file is not where it was."""

    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1]


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    pixels, target = _digits_arrays()
    # Pixel values are 0..16; stretch to 0..255 and copy to 3 channels so every
    # dataset looks like RGB to the networks.
    gray = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.repeat(gray[:, None, :, :], 3, axis=1)
    return images, target.astype(np.int64)


def _translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Translated digits, after the translated MNIST of Jaderberg et al. (2015): each 8x8 digit
    at a random place on a black TRANSLATED_CANVAS square. On plain digits every network of the
    space lands within about a point of 97%, too close to rank them; with the same training
    images, a network that has to find the digit first lands near 70% (README, "Accuracy at
    latency"). On 24-32 px canvases 10 epochs reach only 20-49%; clutter of other digits' pieces
    left it near chance."""
    n, channels, size, _ = images.shape
    canvas = np.zeros((n, channels, TRANSLATED_CANVAS, TRANSLATED_CANVAS), dtype=np.uint8)
    for i, (y, x) in enumerate(rng.integers(0, TRANSLATED_CANVAS - size + 1, size=(n, 2))):
        canvas[i, :, y:y + size, x:x + size] = images[i]
    return canvas


# ------------------------------------------------------------------- CIFAR-10


def _cifar10_dir(path: Path) -> Path:
    """Accept the batches directory itself or its parent; refuse the pickled release."""
    if not path.exists():
        raise HwnasError(f"CIFAR-10 directory not found: {path}")
    if not path.is_dir():
        raise HwnasError(f"CIFAR-10 path is a file, not a directory: {path} "
                         "(give the directory holding data_batch_1.bin ... test_batch.bin)")
    if (path / "cifar-10-batches-bin").is_dir():
        return path / "cifar-10-batches-bin"
    pickled = (path.name == "cifar-10-batches-py" or (path / "data_batch_1").is_file()
               or (path / "cifar-10-batches-py").is_dir())
    if pickled and not (path / CIFAR10_TRAIN_FILES[0]).is_file():
        raise HwnasError(f"{path} holds the Python (pickled) CIFAR-10 release; the binary "
                         "version (cifar-10-binary.tar.gz, cifar-10-batches-bin/) is required")
    return path


def _cifar10_class_names(directory: Path) -> list[str]:
    meta = directory / "batches.meta.txt"
    if meta.is_file():
        try:
            names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise HwnasError(f"cannot read CIFAR-10 class names from {meta}: {exc}") from None
        if len(names) >= 10:
            return names[:10]
    return list(CIFAR10_CLASSES)


def _read_cifar10(directory: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for filename in files:
        path = directory / filename
        if not path.is_file():
            raise HwnasError(f"CIFAR-10 file missing: {path}")
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise HwnasError(f"cannot read CIFAR-10 file {path}: {exc}") from None
        if raw.size == 0 or raw.size % CIFAR10_RECORD:
            raise HwnasError(f"CIFAR-10 file {path} is {raw.size} bytes, not a whole number "
                             f"of {CIFAR10_RECORD}-byte records (truncated or not CIFAR-10 binary?)")
        records = raw.reshape(-1, CIFAR10_RECORD)
        if records[:, 0].max() > 9:
            raise HwnasError(f"CIFAR-10 file {path} has a label above 9 (not CIFAR-10 binary?)")
        labels.append(records[:, 0].astype(np.int64))
        # Record layout is the R plane, then G, then B, each 32x32 row-major: i.e. CHW.
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------- image folder


def _load_folder(root: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image  # imported here so the other datasets do not need Pillow

    if not root.is_dir():
        raise HwnasError(f"image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise HwnasError(f"image folder {root} has no class sub-directories "
                         "(expected one sub-directory of images per class)")
    if len(class_dirs) < 2:
        raise HwnasError(f"image folder {root} has only one class ({class_dirs[0].name}); "
                         "classification needs at least 2")

    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise HwnasError(f"class directory {class_dir} contains no images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            try:
                with Image.open(path) as img:
                    # convert() forces a full decode, so truncated files fail here.
                    rgb = img.convert("RGB").resize((image_size, image_size),
                                                    Image.Resampling.BILINEAR)
            except Exception as exc:  # PIL raises many types for bad files; report them alike
                raise HwnasError(f"cannot read image {path}: {exc}") from None
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))  # HWC -> CHW
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), [p.name for p in class_dirs]
