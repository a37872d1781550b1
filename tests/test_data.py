"""training.data on stand-in data: IDX files, a fake CIFAR-10, a fake CelebA and folders of odd images.

Downloads are never attempted: HF_HUB_OFFLINE is set, download=False where it matters, and the download path
is tested with a stand-in for torchvision's class. One test reads the real Fashion-MNIST when Debian's
package is installed.
"""

import gzip
import itertools
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from training import data
from training.data import (
    DatasetNotFoundError,
    batches,
    dataset_info,
    dequantize,
    load_dataset,
    read_idx,
    split_indices,
    to_float,
)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real cache, no Debian folders, no network: every test sees only what it builds."""
    monkeypatch.setenv("FEBM_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in list(data.SYSTEM_DIRS):
        monkeypatch.setitem(data.SYSTEM_DIRS, name, tmp_path / "no-system-dir" / name)


# --- stand-in data ------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """IDX as published: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    code = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def fake_idx_set(folder: Path, n_train=60, n_test=20, h=5, w=7, compress=True, seed=0):
    """Random images; label i marks the i-th image of its official split so tests can trace every image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = images
    return arrays


def solid(mode: str, size, value):
    return Image.new(mode, size, value)


# --- IDX ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip_is_exact(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 3, 5), dtype=np.uint8)
    ints = rng.integers(-(2**31), 2**31 - 1, (6,), dtype=np.int32)
    write_idx(tmp_path / "a", images, compress)
    write_idx(tmp_path / "b", ints, compress)
    header = (gzip.decompress if compress else bytes)((tmp_path / "a").read_bytes())[:4]
    assert struct.unpack(">I", header)[0] == 2051
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), ints)
    assert read_idx(tmp_path / "b").dtype == np.int32


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((2, 3, 3), np.uint8), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="need"):
        read_idx(tmp_path / "short")


def test_idx_splits_disjoint_deterministic_and_traceable(tmp_path):
    arrays = fake_idx_set(tmp_path / "fm")
    train = load_dataset("fashion-mnist", "train", tmp_path / "fm", val_size=12, download=False)
    val = load_dataset("fashion-mnist", "val", tmp_path / "fm", val_size=12, download=False)
    test = load_dataset("fashion-mnist", "test", tmp_path / "fm", val_size=12, download=False)
    assert (len(train), len(val), len(test)) == (48, 12, 20)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 5, 7)
    assert train.labels.dtype == torch.int64 and train.name == "fashion-mnist" and val.split == "val"
    ids_train, ids_val = set(train.labels.tolist()), set(val.labels.tolist())
    assert not ids_train & ids_val and ids_train | ids_val == set(range(60))
    for split, prefix in ((train, "train"), (val, "train"), (test, "t10k")):  # labels follow their images
        np.testing.assert_array_equal(split.images[:, 0].numpy(), arrays[prefix][split.labels.numpy()])
    again = load_dataset("fashion-mnist", "val", tmp_path / "fm", val_size=12, download=False)
    assert torch.equal(again.images, val.images) and torch.equal(again.labels, val.labels)


def test_default_validation_split_is_pinned():
    """5,000 held out of 60,000 by SPLIT_SEED; these numbers change only if the documented split does."""
    train, val = split_indices(60000, 5000)
    assert (len(train), len(val)) == (55000, 5000)
    assert not np.intersect1d(train, val).size and np.union1d(train, val).size == 60000
    assert val[:5].tolist() == [0, 15, 47, 51, 54] and int(val.sum()) == int(split_indices(60000, 5000)[1].sum())
    with pytest.raises(ValueError):
        split_indices(10, 10)


def test_idx_layouts_and_sources(tmp_path, monkeypatch):
    """Uncompressed files in torchvision's layout, MNIST, and the Debian folder when root is None."""
    fake_idx_set(tmp_path / "r" / "FashionMNIST" / "raw", compress=False)
    assert len(load_dataset("fashion-mnist", "test", tmp_path / "r", download=False)) == 20
    fake_idx_set(tmp_path / "m", n_train=30)
    assert len(load_dataset("mnist", "train", tmp_path / "m", val_size=5, download=False)) == 25
    fake_idx_set(tmp_path / "debian", n_train=40)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", tmp_path / "debian")
    assert len(load_dataset(split="val", val_size=4)) == 4


def test_image_size_resizes(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.full((3, 28, 28), 77, np.uint8))
    out = load_dataset("fashion-mnist", "test", folder, image_size=32, download=False)
    assert out.images.shape == (3, 1, 32, 32) and bool((out.images == 77).all())
    assert out.labels is None  # no labels file: images still load
    assert dataset_info("fashion-mnist", image_size=32) == {"channels": 1, "image_size": 32, "num_classes": 10}


