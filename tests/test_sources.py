"""Frames in: bad bytes and bad arrays are refused with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import FrameError, ImageDecodeError
from edge.sources import (
    JpegPicture,
    OpenCVSource,
    RawPicture,
    check_frame,
    check_picture,
    decode_image,
    load_image,
    subsampled_shape,
)


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


def write_video(path: Path, fourcc: str, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 15.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def street_frames(n: int) -> list[np.ndarray]:
    from edge.measure.bench import synthetic_frame

    return [synthetic_frame(640, 480, 1, face_px=40 + 4 * i) for i in range(n)]


def test_an_mjpeg_recording_is_handed_out_undecoded_and_decodes_exactly_as_opencv_decodes_it(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", "MJPG", street_frames(4))
    source = OpenCVSource("gate", str(clip))
    source.open()
    pictures = []
    while (p := source.read()) is not None:
        pictures.append(p)
    source.close()
    assert source.encoded and len(pictures) == 4
    cap = cv2.VideoCapture(str(clip))
    for p in pictures:
        assert isinstance(p, JpegPicture) and (p.width, p.height) == (640, 480)
        as_opencv = cv2.imdecode(np.frombuffer(p.data, np.uint8), cv2.IMREAD_COLOR)
        assert as_opencv is not None
        assert np.array_equal(p.rgb(), cv2.cvtColor(as_opencv, cv2.COLOR_BGR2RGB))  # the lazy decode is the full decode
        ok, by_ffmpeg = cap.read()  # and the frame a decoding source delivers, to within JPEG rounding
        assert ok and np.abs(p.rgb().astype(int) - cv2.cvtColor(by_ffmpeg, cv2.COLOR_BGR2RGB)).mean() < 2


@pytest.mark.parametrize("step", [4, 8, 12, 3])
def test_the_small_grey_copy_of_a_jpeg_has_the_shape_and_the_look_of_the_decoded_frames(step: int) -> None:
    frame = street_frames(1)[0]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    jpeg = JpegPicture(data.tobytes(), 640, 480)
    rows, cols = subsampled_shape(640, 480, step)
    assert jpeg.grey(step).shape == RawPicture(frame).grey(step).shape == (rows, cols)
    # libjpeg's scaled decode averages blocks: the decoded frame shrunk by area averaging, to within rounding.
    shrunk = cv2.resize(cv2.cvtColor(jpeg.rgb(), cv2.COLOR_RGB2GRAY), (cols, rows), interpolation=cv2.INTER_AREA)
    fresh = JpegPicture(data.tobytes(), 640, 480)  # not yet decoded in full
    assert np.abs(fresh.grey(step).astype(int) - shrunk.astype(int)).mean() < 3


def test_a_video_in_another_codec_is_decoded_by_the_source(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", "FFV1", street_frames(2))
    source = OpenCVSource("gate", str(clip))
    source.open()
    first = source.read()
    source.close()
    assert not source.encoded and isinstance(first, RawPicture) and first.rgb().shape == (480, 640, 3)


def test_a_corrupt_jpeg_frame_is_refused_when_looked_at_and_a_wrong_size_is_refused_unseen() -> None:
    with pytest.raises(ImageDecodeError, match="not a decodable JPEG"):
        JpegPicture(b"\xff\xd8" + bytes(300), 640, 480).grey(4)
    with pytest.raises(FrameError, match="too large"):
        check_picture(JpegPicture(b"\xff\xd8", 9000, 480))
    frame = street_frames(1)[0]
    _, data = cv2.imencode(".jpg", frame)
    with pytest.raises(FrameError, match="the stream said 320x240"):
        JpegPicture(data.tobytes(), 320, 240).rgb()


def test_a_corrupt_frame_of_an_mjpeg_recording_is_refused_when_looked_at_and_the_next_ones_still_read(
    tmp_path: Path,
) -> None:
    clip = write_video(tmp_path / "clip.avi", "MJPG", street_frames(4))
    data = bytearray(clip.read_bytes())
    third = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"][2]
    sof = data.index(b"\xff\xc0", third)
    data[sof + 1] = 0x01  # the third frame loses its frame header
    clip.write_bytes(bytes(data))
    source = OpenCVSource("gate", str(clip))
    source.open()
    read: list[tuple[int, ...] | None] = []
    while (p := source.read()) is not None:
        try:
            read.append(p.grey(4).shape)
        except ImageDecodeError:
            read.append(None)  # the daemon counts it as a bad frame of its camera
    assert read == [(120, 160), (120, 160), None, (120, 160)]
