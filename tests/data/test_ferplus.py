"""FER+ label modes (against a transliteration of the reference code) and label-file hygiene."""

from __future__ import annotations

import csv
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from fermetric.data import DataWarning, dataset_splits, load_dataset
from fermetric.data.ferplus import FERPLUS_CLASSES, VOTE_COLUMNS, vote_labels
from fermetric.errors import ConfigError


def reference_majority(emotion_raw: list[float]) -> int:
    """microsoft/FERPlus src/ferplus.py: _process_data(mode='majority') + load_folders' filter,
    transliterated loop for loop; returns the kept emotion index or -1."""
    emotion_raw = list(emotion_raw)
    size = len(emotion_raw)
    emotion_unknown = [0.0] * size
    emotion_unknown[-2] = 1.0
    for i in range(size):
        if emotion_raw[i] < 1.0 + sys.float_info.epsilon:
            emotion_raw[i] = 0.0
    sum_list = sum(emotion_raw)
    emotion = [0.0] * size
    maxval = max(emotion_raw)
    if maxval > 0.5 * sum_list:
        emotion[int(np.argmax(emotion_raw))] = maxval
    else:
        emotion = emotion_unknown
    emotion = [float(i) / sum(emotion) for i in emotion]
    idx = int(np.argmax(emotion))
    return idx if idx < 8 else -1


def naive_plurality(votes: list[float]) -> int:
    top = max(votes)
    winners = [i for i, v in enumerate(votes) if v == top]
    return winners[0] if top > 0 and len(winners) == 1 and winners[0] < 8 else -1