# --- errors and downloads -----------------------------------------------------------------------------------
def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="fashion-mnist.*cifar10.*celeba.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="train, val, test"):
        load_dataset("fashion-mnist", "validation")


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist")
    assert str(tmp_path / "cache") in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFoundError, match="list_eval_partition.txt"):
        load_dataset("celeba", root=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'texts'}")


def test_download_goes_through_torchvision_only_when_allowed(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_fashion_mnist(root, train, download):  # what torchvision leaves behind: root/FashionMNIST/raw
        calls.append(root)
        fake_idx_set(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion_mnist)
    with pytest.raises(DatasetNotFoundError):  # HF_HUB_OFFLINE=1 and download=None: no attempt
        load_dataset("fashion-mnist")
    assert calls == []
    assert len(load_dataset("fashion-mnist", "test", download=True)) == 20
    assert calls == [str(tmp_path / "cache")]
    assert len(load_dataset("fashion-mnist", "test", download=True)) == 20 and len(calls) == 1  # cached now

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading into .* failed .*no network"):
        load_dataset("cifar10", download=True)


# --- CIFAR-10 and CelebA stand-ins --------------------------------------------------------------------------
def test_fake_cifar10_in_torchvision_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    rows = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        rows[name] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {"batch_label": name, "data": rows[name], "labels": rng.integers(0, 10, n).tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    test = load_dataset("cifar10", "test", tmp_path, download=False)
    assert test.images.shape == (3, 3, 32, 32) and test.labels.dtype == torch.int64
    expected = rows["test_batch"].reshape(3, 3, 32, 32)  # rows are R plane, G plane, B plane
    assert torch.equal(test.images, torch.from_numpy(expected))
    train = load_dataset("cifar10", "train", tmp_path, val_size=5, download=False)
    val = load_dataset("cifar10", "val", tmp_path, val_size=5, download=False)
    assert (len(train), len(val)) == (15, 5)
    assert dataset_info("cifar10") == {"channels": 3, "image_size": 32, "num_classes": 10}


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("never-created"),))


def test_cifar_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Evil(), "labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_dataset("cifar10", "test", tmp_path, download=False)
    assert not (tmp_path / "never-created").exists()


