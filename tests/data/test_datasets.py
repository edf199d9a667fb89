"""Dataset readers on small fixtures generated in each dataset's exact on-disk layout."""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from fermetric import vocab
from fermetric.data import DATASETS, DataWarning, dataset_splits, load_dataset, parse_data_arg, read_image
from fermetric.data.fer2013 import FER2013_CLASSES
from fermetric.data.synthetic import make_synthetic_faces
from fermetric.errors import ConfigError, DataError

READERS = ("ckplus48", "fer2013", "ferplus", "folder", "jaffe", "rafdb")
FER_FOLDER_OF = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprise",
    "neutral": "neutral",
}


def data_warnings(caught) -> str:
    return " | ".join(str(w.message) for w in caught if issubclass(w.category, DataWarning))


def save_grey(path, value=None, size=(48, 48), rng=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(size, value, np.uint8) if value is not None else rng.integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


# -- registry and arguments -----------------------------------------------------------------------


def test_registry_and_parse_data_arg(tmp_path):
    assert set(READERS) <= set(DATASETS.names())
    assert parse_data_arg("fer2013=../data/fer 2013") == ("fer2013", __import__("pathlib").Path("../data/fer 2013"))
    for bad in ("fer2013", "=x", "fer2013="):
        with pytest.raises(ConfigError, match="DATASET=ROOT"):
            parse_data_arg(bad)
    with pytest.raises(ConfigError, match="unknown dataset 'affectnet'"):
        parse_data_arg("affectnet=/x")


# -- fer2013: image folders -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_root(tmp_path_factory):
    return make_synthetic_faces(tmp_path_factory.mktemp("fer"), "fer2013", n_per_class=4, seed=3)


def test_fer2013_folders(fer_root):
    assert dataset_splits("fer2013", fer_root) == ["train", "val", "test"]
    train = load_dataset("fer2013", fer_root, "train")
    assert train.classes == FER2013_CLASSES == vocab.ordered(FER_FOLDER_OF)
    assert len(train) == 28 and train.images.shape == (28, 48, 48) and train.image_size == (48, 48)
    assert train.class_counts() == {c: 4 for c in FER2013_CLASSES}
    for path, label in zip(train.paths, train.labels):  # the folder name is the label
        assert vocab.canonical(path.split("/")[1]) == train.classes[label]
    assert train.paths == sorted(train.paths) and train.paths[0].startswith("train/")
    np.testing.assert_array_equal(train.images[5], read_image(fer_root / train.paths[5]))
    assert len(load_dataset("fer2013", fer_root, "val")) == 14
    every = load_dataset("fer2013", fer_root, "all")
    assert len(every) == 28 + 14 + 14 and set(every.info["split_of_item"]) == {"train", "val", "test"}


def test_fer2013_cached_load_is_identical_and_memory_mapped(fer_root):
    first = load_dataset("fer2013", fer_root, "test")
    again = load_dataset("fer2013", fer_root, "test")
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    np.testing.assert_array_equal(first.images, again.images)
    nocache = load_dataset("fer2013", fer_root, "test", cache=False)
    np.testing.assert_array_equal(nocache.images, again.images)


def test_fer2013_unknown_class_folder(tmp_path, rng):
    save_grey(tmp_path / "train" / "happy" / "a.png", rng=rng)
    save_grey(tmp_path / "train" / "contempt" / "b.png", rng=rng)
    save_grey(tmp_path / "train" / "smirk" / "c.png", rng=rng)
    with pytest.raises(DataError, match=r"unknown class folder\(s\) contempt, smirk for fer2013") as err:
        load_dataset("fer2013", tmp_path, "train")
    assert "\n" not in str(err.value)


def test_bad_image_names_the_file_or_is_skipped(tmp_path, rng):
    for i in range(3):
        save_grey(tmp_path / "train" / "happy" / f"ok{i}.png", rng=rng)
    (tmp_path / "train" / "sad").mkdir()
    (tmp_path / "train" / "sad" / "broken.jpg").write_text("not really a jpeg")
    (tmp_path / "train" / "sad" / "notes.txt").write_text("ignored: not an image name")
    (tmp_path / "train" / "sad" / ".DS_Store").write_bytes(b"\0\1")
    with pytest.raises(DataError) as err:
        load_dataset("fer2013", tmp_path, "train")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "train" / "sad" / "broken.jpg")) and "skip_bad=True" in message
    assert "\n" not in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imageset = load_dataset("fer2013", tmp_path, "train", skip_bad=True)
    assert len(imageset) == 3 and {imageset.classes[i] for i in imageset.labels} == {"happy"}
    assert imageset.info["skipped"][0][0] == "train/sad/broken.jpg"
    assert "broken.jpg" in data_warnings(caught)


