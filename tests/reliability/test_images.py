"""`fermetric predict` on hostile image files: a correct result or one line naming file and reason.

The decoder's own cases live in tests/data/test_imageio*.py; these tests go through the
command line end to end (decode -> detect -> crop -> model -> output) and check what a user sees:
exit codes, single-line errors, the folder summary, and results that do not depend on the
container (bit depth, colour model, EXIF orientation, file name).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from .reliability_helpers import assert_one_line_error, json_records

ORIENTATION = 0x0112
# EXIF orientation -> the transpose that, applied to the upright photo, gives the stored pixels
# (so a viewer that honours the tag shows the upright photo again).
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1, **options)
    return buffer.getvalue()


def assert_same_record(record: dict, expected: dict) -> None:
    """Same face, box, score and label; probabilities equal up to float rounding (files predicted
    together share one batch, whose reductions may differ in the last bits from a batch of one)."""
    assert record.keys() == expected.keys()
    assert (record["face"], record["box"], record["score"], record["label"]) == (
        expected["face"],
        expected["box"],
        expected["score"],
        expected["label"],
    )
    assert record["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert record["embedding_norm"] == pytest.approx(expected["embedding_norm"], rel=1e-5)


def assert_same_records(records: list[dict], expected: list[dict]) -> None:
    assert len(records) == len(expected)
    for record, want in zip(records, expected):
        assert_same_record(record, want)


def write_bad_files(folder, astronaut) -> dict[str, str]:
    """Unreadable files in ``folder``: name -> a word the one-line reason must contain."""
    jpeg, png = jpeg_bytes(astronaut), png_bytes(astronaut)
    files = {
        "zero.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "text.jpg": (b"just some notes, saved with the wrong extension\n", "not an image"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


@pytest.mark.parametrize("name", ["zero.jpg", "truncated.jpg", "truncated.png", "text.jpg", "missing.png", "no_images"])
def test_an_unreadable_input_is_one_line_naming_it(name, tmp_path, astronaut, tiny_checkpoint, run_cli):
    reasons = write_bad_files(tmp_path, astronaut)
    reasons.update({"missing.png": "no such file", "no_images": "folder holds no image or video files"})
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("not an image")
    path = tmp_path / name
    for extra in ([], ["--json"], ["--no-detect"]):
        result = run_cli("predict", path, "--checkpoint", tiny_checkpoint, *extra)
        assert_one_line_error(result, str(path), reasons[name])
        assert result.out == ""


def test_folder_run_goes_on_past_bad_files_and_lists_them(
    tmp_path, astronaut, reference, tiny_checkpoint, run_cli, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "80")  # a narrow, non-terminal console: nothing may be cut or wrapped
    folder = tmp_path / "photos"
    reasons = write_bad_files(folder, astronaut)
    astronaut.save(folder / "b_face.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(
        folder / "c_noise.png"
    )
    result = run_cli("predict", folder, "--checkpoint", tiny_checkpoint)
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    assert "files read: 2; images/frames analysed: 2; faces found: 1" in lines
    assert (
        f"no face found in 1: {folder / 'c_noise.png'} (images that are face crops already: use --no-detect)" in lines
    )
    assert f"skipped {len(reasons)}:" in lines
    for name, reason in reasons.items():  # each bad file: one whole line with its reason
        (line,) = [line for line in lines if line.startswith(f"  {folder / name}: ")]
        assert reason in line
    assert "…" not in result.out  # the table folds long file names instead of truncating them

    as_json = run_cli("predict", folder, "--checkpoint", tiny_checkpoint, "--json")
    assert as_json.code == 0
    assert_same_records(json_records(as_json.out), reference)  # the face file's record only
    assert f"skipped {len(reasons)}:" in as_json.err.splitlines()  # summary on stderr: stdout stays JSON


NAMES = ["[bold]face.png", "face [final].png", "a[/x]/face.png", "été 2024/my face.png"]


def test_any_file_name_is_shown_verbatim(tmp_path, astronaut, reference, tiny_checkpoint, run_cli, monkeypatch):
    """Unicode, spaces and names that look like console markup (rich) are paths, nothing else."""
    monkeypatch.setenv("COLUMNS", "250")
    folder = tmp_path / "in"
    paths = [folder / name for name in NAMES]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        astronaut.save(path, compress_level=1)
        (path.parent / f"broken {path.name}").write_bytes(b"")
    result = run_cli("predict", folder, "--checkpoint", tiny_checkpoint)
    assert result.code == 0
    lines = result.out.splitlines()
    for path in paths:
        assert any(str(path) in line for line in lines), path  # its table row
        assert f"  {path.parent / ('broken ' + path.name)}: empty file (0 bytes)" in lines
    as_json = run_cli("predict", *paths, "--checkpoint", tiny_checkpoint, "--json")
    assert [json.loads(line)["path"] for line in as_json.out.splitlines()] == [str(p) for p in paths]
    for record in json_records(as_json.out):
        assert_same_record(record, reference[0])


def test_odd_but_valid_encodings_give_the_upright_rgb_result(tmp_path, astronaut, reference, tiny_checkpoint, run_cli):
    """16-bit, RGBA, palette, CMYK: decoded to the same picture, so the same face and result."""
    grey = astronaut.convert("L")
    grey_array = np.asarray(grey)
    files = {
        "grey8.png": png_bytes(grey),
        # 16-bit: v * 257 maps 0..255 onto 0..65535 exactly; decoding divides by 257 again
        "grey16.png": png_bytes(Image.fromarray(grey_array.astype(np.uint16) * 257)),
        "rgba.png": png_bytes(astronaut.convert("RGBA")),  # opaque alpha
        "palette.png": png_bytes(astronaut.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)),
        "rgb.jpg": jpeg_bytes(astronaut),
        "cmyk.jpg": jpeg_bytes(astronaut.convert("CMYK")),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with Image.open(tmp_path / "grey16.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    results = {}
    for name in files:
        result = run_cli("predict", tmp_path / name, "--checkpoint", tiny_checkpoint, "--json")
        assert result.code == 0, result.err
        results[name] = json_records(result.out)
    # lossless containers of the same pixels: identical records (grey photos give the RGB photo's grey)
    for name in ("grey8.png", "grey16.png", "rgba.png"):
        assert_same_records(results[name], reference)
    # lossy ones (palette quantisation, JPEG, CMYK JPEG): the same single face
    for name in ("palette.png", "rgb.jpg", "cmyk.jpg"):
        (record,) = results[name]
        assert iou(record["box"], reference[0]["box"]) > 0.9, name


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_exif_orientation_is_honoured(container, tmp_path, astronaut, reference, tiny_checkpoint, run_cli):
    """A photo stored rotated or mirrored with an EXIF Orientation tag is analysed upright."""
    upright = tmp_path / f"upright.{container}"
    (upright.write_bytes(png_bytes(astronaut) if container == "png" else jpeg_bytes(astronaut)))
    expected = json_records(run_cli("predict", upright, "--checkpoint", tiny_checkpoint, "--json").out)
    assert len(expected) == 1
    orientations = sorted(STORED_AS) if container == "png" else [6, 3, 8]  # JPEG: the phone rotations
    paths = []
    for orientation in orientations:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        stored = astronaut.transpose(STORED_AS[orientation])
        path = tmp_path / f"orientation{orientation}.{container}"
        path.write_bytes(png_bytes(stored, exif=exif) if container == "png" else jpeg_bytes(stored, exif=exif))
        paths.append(path)
    result = run_cli("predict", *paths, "--checkpoint", tiny_checkpoint, "--json")
    records = json_records(result.out)
    assert result.code == 0 and len(records) == len(paths)  # one face per file, none missed
    for record in records:
        if container == "png":  # lossless: the very same pixels, the very same result
            assert_same_record(record, reference[0])
        else:  # each JPEG re-encodes differently: the same face, box within a pixel or two
            np.testing.assert_allclose(record["box"], expected[0]["box"], atol=2.5)


def test_tiny_and_face_less_images(tmp_path, tiny_checkpoint, run_cli):
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (200, 120, 40)).save(one)
    noise = tmp_path / "noise.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(noise)
    for path in (one, noise):  # no face is a result, not an error
        result = run_cli("predict", path, "--checkpoint", tiny_checkpoint, "--json")
        assert result.code == 0 and json_records(result.out) == []
        assert json.loads(result.out)["reason"] == "no face found"
        assert f"no face found in 1: {path}" in result.err
    crop = run_cli("predict", one, "--checkpoint", tiny_checkpoint, "--json", "--no-detect")
    (record,) = json_records(crop.out)
    assert crop.code == 0 and record["box"] == [0.0, 0.0, 1.0, 1.0] and record["score"] is None
    assert sum(record["probabilities"].values()) == pytest.approx(1.0)


def test_unwritable_outputs_fail_before_any_work(tmp_path, astronaut, tiny_checkpoint, run_cli, monkeypatch):
    from fermetric import predict

    astronaut.save(tmp_path / "face.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    work = []
    monkeypatch.setattr(predict.Predictor, "predict_paths", lambda *a, **k: work.append(1))
    result = run_cli("predict", tmp_path / "face.png", "--checkpoint", tiny_checkpoint, "--csv", blocker / "out.csv")
    assert_one_line_error(result, "--csv", str(blocker / "out.csv"))
    result = run_cli(
        "predict", tmp_path / "face.png", "--checkpoint", tiny_checkpoint, "--annotate", blocker / "annotated"
    )
    assert_one_line_error(result, "--annotate", str(blocker / "annotated"))
    assert work == []  # refused before a single image was analysed
    assert not (tmp_path / "out.csv").exists()


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    """The photo upscaled to 12000 x 12000 (144 Mpx) as JPEG, written by a PIL-only child process
    so that this process never holds it at full size."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    code = (
        "import sys; from PIL import Image; from fermetric.assets import example_photo; "
        "Image.open(example_photo()).convert('RGB').resize((12000, 12000), Image.Resampling.BILINEAR)"
        ".save(sys.argv[1], quality=80)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    return path


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


