"""The readers and the audit on the real datasets in ../shared/data (skipped when absent).

Each dataset is decoded once per session into the session cache (see conftest.py).
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from fermetric.data import DATASETS, load_dataset
from fermetric.data.audit import audit
from fermetric.data.ferplus import vote_labels
from fermetric.data.imageio import decode_image_bytes

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def fer2013(shared_data_root):
    root = shared_data_root / "fer2013"
    return root, {split: load_dataset("fer2013", root, split) for split in ("train", "val", "test")}


def test_fer2013_folder_counts(fer2013):
    _, splits = fer2013
    assert {s: len(x) for s, x in splits.items()} == {"train": 28709, "val": 3589, "test": 3589}
    for imageset in splits.values():
        assert imageset.classes == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
        assert imageset.images.shape[1:] == (48, 48)
    assert splits["test"].class_counts() == {
        "neutral": 626,
        "happy": 879,
        "sad": 594,
        "surprise": 416,
        "fear": 528,
        "disgust": 55,
        "angry": 491,
    }


def test_fer2013_audit_matches_the_shared_lists(fer2013):
    root, _ = fer2013
    report = audit("fer2013", root)
    dup = report["exact_duplicates"]
    assert (dup["groups"], dup["across_splits"], dup["conflicting_labels"]) == (1516, 557, 57)
    assert dup["split_pairs"]["test/train"] == 278 and dup["split_pairs"]["train/val"] == 270
    # group for group, the same files as the byte-identical list shipped with the data
    listed = defaultdict(set)
    with open(root / "exact_duplicates.csv", newline="") as f:
        for row in csv.DictReader(f):
            listed[row["group_md5"]].add(row["path"])
    assert {frozenset(g) for g in listed.values()} == {frozenset(m["path"] for m in g) for g in dup["members"]}
    with open(root / "near_blank.csv", newline="") as f:
        blank = {(r["path"], int(r["min"]), int(r["max"])) for r in csv.DictReader(f)}
    assert report["near_blank"]["count"] == 13
    assert {(i["path"], i["min"], i["max"]) for i in report["near_blank"]["items"]} == blank
    assert report["unreadable"]["count"] == 0


def test_ckplus48_subjects_and_folds(shared_data_root):
    root = shared_data_root / "ckplus48"
    every = load_dataset("ckplus48", root, "all")
    assert len(every) == 981 and len(np.unique(every.groups)) == 118
    assert len(set(zip(every.groups.tolist(), every.info["sequences"].tolist()))) == 327
    assert every.classes == ("happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
    assert every.class_counts() == {
        "happy": 207,
        "sad": 84,
        "surprise": 249,
        "fear": 75,
        "disgust": 177,
        "angry": 135,
        "contempt": 54,
    }
    tested = []
    for fold in range(10):
        test = load_dataset("ckplus48", root, "test", fold=fold)
        train = load_dataset("ckplus48", root, "train", fold=fold)
        assert not set(test.groups) & set(train.groups) and len(test) + len(train) == 981
        assert 80 <= len(test) <= 115  # balanced by image count
        tested += test.paths
    assert sorted(tested) == sorted(every.paths)


def test_ferplus_counts(shared_data_root):
    root = shared_data_root / "ferplus"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the known duplicate names (tested on fixtures)
        test = load_dataset("ferplus", root, "test")
        # the FER+ reporting protocol: majority labels of FER2013Test, unknown/NF/no-majority dropped
        assert len(test) == 3152
        assert test.class_counts() == {
            "neutral": 1089,
            "happy": 893,
            "sad": 384,
            "surprise": 396,
            "fear": 83,
            "disgust": 18,
            "angry": 273,
            "contempt": 16,
        }
        reader = DATASETS.get("ferplus")()
        listings = {s: reader.list_split(root, s, {"label_mode": "majority"}) for s in ("train", "val", "test")}
    # label logic only (no need to decode 28k images here): rows with a unique name and an existing
    # file, then the images each label mode keeps
    assert {s: len(x.relpaths) for s, x in listings.items()} == {"train": 28558, "val": 3579, "test": 3572}
    assert {s: len(x.select) for s, x in listings.items()} == {"train": 25057, "val": 3199, "test": 3152}
    kept = {
        (s, mode): int((vote_labels(x.row_info["votes"], mode)[0] >= 0).sum())
        for s, x in listings.items()
        for mode in ("plurality", "probability")
    }
    assert [kept[s, "plurality"] for s in ("train", "val", "test")] == [26937, 3396, 3375]
    assert [kept[s, "probability"] for s in ("train", "val", "test")] == [28386, 3553, 3545]


def test_opencv_fast_path_equals_pil_on_real_files(fer2013, shared_data_root):
    root, splits = fer2013
    paths = [root / p for p in splits["val"].paths[::40]]
    paths += sorted((shared_data_root / "ferplus" / "FER2013Test").glob("*.png"))[:60]
    paths += sorted((shared_data_root / "ckplus48" / "contempt").glob("*.png"))[:30]
    for path in paths:
        data = path.read_bytes()
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        np.testing.assert_array_equal(decode_image_bytes(data), expected)