def test_empty_class_folder_warns_and_empty_split_fails(tmp_path, rng):
    save_grey(tmp_path / "train" / "happy" / "a.png", rng=rng)
    (tmp_path / "train" / "fear").mkdir()
    (tmp_path / "val" / "happy").mkdir(parents=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_dataset("fer2013", tmp_path, "train")) == 1
    assert "empty class folder(s) in fer2013: fear" in data_warnings(caught)
    with pytest.raises(DataError, match="split 'val' of fer2013 has no images"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_dataset("fer2013", tmp_path, "val")


def test_wrong_root_gives_the_layout_hint(tmp_path):
    with pytest.raises(DataError, match="expected train/ val/ test/ with class folders.*or fer2013.csv"):
        load_dataset("fer2013", tmp_path, "train")
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset("fer2013", tmp_path / "nope", "train")
    for name in READERS:
        with pytest.raises(DataError) as err:
            load_dataset(name, tmp_path, "train")
        assert str(tmp_path) in str(err.value) and "expected" in str(err.value) and "\n" not in str(err.value)


def test_options_are_checked(fer_root):
    assert len(load_dataset("fer2013", fer_root, "val", fold=None, label_mode=None)) == 14  # None = not given
    with pytest.raises(ConfigError, match="dataset 'fer2013' has no option fold"):
        load_dataset("fer2013", fer_root, "val", fold=3)


def test_size_option_and_mixed_sizes(tmp_path, rng):
    save_grey(tmp_path / "happy" / "a.png", size=(48, 48), rng=rng)
    save_grey(tmp_path / "happy" / "b.png", size=(48, 48), rng=rng)
    odd = save_grey(tmp_path / "sad" / "c.png", size=(96, 64), rng=rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed = load_dataset("folder", tmp_path, "all")
    assert mixed.images.shape == (3, 48, 48)  # the most common size
    assert "resized to 48x48" in data_warnings(caught)
    expected = np.asarray(Image.fromarray(odd).resize((48, 48), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(mixed.images[mixed.paths.index("sad/c.png")], expected)
    assert load_dataset("folder", tmp_path, "all", size=32).images.shape == (3, 32, 32)


# -- fer2013: the original csv -------------------------------------------------------------------


def write_fer_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(rows)


def test_fer2013_csv_labels_pixels_and_splits(tmp_path, rng):
    faces = [rng.integers(0, 256, (48, 48)) for _ in range(8)]
    usage = ["Training", "Training", "Training", "PublicTest", "PrivateTest", "PrivateTest", "Training", "PublicTest"]
    emotions = [0, 1, 2, 3, 4, 5, 6, 3]
    write_fer_csv(
        tmp_path / "fer2013.csv", [[e, " ".join(map(str, f.reshape(-1))), u] for e, f, u in zip(emotions, faces, usage)]
    )
    for root in (tmp_path, tmp_path / "fer2013.csv"):
        assert dataset_splits("fer2013", root) == ["train", "val", "test"]
        train = load_dataset("fer2013", root, "train")
        assert train.paths == ["csv:0", "csv:1", "csv:2", "csv:6"]
        # csv ids 0=Angry 1=Disgust 2=Fear 6=Neutral, as canonical names in vocabulary order
        assert [train.classes[i] for i in train.labels] == ["angry", "disgust", "fear", "neutral"]
        assert train.classes == FER2013_CLASSES
        for row, image in zip([0, 1, 2, 6], train.images):
            np.testing.assert_array_equal(image, faces[row])
        test = load_dataset("fer2013", root, "test")
        assert [test.classes[i] for i in test.labels] == ["sad", "surprise"]


def test_fer2013_csv_bad_rows(tmp_path):
    good = " ".join(["7"] * 2304)
    write_fer_csv(
        tmp_path / "fer2013.csv",
        [
            [3, good, "Training"],
            [3, " ".join(["7"] * 2303), "Training"],  # wrong pixel count
            [9, good, "Training"],  # no emotion 9
            [3, good.replace("7", "300", 1), "Training"],  # pixel out of range
            [3, good, "Holdout"],  # unknown usage
            [2, good, "PrivateTest"],
        ],
    )
    with pytest.raises(DataError, match=r"csv:1: 2303 pixel values.*and 3 more bad images"):
        load_dataset("fer2013", tmp_path, "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = load_dataset("fer2013", tmp_path, "train", skip_bad=True)
    assert train.paths == ["csv:0"]
    assert "skipped 4 unreadable" in data_warnings(caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_dataset("fer2013", tmp_path, "test", skip_bad=True).paths == ["csv:5"]


def test_fer2013_csv_missing_columns(tmp_path):
    (tmp_path / "fer2013.csv").write_text("label,image\n1,2 3\n")
    with pytest.raises(DataError, match="needs the columns emotion, pixels, Usage"):
        load_dataset("fer2013", tmp_path, "train")


def test_fer2013_csv_synthetic_layout(tmp_path):
    csv_path = make_synthetic_faces(tmp_path, "fer2013-csv", n_per_class=2, seed=1)
    assert csv_path.name == "fer2013.csv"
    train = load_dataset("fer2013", csv_path, "train")
    assert len(train) == 14 and train.class_counts() == {c: 2 for c in FER2013_CLASSES}


# -- CK+48 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ck_root(tmp_path_factory):
    return make_synthetic_faces(tmp_path_factory.mktemp("ck"), "ckplus48", n_per_class=6, seed=2)


def test_ckplus48_groups_and_folds(ck_root):
    every = load_dataset("ckplus48", ck_root, "all")
    assert every.classes == ("happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
    assert len(every) == 42 and every.info["subjects"] == 12
    for path, group, sequence in zip(every.paths, every.groups, every.info["sequences"]):
        assert int(path.split("/")[1][1:4]) == group  # S<subject>_<sequence>_... -> subject number
        assert int(path.split("/")[1][5:8]) == sequence
    happy = every.subset(every.labels == 0)
    assert len(happy) == 6 and happy.info["sequences"].tolist() == every.info["sequences"][every.labels == 0].tolist()
    seen = []
    for fold in range(4):
        train = load_dataset("ckplus48", ck_root, "train", fold=fold, num_folds=4)
        test = load_dataset("ckplus48", ck_root, "test", fold=fold, num_folds=4)
        assert not set(train.groups) & set(test.groups)  # subject independent
        assert sorted(train.paths + test.paths) == sorted(every.paths)
        seen += test.paths
    assert sorted(seen) == sorted(every.paths)  # each image is tested exactly once
    with pytest.raises(ConfigError, match="needs a fold"):
        load_dataset("ckplus48", ck_root, "train")
    with pytest.raises(ConfigError, match="fold must be in 0..9"):
        load_dataset("ckplus48", ck_root, "test", fold=10)


def test_ckplus48_misnamed_files_are_skipped(tmp_path, rng):
    save_grey(tmp_path / "anger" / "S005_001_00000001.png", rng=rng)
    save_grey(tmp_path / "happy" / "S006_002_00000003.png", rng=rng)
    save_grey(tmp_path / "happy" / "photo.png", rng=rng)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        every = load_dataset("ckplus48", tmp_path, "all")
    assert every.paths == ["anger/S005_001_00000001.png", "happy/S006_002_00000003.png"]
    assert every.groups.tolist() == [5, 6]
    assert "happy/photo.png" in data_warnings(caught)


# -- JAFFE --------------------------------------------------------------------------------------


def test_jaffe_codes_subjects_and_loso(tmp_path):
    root = make_synthetic_faces(tmp_path / "jaffe", "jaffe", n_per_class=10, seed=4)
    every = load_dataset("jaffe", root, "all")
    assert len(every) == 70 and every.classes == vocab.ordered(
        ["neutral", "happy", "sad", "surprise", "angry", "disgust", "fear"]
    )
    code_of = {
        "NE": "neutral",
        "HA": "happy",
        "SA": "sad",
        "SU": "surprise",
        "AN": "angry",
        "DI": "disgust",
        "FE": "fear",
    }
    for path, label, group in zip(every.paths, every.labels, every.groups):
        initials, code = path.split(".")[:2]
        assert every.classes[label] == code_of[code[:2]]
        assert every.info["subjects"][group] == initials
    test = load_dataset("jaffe", root, "test", subject="KM")
    train = load_dataset("jaffe", root, "train", subject="km")
    assert {p[:2] for p in test.paths} == {"KM"} and "KM" not in {p[:2] for p in train.paths}
    assert len(test) + len(train) == 70
    assert load_dataset("jaffe", root, "test", subject=2).paths == test.paths
    assert load_dataset("jaffe", root, "test", subject="2").paths == test.paths
    assert len(set(load_dataset("jaffe", root, "test", fold=0).groups)) == 1  # 10 subjects, 10 folds
    with pytest.raises(ConfigError, match="no subject 'ZZ'"):
        load_dataset("jaffe", root, "test", subject="ZZ")
    with pytest.raises(ConfigError, match="needs subject="):
        load_dataset("jaffe", root, "train")


# -- RAF-DB -------------------------------------------------------------------------------------

RAF = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}


def test_rafdb_official_layout(tmp_path):
    root = make_synthetic_faces(tmp_path / "basic", "rafdb", n_per_class=2, size=100, seed=5)
    labels_txt = (root / "EmoLabel" / "list_patition_label.txt").read_text().split("\n")
    truth = {line.split()[0].replace(".jpg", "_aligned.jpg"): RAF[int(line.split()[1])] for line in labels_txt if line}
    assert dataset_splits("rafdb", tmp_path) == ["train", "test"]  # the parent folder works too
    train = load_dataset("rafdb", root, "train")
    assert train.images.shape == (14, 100, 100)  # native size, grey
    for path, label in zip(train.paths, train.labels):
        assert path.startswith("Image/aligned/train_")
        assert train.classes[label] == truth[path.split("/")[-1]]
    rgb = np.asarray(Image.open(root / train.paths[0]).convert("RGB")).astype(float)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(train.images[0] - luma).max() <= 1
    (root / train.paths[0]).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_dataset("rafdb", root, "train")) == 13
    assert "aligned file is missing" in data_warnings(caught)
    assert len(load_dataset("rafdb", root, "test")) == 7


def test_rafdb_kaggle_layout(tmp_path):
    root = make_synthetic_faces(tmp_path, "rafdb-kaggle", n_per_class=2, size=64, seed=6)
    test = load_dataset("rafdb", root, "test")
    assert len(test) == 7 and test.classes == vocab.ordered(RAF.values())
    for path, label in zip(test.paths, test.labels):
        assert test.classes[label] == RAF[int(path.split("/")[2])]
    (root / "DATASET" / "test" / "9").mkdir()
    with pytest.raises(DataError, match=r"unknown class folder\(s\) 9 for rafdb"):
        load_dataset("rafdb", root, "test")


# -- generic folders -------------------------------------------------------------------------------


def test_folder_aliases_and_unknown_names(tmp_path, rng):
    for name in ("Anger", "happiness", "Surprised"):
        save_grey(tmp_path / name / "x.png", rng=rng)
    flat = load_dataset("folder", tmp_path, "all")
    assert dataset_splits("folder", tmp_path) == ["all"]
    assert flat.classes == ("happy", "surprise", "angry")
    save_grey(tmp_path / "bored" / "y.png", rng=rng)
    with pytest.raises(DataError) as err:
        load_dataset("folder", tmp_path, "all")
    message = str(err.value)
    assert "bored" in message and "happiness" in message and "\n" not in message


def test_folder_splits_share_classes(tmp_path, rng):
    save_grey(tmp_path / "train" / "sad" / "a.png", rng=rng)
    save_grey(tmp_path / "train" / "contempt" / "b.png", rng=rng)
    save_grey(tmp_path / "validation" / "sad" / "c.png", rng=rng)
    save_grey(tmp_path / "test" / "contempt" / "d.png", rng=rng)
    assert dataset_splits("folder", tmp_path) == ["train", "val", "test"]
    train, val, test = (load_dataset("folder", tmp_path, s) for s in ("train", "val", "test"))
    assert train.classes == val.classes == test.classes == ("sad", "contempt")
    assert val.paths == ["validation/sad/c.png"] and val.labels.tolist() == [0]
    assert test.labels.tolist() == [1]
    with pytest.raises(DataError, match="folder has no split 'train'; available: all"):
        load_dataset("folder", tmp_path / "train", "train")  # a flat class-folder root has only 'all'
    with pytest.raises(DataError, match="no sub-folders"):
        load_dataset("folder", tmp_path / "train" / "sad", "all")


def test_synthetic_folder_layouts_load(tmp_path):
    flat = make_synthetic_faces(tmp_path / "flat", "folder", n_per_class=3, seed=7)
    assert len(load_dataset("folder", flat, "all")) == 21
    split = make_synthetic_faces(tmp_path / "split", "folder-split", n_per_class=2, seed=7)
    assert [len(load_dataset("folder", split, s)) for s in ("train", "val", "test")] == [14, 7, 7]
    ferplus = make_synthetic_faces(tmp_path / "ferplus", "ferplus", n_per_class=2, seed=7)
    assert len(load_dataset("ferplus", ferplus, "train")) == 16  # 8 classes, clear majorities


def test_changed_source_is_re_decoded(tmp_path, rng):
    save_grey(tmp_path / "train" / "happy" / "a.png", value=10)
    first = load_dataset("fer2013", tmp_path, "train")
    save_grey(tmp_path / "train" / "happy" / "a.png", value=200, size=(48, 48))
    import os

    os.utime(tmp_path / "train" / "happy" / "a.png", ns=(1, 1))  # a different mtime, whatever the clock
    second = load_dataset("fer2013", tmp_path, "train")
    assert first.images[0, 0, 0] == 10 and second.images[0, 0, 0] == 200
    shutil.copy(tmp_path / "train" / "happy" / "a.png", tmp_path / "train" / "happy" / "b.png")
    assert len(load_dataset("fer2013", tmp_path, "train")) == 2
