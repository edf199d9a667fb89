"""Packs: a packed split is the loaded split, item for item; folds, options and damage are handled."""

from __future__ import annotations

import json
import lzma
import zipfile

import numpy as np
import pytest

from fermetric.data import dataset_splits, load_dataset, parse_data_arg
from fermetric.data.base import ImageSet
from fermetric.data.packed import load_packed, read_pack_meta, write_packed
from fermetric.errors import ConfigError, DataError


def assert_same_set(packed: ImageSet, loaded: ImageSet) -> None:
    assert packed.images.dtype == np.uint8 and packed.images.shape == loaded.images.shape
    assert np.array_equal(packed.images, loaded.images)
    assert np.array_equal(packed.labels, loaded.labels) and packed.labels.dtype == np.int64
    assert packed.classes == loaded.classes
    assert packed.paths == loaded.paths
    assert packed.name == loaded.name
    for attr in ("groups", "soft_labels"):
        a, b = getattr(packed, attr), getattr(loaded, attr)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fixed_split_round_trip(fer_pack, fer_folder, split):
    assert_same_set(load_packed(fer_pack, split), load_dataset("fer2013", fer_folder, split))


def test_registered_dataset_serves_every_split_and_all(fer_pack, fer_folder):
    name, root = parse_data_arg(f"packed={fer_pack}")  # the CLI's --data packed=FILE
    assert dataset_splits(name, root) == ["train", "val", "test"]
    every = load_dataset(name, root, "all")
    parts = [load_dataset("fer2013", fer_folder, s) for s in ("train", "val", "test")]
    assert np.array_equal(every.images, np.concatenate([p.images for p in parts]))
    assert every.paths == [path for p in parts for path in p.paths]
    resized = load_dataset(name, root, "test", size=8)
    assert resized.images.shape[1:] == (8, 8) and len(resized) == len(parts[2])


def test_subject_folds_match_the_reader(ck_pack, ck_folder):
    meta = read_pack_meta(ck_pack)
    assert meta["kfold"] == {"num_folds": 3} and list(meta["splits"]) == ["all"]
    for fold in range(3):
        for split in ("train", "test"):
            packed = load_dataset("packed", ck_pack, split, fold=fold)
            loaded = load_dataset("ckplus48", ck_folder, split, fold=fold, num_folds=3)
            assert_same_set(packed, loaded)
            assert packed.info["fold"] == fold and packed.info["num_folds"] == 3
        train, test = (load_packed(ck_pack, s, fold=fold) for s in ("train", "test"))
        assert not set(train.groups) & set(test.groups)  # subject-independent
    with pytest.raises(ConfigError, match="needs a fold"):
        load_packed(ck_pack, "train")


def test_duplicates_are_stored_once_and_the_stream_is_plain_xz(tmp_path, rng):
    base = rng.integers(0, 256, size=(5, 6, 7), dtype=np.uint8)
    order = [0, 1, 0, 2, 3, 1, 4, 4]  # duplicates inside a split and across splits
    images = base[order]
    train = ImageSet(
        images=images[:5],
        labels=np.arange(5) % 2,
        classes=("neutral", "happy"),
        paths=[f"t{i}.png" for i in range(5)],
        name="toy",
        split="train",
    )
    test = ImageSet(
        images=images[5:],
        labels=np.array([1, 0, 1]),
        classes=("neutral", "happy"),
        paths=[f"s{i}.png" for i in range(3)],
        name="toy",
        split="test",
    )
    path = tmp_path / "toy.npz"
    meta = write_packed(path, {"train": train, "test": test}, "toy", preset=0)
    assert meta["codec"]["distinct_images"] == 5 and meta["codec"]["total_images"] == 8
    # Independent decoding: xz records its delta filter, so plain lzma.decompress undoes it.
    with np.load(path) as archive:
        raw = lzma.decompress(archive["images"].tobytes())
    first_seen = list(dict.fromkeys(im.tobytes() for im in images))
    assert raw == b"".join(first_seen)
    for split, original in (("train", train), ("test", test)):
        assert_same_set(load_packed(path, split), original)


def test_soft_labels_and_scalar_info_survive(tmp_path, rng):
    soft = rng.dirichlet(np.ones(3), size=4).astype(np.float32)
    imageset = ImageSet(
        images=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8),
        labels=soft.argmax(1),
        classes=("neutral", "happy", "sad"),
        paths=list("abcd"),
        soft_labels=soft,
        name="ferplus",
        split="train",
        info={"label_mode": "probability", "votes": np.ones((4, 10))},
    )
    path = tmp_path / "soft.npz"
    write_packed(path, {"train": imageset}, "ferplus", options={"label_mode": "probability"}, preset=0)
    loaded = load_packed(path, "train")
    assert_same_set(loaded, imageset)
    assert loaded.info["label_mode"] == "probability" and "votes" not in loaded.info
    assert load_packed(path, "train", label_mode="probability").labels.tolist() == imageset.labels.tolist()
    with pytest.raises(ConfigError, match="re-pack"):
        load_packed(path, "train", label_mode="majority")


def test_damaged_and_foreign_files_are_refused(tmp_path, fer_pack):
    with pytest.raises(DataError, match="no such pack"):
        load_packed(tmp_path / "missing.npz", "train")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a readable fermetric pack"):
        load_packed(junk, "train")
    # Flip bytes inside the xz stream: its CRC-64 must catch it.
    with np.load(fer_pack) as archive:
        members = {k: archive[k] for k in archive.files}
    blob = bytearray(members["images"].tobytes())
    blob[len(blob) // 2] ^= 0xFF
    members["images"] = np.frombuffer(bytes(blob), dtype=np.uint8)
    broken = tmp_path / "broken.npz"
    np.savez(broken, **members)
    with pytest.raises(DataError, match="corrupt|re-create"):
        load_packed(broken, "train")
    # A future format version is refused rather than misread.
    meta = json.loads(str(members["meta"]))
    meta["format"] = "fermetric-pack/99"
    members["meta"] = np.asarray(json.dumps(meta))
    members["images"] = np.load(fer_pack)["images"]
    future = tmp_path / "future.npz"
    np.savez(future, **members)
    with pytest.raises(DataError, match="format"):
        read_pack_meta(future)
    assert zipfile.is_zipfile(fer_pack)
    with pytest.raises(DataError, match="no split"):
        load_packed(fer_pack, "extra")


def test_mismatched_splits_are_not_packed(tmp_path, rng):
    a = ImageSet(
        images=rng.integers(0, 256, (2, 4, 4), dtype=np.uint8),
        labels=np.array([0, 1]),
        classes=("neutral", "happy"),
        paths=["a", "b"],
    )
    b = ImageSet(
        images=rng.integers(0, 256, (2, 5, 5), dtype=np.uint8),
        labels=np.array([0, 1]),
        classes=("neutral", "happy"),
        paths=["c", "d"],
    )
    with pytest.raises(DataError, match="size"):
        write_packed(tmp_path / "x.npz", {"train": a, "test": b}, "toy")
    assert not (tmp_path / "x.npz").exists() and not list(tmp_path.iterdir())