@pytest.mark.slow
def test_a_12000_px_photo_is_analysed_in_bounded_memory_and_time(huge_jpeg, tiny_checkpoint, run_cli):
    try:  # Linux: reset this process's peak-RSS mark, so the peak of the command alone is measured
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    before = _peak_rss_mib()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli("predict", huge_jpeg, "--checkpoint", tiny_checkpoint, "--json")
    seconds = time.perf_counter() - start
    growth = _peak_rss_mib() - before
    assert result.code == 0
    assert [str(w.message) for w in caught] == []  # no decompression-bomb warning: the size is handled
    # The full-size RGB image alone would be 12000 * 12000 * 3 bytes = 412 MiB (576 MiB inside PIL);
    # a JPEG is decoded at 1/2 scale by the DCT, reduced to 4096 px and detected at 1024 px.
    assert growth < 12000 * 12000 * 3 / 2**20, f"peak memory grew {growth:.0f} MiB"
    assert seconds < 60
    # Boxes are reported in the file's own pixels: the face of the 512 px original, scaled up.
    from fermetric.assets import example_photo
    from fermetric.data.faces import detect_faces

    with Image.open(example_photo()) as original:
        (face,) = detect_faces(np.asarray(original.convert("RGB")))
    expected = [v * 12000 / 512 for v in face.box]
    assert max(iou(record["box"], expected) for record in json_records(result.out)) > 0.9
