import numpy as np
import pytest

from lightning_papers.data import decord_available, read_video, video_num_frames, write_video


def _clip(t=6, h=32, w=32):
    # smooth gradients that move over time: survive mpeg4 compression nearly unchanged
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([xx * 4 + 10 * i, yy * 4, np.full_like(xx, 128)], -1) for i in range(t)]
    return np.stack(frames).astype(np.uint8)


def test_write_then_read_with_pyav(tmp_path):
    frames = _clip()
    path = write_video(tmp_path / "c.mp4", frames)
    out = read_video(path, backend="pyav")
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames).mean() < 4.0
    assert video_num_frames(path, backend="pyav") == 6
    sub = read_video(path, indices=[5, 0, 0], backend="pyav")
    assert np.array_equal(sub[0], out[5]) and np.array_equal(sub[1], out[0])


@pytest.mark.skipif(not decord_available(), reason="decord has wheels for x86_64 only")
def test_decord_and_pyav_agree(tmp_path):
    path = write_video(tmp_path / "c.mp4", _clip())
    assert np.array_equal(read_video(path, backend="decord"), read_video(path, backend="pyav"))
    assert video_num_frames(path, backend="decord") == 6


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all")
    with pytest.raises(RuntimeError, match="corrupt.mp4"):
        read_video(corrupt)
    path = write_video(tmp_path / "c.mp4", _clip(t=3))
    with pytest.raises(IndexError, match=r"\[7\]"):
        read_video(path, indices=[0, 7])
    with pytest.raises(ValueError, match="'ffmpeg'"):
        read_video(path, backend="ffmpeg")
