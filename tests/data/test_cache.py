"""The decode cache: verified, atomic, invalidated by source changes, never loads a bad entry."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fermetric.data import DataWarning, cache
from fermetric.data.cache import ArrayCache, decode_files, decode_split, stack_images

PARTS = {"dataset": "toy", "split": "train", "size": None, "source": "abc"}


def build_counter(array):
    calls = []

    def build():
        calls.append(1)
        return array, {"note": "built"}

    return build, calls


def test_roundtrip_is_memory_mapped_and_read_only(tmp_path, rng):
    store = ArrayCache(tmp_path)
    array = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    build, calls = build_counter(array)
    first, extra = store.get_or_build(PARTS, "toy-train", build)
    second, extra2 = store.get_or_build(PARTS, "toy-train", build)
    assert calls == [1] and extra == extra2 == {"note": "built"}
    assert isinstance(second, np.memmap) and not second.flags.writeable
    np.testing.assert_array_equal(second, array)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("toy-train-") and {n[-4:] for n in names} == {".npy", "json"}
    # a different key part is a different entry
    store.get_or_build({**PARTS, "size": [32, 32]}, "toy-train", build)
    assert calls == [1, 1]


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_meta", "garble_meta"])
def test_damaged_entries_are_rebuilt_not_loaded(tmp_path, rng, damage):
    store = ArrayCache(tmp_path)
    array = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    build, calls = build_counter(array)
    store.get_or_build(PARTS, "toy-train", build)
    npy, meta = store.paths(PARTS, "toy-train")
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(npy.read_bytes())
        data[-7] ^= 0xFF  # same size, one pixel changed: only the checksum can tell
        npy.write_bytes(bytes(data))
    elif damage == "drop_meta":
        meta.unlink()  # a run that died between the two writes
    else:
        meta.write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, _ = store.get_or_build(PARTS, "toy-train", build)
    assert calls == [1, 1]
    np.testing.assert_array_equal(loaded, array)
    if damage != "drop_meta":
        assert any("corrupt cache entry" in str(w.message) for w in caught if w.category is DataWarning)
    assert store.load(PARTS, "toy-train") is not None  # the rebuilt entry verifies


def test_failed_write_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    store = ArrayCache(tmp_path)

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.np, "save", explode)
    with pytest.warns(DataWarning, match="cannot write the data cache"):
        out = store.save(PARTS, "toy-train", np.zeros((2, 2, 2), np.uint8), {})
    assert out.shape == (2, 2, 2)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor its temporary file


def test_unwritable_or_disabled_cache_still_decodes(tmp_path, monkeypatch, rng):
    (tmp_path / "img").mkdir()
    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / "img" / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FERMETRIC_CACHE", str(blocker / "cache"))
    with pytest.warns(DataWarning, match="cannot write the data cache"):
        images, failures, _ = decode_split("toy", "train", tmp_path, ["img/a.png"])
    assert images.shape == (1, 6, 6) and failures == []
    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    assert cache.default_cache_dir() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_split("toy", "train", tmp_path, ["img/a.png"])
    monkeypatch.delenv("FERMETRIC_CACHE")
    assert cache.default_cache_dir() == cache.Path.home() / ".cache" / "fermetric"


def test_decode_split_hits_and_invalidates(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    files = []
    for i in range(5):
        path = tmp_path / "d" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
        files.append(f"d/{i}.png")
    calls = []
    real = cache.decode_files
    monkeypatch.setattr(cache, "decode_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, _, _ = decode_split("toy", "train", tmp_path, files)
    decode_split("toy", "train", tmp_path, files)
    assert len(calls) == 1  # second call: from the cache
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / files[2])  # the source changes
    os.utime(tmp_path / files[2], ns=(5, 5))
    changed, _, _ = decode_split("toy", "train", tmp_path, files)
    assert len(calls) == 2 and changed[2].max() == 0
    decode_split("toy", "train", tmp_path, files, size=4)  # a pixel-changing option: new entry
    decode_split("toy", "test", tmp_path, files)  # another split name: new entry
    decode_split("toy", "train", tmp_path, files[:4])  # another file list: new entry
    assert len(calls) == 5


def test_decode_files_thread_pool_matches_sequential(tmp_path, rng):
    names = []
    for i in range(300):
        Image.fromarray(rng.integers(0, 256, (4 + i % 3, 5), dtype=np.uint8)).save(tmp_path / f"{i:03d}.png")
        names.append(f"{i:03d}.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    names.insert(7, "bad.jpg")
    threaded, failures = decode_files(tmp_path, names, workers=4)
    sequential, failures1 = decode_files(tmp_path, names, workers=1)
    assert failures == failures1 and [f[0] for f in failures] == ["bad.jpg"]
    assert threaded[7] is None
    for a, b, name in zip(threaded, sequential, names):
        if name != "bad.jpg":
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / name)))


def test_stack_images_uses_most_common_size():
    images = [np.zeros((4, 4), np.uint8), np.full((4, 4), 9, np.uint8), np.full((8, 6), 200, np.uint8)]
    stacked, resized = stack_images(images, None)
    assert stacked.shape == (3, 4, 4) and resized == 1 and stacked[2].min() >= 190
    same, resized = stack_images(images[:2], None)
    assert same.shape == (2, 4, 4) and resized == 0
    assert stack_images(images, (3, 5))[0].shape == (3, 3, 5)