def test_fake_celeba_crops_and_uses_official_partition(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i, part in enumerate([0, 0, 0, 1, 2, 2]):
        im = solid("RGB", (178, 218), (200, 10, 10))
        im.paste((0, 0, 255), (0, 0, 178, 30))  # a band outside the central 140x140 crop
        im.save(folder / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {part}")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    sizes = [len(load_dataset("celeba", s, tmp_path, download=False)) for s in ("train", "val", "test")]
    assert sizes == [3, 1, 2]
    train = load_dataset("celeba", "train", tmp_path, download=False)
    assert train.images.shape == (3, 3, 32, 32) and train.labels is None
    assert (train.images[:, 2].int() < 40).all() and (train.images[:, 0].int() > 180).all()  # band cropped off
    with pytest.raises(ValueError, match="official validation split"):
        load_dataset("celeba", "val", tmp_path, val_size=10, download=False)


# --- folders ------------------------------------------------------------------------------------------------
def test_folder_split_80_10_10_disjoint_and_resized(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(20):  # every image a distinct grey, of a different size, some deep in subfolders
        where = root if i % 3 == 0 else root / "sub" if i % 3 == 1 else root / "sub" / "deeper"
        solid("RGB", (20 + i, 31 - i), (10 * i,) * 3).save(where / f"im{i}.png")
    (root / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    (root / "notes.txt").write_text("skip me")
    splits = {s: load_dataset(f"folder:{root}", s, image_size=12) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    greys = {s: {int(v) for v in d.images[:, 0, 0, 0]} for s, d in splits.items()}
    assert set().union(*greys.values()) == {10 * i for i in range(20)}
    assert sum(len(g) for g in greys.values()) == 20  # disjoint
    assert splits["train"].images.shape[1:] == (3, 12, 12) and splits["train"].labels is None
    again = load_dataset(f"folder:{root}", "val", image_size=12)
    assert torch.equal(again.images, splits["val"].images)
    assert len(load_dataset(f"folder:{root}", "val", val_size=5)) == 5


def test_folder_converts_modes(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    solid("RGBA", (10, 10), (0, 0, 0, 0)).save(root / "a_rgba.png")  # fully transparent: lands on white
    solid("RGB", (10, 10), (255, 0, 0)).convert("P").save(root / "b_palette.png")
    solid("L", (8, 12), 100).save(root / "c_gray.jpg", quality=100)
    Image.fromarray(np.full((9, 9), 65535, np.uint16)).save(root / "d_16bit.png")  # opens as I;16
    solid("1", (6, 6), 1).save(root / "e_bilevel.bmp")
    solid("RGB", (10, 14), (0, 255, 0)).save(root / "f_green.webp", lossless=True)
    assert dataset_info(f"folder:{root}")["channels"] == 3  # 3 grey files of 6: a tie goes to RGB
    every = {}
    for mode in ("L", "RGB", None):
        parts = [load_dataset(f"folder:{root}", s, image_size=4, mode=mode).images for s in ("train", "val", "test")]
        every[mode] = torch.cat(parts)
    assert every["L"].shape == (6, 1, 4, 4) and every["RGB"].shape == (6, 3, 4, 4)
    assert torch.equal(every[None], every["RGB"])
    rgb_values = {tuple(int(c) for c in im[:, 2, 2]) for im in every["RGB"]}
    assert rgb_values == {(255, 255, 255), (255, 0, 0), (100, 100, 100), (0, 255, 0)}  # RGBA->white, 16-bit->255
    grey_values = sorted(int(im[0, 2, 2]) for im in every["L"])
    assert grey_values == [76, 100, 150, 255, 255, 255]  # ITU-R 601 luma: red 76, green 150
    solid("L", (5, 5), 7).save(root / "g_gray.png")
    assert dataset_info(f"folder:{root}", image_size=16) == {"channels": 1, "image_size": 16, "num_classes": None}
    with pytest.raises(ValueError, match="mode"):
        load_dataset(f"folder:{root}", mode="CMYK")
    with pytest.raises(ValueError, match="folder"):
        load_dataset("fashion-mnist", mode="L")


def test_folder_skips_unreadable_files_with_a_warning(tmp_path):
    for i in range(3):
        solid("RGB", (5, 5), (i, i, i)).save(tmp_path / f"{i}.png")
    (tmp_path / "3_broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="unreadable.*3_broken.png"):
        out = load_dataset(f"folder:{tmp_path}", "train")  # 4 files: round(0.4) = 0 val, 0 test
    assert out.images.shape == (3, 3, 32, 32)


# --- float conversion and batches ---------------------------------------------------------------------------
def test_to_float_and_dequantize():
    x = torch.arange(256, dtype=torch.uint8).repeat(200).reshape(200, 1, 16, 16)
    f = to_float(x)
    assert f.dtype == torch.float32 and f.min() == 0 and f.max() == 1
    d = dequantize(x, torch.Generator().manual_seed(3))
    assert d.dtype == torch.float32 and d.min() >= 0 and d.max() < 1
    assert torch.equal((d * 256).floor().to(torch.uint8), x)  # each value stays in its own bin [k/256, (k+1)/256)
    assert torch.equal(d, dequantize(x, torch.Generator().manual_seed(3)))
    assert torch.equal(d, dequantize(x, 3)) and not torch.equal(d, dequantize(x, 4))
    with pytest.raises(TypeError):
        dequantize(f)
    with pytest.raises(TypeError):
        to_float(f)


def _stream_ids(stream, steps):
    return [stream.__next__()[:, 0, 0, 0].tolist() for _ in range(steps)]


def _flat(stream, steps):
    return list(itertools.chain.from_iterable(_stream_ids(stream, steps)))


def test_batches_cover_each_image_once_per_epoch():
    n, bs = 10, 3
    images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1)
    ids = _flat(batches(images, bs, torch.Generator().manual_seed(0)), 10)  # 30 ids = 3 epochs
    epochs = [ids[i:i + n] for i in range(0, 30, n)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1]  # reshuffled
    assert ids == _flat(batches(images, bs, torch.Generator().manual_seed(0)), 10)
    x, y = next(batches(images, 4, 0, labels=torch.arange(n) * 10))
    assert x.shape == (4, 1, 1, 1) and torch.equal(y, x[:, 0, 0, 0].long() * 10)


def test_batches_resume_exactly_from_state_dict():
    images = torch.arange(7, dtype=torch.uint8).reshape(7, 1, 1, 1)
    gen = torch.Generator().manual_seed(5)
    stream = batches(images, 3, gen)
    torch.rand(10, generator=gen)  # other users of the generator do not change the stream
    _stream_ids(stream, 4)
    state = stream.state_dict()
    assert set(state) >= {"epoch", "position", "permutation", "seed"}
    expected = _stream_ids(stream, 9)
    for keep_permutation in (True, False):
        fresh = batches(images, 3, torch.Generator().manual_seed(99))
        fresh.load_state_dict(state if keep_permutation else {k: v for k, v in state.items() if k != "permutation"})
        assert _stream_ids(fresh, 9) == expected
    with pytest.raises(ValueError):
        batches(images[:5], 3, 0).load_state_dict(state)


# --- the real thing, when Debian's package is installed -----------------------------------------------------
@pytest.mark.skipif(not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", DEBIAN_FMNIST)
    sizes = {}
    for split in ("train", "val", "test"):
        d = load_dataset("fashion-mnist", split, download=False)
        assert d.images.shape[1:] == (1, 28, 28) and d.images.dtype == torch.uint8
        assert d.labels.min() == 0 and d.labels.max() == 9
        sizes[split] = len(d)
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
