"""Video data: decord vs frame folders, TSN sampling, dataset layouts, unreadable files, synthetic clips."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_papers.data import decord_available, read_video, write_video
from lightning_papers.fe_adapter.data import (
    DFEW_CLASSES,
    MAFW_CLASSES,
    SYNTHETIC_CLASSES,
    ClipTransform,
    SyntheticEmotionVideos,
    VideoClipDataset,
    VideoEmotionDataModule,
    VideoSample,
    parse_dfew,
    parse_ferv39k,
    parse_folder,
    parse_mafw,
    sample_indices,
)


def _frames(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, size, size, 3))
    ramp = np.arange(n).reshape(n, 1, 1, 1) * 20
    return np.clip(base // 2 + ramp, 0, 255).astype(np.uint8)


def _write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1}.png")  # 1..n, natural order (10 after 9)


def test_tsn_sampling_and_padding():
    assert sample_indices(16, 4, train=False) == [2, 6, 10, 14]
    g = torch.Generator().manual_seed(0)
    idx = sample_indices(16, 4, train=True, generator=g)
    assert [i // 4 for i in idx] == [0, 1, 2, 3]  # one frame inside each segment
    assert sample_indices(3, 5, train=False) == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="at least one frame"):
        sample_indices(0, 4, train=False)


def test_video_and_frame_folder_give_identical_clips(tmp_path):
    video = write_video(tmp_path / "clip.mp4", _frames(12))
    backend = "decord" if decord_available() else "pyav"
    decoded = read_video(video, backend=backend)
    assert decoded.shape == (12, 32, 32, 3)
    _write_frames(tmp_path / "clip_frames", decoded)  # lossless PNG copy of the decoded frames
    tf = ClipTransform(16, train=False)
    samples = [VideoSample(video, 0), VideoSample(tmp_path / "clip_frames", 0)]
    ds = VideoClipDataset(samples, num_frames=5, train=False, transform=tf, backend=backend)
    (a, _), (b, _) = ds[0], ds[1]
    assert a.shape == (5, 3, 16, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a short clip is padded by repeating its last frame
    short = VideoClipDataset(samples[1:], num_frames=15, train=False, transform=tf, backend=backend)[0][0]
    torch.testing.assert_close(short[12:], short[11:12].expand(3, -1, -1, -1), rtol=0, atol=0)


def test_train_transform_is_consistent_across_frames():
    torch.manual_seed(0)
    frames = np.repeat(_frames(1, 32), 4, axis=0)
    out = ClipTransform(16, train=True, scale=(0.3, 0.5))(frames)
    assert out.shape == (4, 3, 16, 16)
    for t in range(1, 4):
        torch.testing.assert_close(out[t], out[0], rtol=0, atol=0)


def test_dfew_layout_with_label_shift_and_frame_folders(tmp_path):
    split = tmp_path / "EmoLabel_DataSplit"
    for name in ("train(single-labeled)", "test(single-labeled)"):
        (split / name).mkdir(parents=True)
    (split / "train(single-labeled)" / "set_2.csv").write_text("video_name,label\n1,1\n2,7\n3,3\n")
    (split / "test(single-labeled)" / "set_2.csv").write_text("video_name,label\n4,5\n")
    for i in (1, 2, 3, 4):
        write_video(tmp_path / "Clip" / "original" / f"{i:05d}.mp4", _frames(4))
    _write_frames(tmp_path / "Clip" / "clip_224x224" / "00002", _frames(4))
    train = parse_dfew(tmp_path, fold=2, split="train")
    assert [s.label for s in train] == [0, 6, 2]
    assert DFEW_CLASSES[6] == "fear" and train[1].is_frames and not train[0].is_frames
    assert [s.path.name for s in parse_dfew(tmp_path, fold=2, split="train", source="video")] == [
        "00001.mp4", "00002.mp4", "00003.mp4",
    ]  # fmt: skip
    assert [s.label for s in parse_dfew(tmp_path, fold=2, split="test")] == [4]
    with pytest.raises(FileNotFoundError, match="set_3.csv"):
        parse_dfew(tmp_path, fold=3)
    (split / "train(single-labeled)" / "set_4.csv").write_text("video_name,label\n1,8\n")
    with pytest.raises(ValueError, match="outside 1..7"):
        parse_dfew(tmp_path, fold=4)


def test_ferv39k_layout(tmp_path):
    setups = tmp_path / "4_setups" / "All_scenes"
    setups.mkdir(parents=True)
    (setups / "train_All.csv").write_text(
        "Action/Happy/0001 Happy\nAction/Sad/0002 Sad\nDaily/Fear/0003 Fear\n"
    )
    (setups / "test_All.csv").write_text("Action/Angry/0004 Angry\n")
    for rel in ("Action/Happy/0001", "Action/Sad/0002", "Daily/Fear/0003", "Action/Angry/0004"):
        _write_frames(tmp_path / "2_ClipsforFaceCrop" / rel, _frames(3))
    train = parse_ferv39k(tmp_path, "train")
    assert [s.label for s in train] == [DFEW_CLASSES.index(c) for c in ("happy", "sad", "fear")]
    assert [s.label for s in parse_ferv39k(tmp_path, "test")] == [DFEW_CLASSES.index("angry")]
    (setups / "test_All.csv").write_text("Action/Angry/0004 Bored\n")
    with pytest.raises(ValueError, match="Bored"):
        parse_ferv39k(tmp_path, "test")


def test_mafw_layout_eleven_classes(tmp_path):
    folder = tmp_path / "split" / "single" / "no_caption" / "set_1"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("00001.mp4 anger\n00002.mp4 disappointment\n00003.mp4 contempt\n")
    (folder / "test.txt").write_text("00004.mp4 helplessness\n")
    for i in (1, 2, 3, 4):
        write_video(tmp_path / "data" / "clips" / f"{i:05d}.mp4", _frames(4))
    assert len(MAFW_CLASSES) == 11
    assert [s.label for s in parse_mafw(tmp_path, 1, "train")] == [0, 10, 7]
    assert [s.label for s in parse_mafw(tmp_path, 1, "test")] == [9]
    with pytest.raises(FileNotFoundError, match="MAFW split file"):
        parse_mafw(tmp_path, 2, "train")


def test_folder_layout_and_datamodule_split(tmp_path):
    for c, n in (("calm", 5), ("excited", 5)):
        for i in range(n):
            write_video(tmp_path / c / f"v{i}.mp4", _frames(4, seed=i))
    samples, classes = parse_folder(tmp_path)
    assert classes == ["calm", "excited"] and len(samples) == 10
    dm = VideoEmotionDataModule(
        "folder",
        root=str(tmp_path),
        num_frames=3,
        img_size=16,
        batch_size=4,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup()
    sizes = (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset))
    assert sum(sizes) == 10 and min(sizes) >= 2 and dm.class_names == classes
    clips, y = next(iter(dm.train_dataloader()))
    assert clips.shape == (4, 3, 3, 16, 16) and y.dtype == torch.long
    with pytest.raises(ValueError, match="needs root"):
        VideoEmotionDataModule("dfew")


def test_unreadable_files_are_skipped_with_warning_and_counted(tmp_path):
    write_video(tmp_path / "ok" / "good.mp4", _frames(4))
    write_video(tmp_path / "ok" / "good2.mp4", _frames(4, seed=1))
    (tmp_path / "ok" / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 10)
    (tmp_path / "ok" / "empty.mp4").write_bytes(b"")
    (tmp_path / "bad").mkdir()
    write_video(tmp_path / "bad" / "good.mp4", _frames(4, seed=2))
    # up-front scan
    dm = VideoEmotionDataModule(
        "folder", root=str(tmp_path), num_frames=2, img_size=16, val_fraction=0.0, test_fraction=0.0
    )
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        dm.setup()
    assert sorted(p.split("/")[-1] for p in dm.skipped_files) == ["corrupt.mp4", "empty.mp4"]
    assert len(dm.train_dataset) == 3
    # without the scan the loader skips them mid-epoch instead of crashing
    dm = VideoEmotionDataModule(
        "folder", root=str(tmp_path), num_frames=2, img_size=16, val_fraction=0.0, test_fraction=0.0,
        scan_files=False, batch_size=8,
    )  # fmt: skip
    dm.setup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(dm.train_dataloader())
    assert sum(len(b[1]) for b in batches) == 3
    assert any("empty.mp4" in str(w.message) for w in caught)
    assert len(dm.skipped_files) == 2


def test_synthetic_clips_are_seeded_balanced_and_cached(tmp_path):
    gen = SyntheticEmotionVideos(tmp_path / "a", num_clips=8, clip_len=6, size=32, seed=3)
    root = gen.prepare()
    samples, classes = parse_folder(root)
    assert classes == sorted(SYNTHETIC_CLASSES) and len(samples) == 8
    assert sorted(np.bincount([s.label for s in samples]).tolist()) == [2, 2, 2, 2]
    again = SyntheticEmotionVideos(tmp_path / "b", num_clips=8, clip_len=6, size=32, seed=3).prepare()
    first = read_video(root / "cheering_up" / "00000.mp4")
    np.testing.assert_array_equal(first, read_video(again / "cheering_up" / "00000.mp4"))
    assert first.shape == (6, 32, 32, 3)
    mtime = (root / "manifest.json").stat().st_mtime_ns
    gen.prepare()  # cached: nothing rewritten
    assert (root / "manifest.json").stat().st_mtime_ns == mtime
    # time reversal maps each class onto its partner: identical expression levels, opposite order
    t = np.linspace(0, 1, 9)
    np.testing.assert_allclose(
        SyntheticEmotionVideos.intensity(0, t), SyntheticEmotionVideos.intensity(1, t)[::-1]
    )
    np.testing.assert_allclose(
        SyntheticEmotionVideos.intensity(2, t), SyntheticEmotionVideos.intensity(2, t)[::-1]
    )
