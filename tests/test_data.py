"""Tests for hwnas.data: digits, a generated CIFAR-10 binary directory, an image folder."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hwnas.data import CIFAR10_CLASSES, load_dataset
from hwnas.errors import HwnasError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _fingerprints(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


# -------------------------------------------------------------------- digits


def test_digits_counts_and_splits(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10 and digits.class_names == [str(d) for d in range(10)]
    sizes = {s: digits.size(s) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["test"] - 0.2 * 1797) <= 10
    assert abs(sizes["val"] - 0.2 * (sizes["train"] + sizes["val"])) <= 10
    for split in ("train", "val", "test"):
        images = getattr(digits, f"{split}_images")
        labels = getattr(digits, f"{split}_labels")
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 8, 8)
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
        assert set(labels.tolist()) == set(range(10))  # stratified: every class everywhere
    # Pixel values really span 0..255 and the three channels are copies.
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0
    assert torch.equal(digits.train_images[:, 0], digits.train_images[:, 2])


def test_digits_splits_are_disjoint():
    # Indices are not exposed, so check disjointness on the raw sklearn rows.
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    ds = load_dataset("digits", seed=3)
    row_ids = {}
    for i, img in enumerate(raw):
        row_ids.setdefault(img.tobytes(), []).append(i)
    used = []
    for split in ("train", "val", "test"):
        for img in getattr(ds, f"{split}_images")[:, 0].numpy():
            used.append(row_ids[img.tobytes()].pop())  # each raw row may be used only once
    assert sorted(used) == list(range(1797))


def test_translated_digits_place_each_digit_of_the_split_somewhere_on_a_canvas(digits):
    translated = load_dataset("digits-translated", seed=0)
    assert translated.name == "digits-translated" and translated.num_classes == 10
    places = set()
    for split in ("train", "val", "test"):
        plain = getattr(digits, f"{split}_images").numpy()
        canvas = getattr(translated, f"{split}_images").numpy()
        assert canvas.shape == (plain.shape[0], 3, 16, 16) and canvas.dtype == np.uint8
        assert torch.equal(getattr(translated, f"{split}_labels"), getattr(digits, f"{split}_labels"))
        for image, digit in zip(canvas, plain):
            # The digit is there, whole, and nothing else is: the canvas outside it is black.
            windows = np.lib.stride_tricks.sliding_window_view(image, (3, 8, 8))[0]
            hits = np.argwhere((windows == digit).all(axis=(2, 3, 4)))
            assert len(hits) > 0 and image.sum() == digit.sum()
            places.add(tuple(hits[0]))
    assert len(places) > 60  # most of the 81 places are used
    assert torch.equal(load_dataset("digits-translated", seed=0).test_images, translated.test_images)


def test_digits_batches_shapes_and_normalisation(digits):
    batches = list(digits.batches("train", batch_size=64, resolution=32))
    assert sum(x.shape[0] for x, _ in batches) == digits.size("train")
    x, y = batches[0]
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert torch.equal(y, digits.train_labels[:64])
    everything = torch.cat([x for x, _ in digits.batches("train", 256, 8)])
    assert everything.mean(dim=(0, 2, 3)).abs().max() < 1e-3  # native res: exactly normalised
    assert (everything.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    upsampled = torch.cat([x for x, _ in digits.batches("train", 256, 32)])
    assert upsampled.mean().abs() < 0.2  # resizing roughly preserves the statistics


def test_batches_shuffle_is_reproducible_with_generator(digits):
    def labels(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in digits.batches("val", 50, 16, shuffle=True, generator=gen)])

    assert torch.equal(labels(1), labels(1))
    assert not torch.equal(labels(1), labels(2))
    assert sorted(labels(1).tolist()) == sorted(digits.val_labels.tolist())


def test_digits_deterministic_by_seed(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(again, f"{split}_images"), getattr(digits, f"{split}_images"))
        assert torch.equal(getattr(again, f"{split}_labels"), getattr(digits, f"{split}_labels"))
    assert _fingerprints(other.test_images) != _fingerprints(digits.test_images)
    assert _fingerprints(other.val_images) != _fingerprints(digits.val_images)


def test_limit_caps_training_part():
    ds = load_dataset("digits", seed=0, limit=100)
    assert ds.size("train") + ds.size("val") == 100
    assert ds.size("test") == load_dataset("digits", seed=0).size("test")
    again = load_dataset("digits", seed=0, limit=100)
    assert torch.equal(ds.train_images, again.train_images)


@pytest.mark.parametrize("resolution", [7, 1025, 16.0])
def test_bad_resolution(digits, resolution):
    with pytest.raises(HwnasError, match="resolution"):
        next(digits.batches("train", 8, resolution))


def test_bad_split_and_batch_size(digits):
    with pytest.raises(HwnasError, match="split"):
        next(digits.batches("validation", 8, 32))
    with pytest.raises(HwnasError, match="split"):
        digits.size("dev")
    with pytest.raises(HwnasError, match="batch size"):
        next(digits.batches("train", 0, 32))


@pytest.mark.parametrize("kwargs", [{"test_fraction": 0.0}, {"val_fraction": 1.0}, {"limit": 0}])
def test_bad_load_arguments(kwargs):
    with pytest.raises(HwnasError):
        load_dataset("digits", **kwargs)


@pytest.mark.parametrize("spec", ["mnist", "cifar100:/tmp", "cifar10:", "folder:", "", "Digits"])
def test_unknown_spec(spec):
    with pytest.raises(HwnasError, match="digits.*cifar10:DIR.*folder:DIR"):
        load_dataset(spec)


# ------------------------------------------------------------------- CIFAR-10


def _write_cifar(directory: Path, per_file: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the six binary batch files in the exact CIFAR-10 record format."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, size=(per_file, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, size=per_file)
        records.tofile(directory / name)
        written[name] = records
    return written


def test_cifar10_loads_labels_and_pixel_layout(tmp_path):
    directory = tmp_path / "cifar-10-batches-bin"
    written = _write_cifar(directory)
    # Plant a known pixel: test record 7, green channel, row 5, column 9.
    test_records = written["test_batch.bin"]
    test_records[7, 1 + 1 * 1024 + 5 * 32 + 9] = 123
    test_records.tofile(directory / "test_batch.bin")

    ds = load_dataset(f"cifar10:{directory}", seed=0)
    assert ds.num_classes == 10 and ds.class_names == CIFAR10_CLASSES
    assert ds.size("train") + ds.size("val") == 250 and ds.size("test") == 50
    assert abs(ds.size("val") - 50) <= 10
    assert torch.equal(ds.test_labels, torch.from_numpy(test_records[:, 0].astype(np.int64)))
    assert ds.test_images.shape == (50, 3, 32, 32) and ds.test_images.dtype == torch.uint8
    assert ds.test_images[7, 1, 5, 9] == 123
    expected = test_records[:, 1:].reshape(50, 3, 32, 32)
    assert np.array_equal(ds.test_images.numpy(), expected)

    # Every training record lands in train or val exactly once, with its own label.
    train_records = np.concatenate([written[f"data_batch_{i}.bin"] for i in range(1, 6)])
    by_pixels = {r[1:].tobytes(): int(r[0]) for r in train_records}
    seen = []
    for split in ("train", "val"):
        images = getattr(ds, f"{split}_images").numpy()
        labels = getattr(ds, f"{split}_labels").tolist()
        for img, label in zip(images, labels):
            assert by_pixels[img.tobytes()] == label
            seen.append(img.tobytes())
    assert sorted(seen) == sorted(by_pixels)

    x, y = next(ds.batches("test", 16, 24))
    assert x.shape == (16, 3, 24, 24) and y.dtype == torch.int64


def test_cifar10_parent_dir_and_meta_names(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    names = [f"class{i}" for i in range(10)]
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.class_names == names
    assert ds.name.endswith("cifar-10-batches-bin")


def test_cifar10_truncated_file(tmp_path):
    _write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(HwnasError, match="data_batch_3.bin"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_missing_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(HwnasError, match="missing.*test_batch.bin"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_missing_dir_and_pickled_release(tmp_path):
    with pytest.raises(HwnasError, match="not found"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
    pickled = tmp_path / "cifar-10-batches-py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"\x80\x04junk")
    with pytest.raises(HwnasError, match="binary"):
        load_dataset(f"cifar10:{pickled}")
    with pytest.raises(HwnasError, match="binary"):
        load_dataset(f"cifar10:{tmp_path}")


# --------------------------------------------------------------- image folder


def _write_folder(root: Path, per_class: int = 10) -> None:
    rng = np.random.default_rng(0)
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}
    for i, (cls, colour) in enumerate(colours.items()):
        (root / cls).mkdir(parents=True)
        for j in range(per_class):
            size = (20 + 7 * j, 30 + 3 * i)  # mixed, non-square sizes
            pixels = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
            pixels = (pixels * 0.8 + rng.integers(0, 50, pixels.shape)).astype(np.uint8)
            suffix = ".PNG" if j % 2 else ".png"
            Image.fromarray(pixels).save(root / cls / f"{j}{suffix}", format="PNG")
    (root / "dog" / "notes.txt").write_text("not an image; ignored")


def test_folder_loads(tmp_path):
    _write_folder(tmp_path)
    ds = load_dataset(f"folder:{tmp_path}", seed=0)
    assert ds.class_names == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert ds.size("train") + ds.size("val") + ds.size("test") == 30
    assert ds.size("test") == 6 and ds.size("val") == 6  # 2 of 10 per class, then 2 of 8
    assert ds.train_images.shape[1:] == (3, 64, 64)
    # Colour identifies the class: cat images are red-dominant, emu blue-dominant.
    for images, labels in [(ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)]:
        dominant = images.float().mean(dim=(2, 3)).argmax(dim=1)
        assert torch.equal(dominant, labels)
    x, y = next(ds.batches("train", 4, 32, shuffle=True))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    small = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert small.train_images.shape[1:] == (3, 16, 16)


def test_folder_corrupt_image(tmp_path):
    _write_folder(tmp_path)
    bad = tmp_path / "emu" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(HwnasError, match="broken.jpg"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_truncated_image(tmp_path):
    _write_folder(tmp_path)
    path = tmp_path / "cat" / "3.PNG"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(HwnasError, match="3.PNG"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_empty_and_missing(tmp_path):
    with pytest.raises(HwnasError, match="no class sub-directories"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(HwnasError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_folder_class_without_images(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "readme.txt").write_text("no images here")
    with pytest.raises(HwnasError, match="fox"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_too_few_images(tmp_path):
    _write_folder(tmp_path, per_class=1)
    with pytest.raises(HwnasError, match="too few images"):
        load_dataset(f"folder:{tmp_path}")