def random_votes(rng, n: int) -> np.ndarray:
    """10 annotators per image like FER+, skewed towards a few columns, plus edge rows."""
    rows = [rng.multinomial(10, rng.dirichlet(np.full(10, 0.4))) for _ in range(n)]
    rows += [
        [0] * 10,
        [1] * 10,
        [0] * 9 + [10],
        [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [2, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        [3, 3, 0, 0, 0, 0, 0, 0, 4, 0],
    ]
    return np.array(rows, dtype=float)


def test_majority_matches_reference_code(rng):
    votes = random_votes(rng, 3000)
    labels, soft = vote_labels(votes, "majority")
    assert soft is None
    assert labels.tolist() == [reference_majority(v) for v in votes.tolist()]
    assert 0.3 < (labels >= 0).mean() < 0.95  # the random votes exercise both outcomes


def test_majority_hand_cases():
    votes = np.array(
        [
            [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],  # 1 vote dropped: 4 of 9 remaining, no majority
            [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],  # single votes removed: 6 of 8 -> neutral
            [0, 0, 0, 0, 0, 0, 0, 0, 7, 3],  # unknown majority -> dropped
            [0, 5, 0, 0, 0, 0, 0, 0, 0, 5],  # 5 of 10 is not more than half -> dropped
            [0, 0, 0, 0, 0, 0, 0, 3, 0, 1],  # contempt 3 of 3 after the NF single vote is removed
        ]
    )
    assert vote_labels(votes, "majority")[0].tolist() == [-1, 0, -1, -1, 7]


def test_plurality_matches_naive(rng):
    votes = random_votes(rng, 2000)
    labels, _ = vote_labels(votes, "plurality")
    assert labels.tolist() == [naive_plurality(v) for v in votes.tolist()]


def test_probability_mode():
    votes = np.array(
        [
            [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],
            [0, 2, 0, 0, 0, 0, 0, 0, 8, 0],  # unknown outvotes every emotion -> dropped
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # no emotion vote -> dropped
            [0, 3, 3, 0, 0, 0, 0, 0, 2, 2],  # tie: first column wins
        ]
    )
    labels, soft = vote_labels(votes, "probability")
    assert labels.tolist() == [0, -1, -1, 1]
    np.testing.assert_allclose(soft[0], [0.4, 0, 0, 0.1, 0.3, 0.2, 0, 0])
    np.testing.assert_allclose(soft[3], [0, 0.5, 0.5, 0, 0, 0, 0, 0])
    with pytest.raises(ConfigError):
        vote_labels(votes, "vote")


# -- the reader on a hand-made FER+ folder ------------------------------------------------------

ROWS = {  # name -> votes (neutral happiness surprise sadness anger disgust fear contempt unknown NF)
    "fer0000000.png": [0, 8, 1, 0, 0, 0, 0, 0, 1, 0],  # happy
    "fer0000001.png": [0, 0, 9, 0, 0, 0, 0, 0, 1, 0],  # surprise
    "fer0000002.png": [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped by majority
    "fer0000003.png": [0, 0, 0, 2, 0, 0, 0, 6, 2, 0],  # contempt
    "fer0000004.png": [4, 0, 0, 4, 0, 0, 0, 0, 2, 0],  # tie: dropped by majority and plurality
    "fer0000005.png": [0, 0, 0, 0, 7, 3, 0, 0, 0, 0],  # angry
}


def write_ferplus(root, folder="FER2013Test", extra_rows=(), missing=(), with_label_csv=True):
    d = root / folder
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ROWS:
        if name not in missing:
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / name)
    rows = [[name, "(0, 0, 48, 48)", *votes] for name, votes in ROWS.items()] + list(extra_rows)
    if with_label_csv:
        with open(d / "label.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\r\n").writerows(rows)  # the real files have CRLF endings
    return rows


def test_reader_label_modes_and_classes(tmp_path):
    write_ferplus(tmp_path)
    assert dataset_splits("ferplus", tmp_path) == ["test"]
    majority = load_dataset("ferplus", tmp_path, "test")
    assert (
        majority.classes
        == FERPLUS_CLASSES
        == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
    )
    by_name = {p.split("/")[-1]: majority.classes[label] for p, label in zip(majority.paths, majority.labels)}
    assert by_name == {
        "fer0000000.png": "happy",
        "fer0000001.png": "surprise",
        "fer0000003.png": "contempt",
        "fer0000005.png": "angry",
    }
    assert majority.paths[0] == "FER2013Test/fer0000000.png"
    np.testing.assert_array_equal(majority.info["votes"][0], ROWS["fer0000000.png"])
    np.testing.assert_array_equal(majority.images[0], np.asarray(Image.open(tmp_path / majority.paths[0])))

    plurality = load_dataset("ferplus", tmp_path, "test", label_mode="plurality")
    assert len(plurality) == 4  # NF and the tie are dropped

    probability = load_dataset("ferplus", tmp_path, "test", label_mode="probability")
    assert len(probability) == 5  # only the NF image is dropped
    assert probability.soft_labels.shape == (5, 8)
    np.testing.assert_allclose(probability.soft_labels.sum(1), 1, rtol=1e-6)
    tie = probability.paths.index("FER2013Test/fer0000004.png")
    np.testing.assert_allclose(probability.soft_labels[tie], [0.5, 0, 0.5, 0, 0, 0, 0, 0])  # vocabulary order
    contempt = probability.paths.index("FER2013Test/fer0000003.png")
    np.testing.assert_allclose(probability.soft_labels[contempt][[2, 7]], [0.25, 0.75])


def test_dirty_label_rows_warn_and_are_skipped(tmp_path):
    extra = [
        ["", "(0, 0, 48, 48)", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # no image name
        ["fer0000001.png", "(0, 0, 48, 48)", 0, 0, 9, 0, 0, 0, 0, 0, 1, 0],  # identical duplicate: kept once
        ["fer0000005.png", "(0, 0, 48, 48)", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # conflicting duplicate: dropped
        ["fer0000009.png", "(0, 0, 48, 48)", 0, 9, 1, 0, 0, 0, 0, 0, 0, 0],  # file missing
        ["fer0000010.png", "(0, 0, 48, 48)", "x", 1],  # malformed
    ]
    write_ferplus(tmp_path, extra_rows=extra, missing=["fer0000003.png"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imageset = load_dataset("ferplus", tmp_path, "test")
    messages = " | ".join(str(w.message) for w in caught if w.category is DataWarning)
    assert "without an image name" in messages
    assert "occur more than once" in messages and "fer0000005.png" in messages
    assert "missing" in messages and "fer0000003.png" in messages and "fer0000009.png" in messages
    assert "malformed" in messages
    names = [p.split("/")[-1] for p in imageset.paths]
    assert names == ["fer0000000.png", "fer0000001.png"]  # 3: file missing, 5: conflicting votes


def test_master_csv_fallback_and_split_names(tmp_path):
    write_ferplus(tmp_path, folder="FER2013Valid", with_label_csv=False)
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *VOTE_COLUMNS])
        for name, votes in ROWS.items():
            w.writerow(["PublicTest", name, *votes])
        w.writerow(["Training", "fer9999999.png", *ROWS["fer0000000.png"]])
    assert dataset_splits("ferplus", tmp_path) == ["val"]
    assert len(load_dataset("ferplus", tmp_path, "val")) == 4


def test_wrong_root_and_options(tmp_path):
    from fermetric.errors import DataError

    with pytest.raises(DataError, match="FER2013Train"):
        load_dataset("ferplus", tmp_path, "test")
    write_ferplus(tmp_path)
    with pytest.raises(ConfigError, match="label_mode"):
        load_dataset("ferplus", tmp_path, "test", label_mode="soft")
    with pytest.raises(DataError, match="no split 'train'"):
        load_dataset("ferplus", tmp_path, "train")
