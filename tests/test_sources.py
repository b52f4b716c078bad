"""Frames in: bad bytes and bad arrays are refused with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import FrameError, ImageDecodeError
from edge.sources import check_frame, decode_image, load_image


def test_a_real_photo_decodes_to_rgb_uint8(faces_dir: Path) -> None:
    img = load_image(faces_dir / "deepface" / "deepface__tests__unit__dataset__img1_jpg.jpg")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_corrupt_image_bytes_are_refused_with_the_file_name(faces_dir: Path, tmp_path: Path) -> None:
    data = (faces_dir / "deepface" / "deepface__tests__unit__dataset__img1_jpg.jpg").read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:20] + bytes(200))
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg: not a decodable image"):
        load_image(broken)


def test_a_non_image_file_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        load_image(text)


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(b"", name="empty.jpg")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path / "absent.jpg")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((100, 100, 3), dtype=np.float32), "uint8"),
        (np.zeros((100, 100, 5), dtype=np.uint8), "shape"),
        (np.zeros((8, 8, 3), dtype=np.uint8), "too small"),
        ("not an array", "numpy array"),
    ],
)
def test_frames_of_the_wrong_kind_are_refused(frame: object, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        check_frame(frame)


def test_grey_and_rgba_frames_become_rgb() -> None:
    assert check_frame(np.zeros((32, 32), dtype=np.uint8)).shape == (32, 32, 3)
    assert check_frame(np.zeros((32, 32, 4), dtype=np.uint8)).shape == (32, 32, 3)
