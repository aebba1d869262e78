"""Video data: decord vs frame folders, TSN sampling, dataset layouts, unreadable files, synthetic clips."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_papers.data import decord_available, read_video, write_video
from lightning_papers.fe_adapter import (
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
    (a, _, _), (b, _, _) = ds[0], ds[1]
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
    clips, y, skipped = next(iter(dm.train_dataloader()))
    assert clips.shape == (4, 3, 3, 16, 16) and y.dtype == torch.long and skipped == []
    with pytest.raises(ValueError, match="needs root"):
        VideoEmotionDataModule("dfew")


def _corrupt_folder(tmp_path):
    write_video(tmp_path / "ok" / "good.mp4", _frames(4))
    write_video(tmp_path / "ok" / "good2.mp4", _frames(4, seed=1))
    (tmp_path / "ok" / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 10)
    (tmp_path / "ok" / "empty.mp4").write_bytes(b"")
    (tmp_path / "bad").mkdir()
    write_video(tmp_path / "bad" / "good.mp4", _frames(4, seed=2))
    return tmp_path


def test_undecodable_files_are_dropped_by_the_scan_and_counted(tmp_path):
    dm = VideoEmotionDataModule(
        "folder",
        root=str(_corrupt_folder(tmp_path)),
        num_frames=2,
        img_size=16,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        dm.setup()
    assert sorted(p.split("/")[-1] for p in dm.skipped_files) == ["corrupt.mp4", "empty.mp4"]
    assert len(dm.train_dataset) == 3


def test_training_substitutes_undecodable_clips_evaluation_drops_them(tmp_path):
    dm = VideoEmotionDataModule(
        "folder", root=str(_corrupt_folder(tmp_path)), num_frames=2, img_size=16, val_fraction=0.0,
        test_fraction=0.0, scan_files=False, batch_size=8,
    )  # fmt: skip
    dm.setup()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        clips, y, skipped = next(iter(dm.train_dataloader()))
        assert len(y) == 5  # full batch: each undecodable clip replaced by the next decodable one
        # corrupt.mp4 is followed by empty.mp4: its substitute skips both; every skip is reported
        assert sorted(p.split("/")[-1] for p in skipped) == ["corrupt.mp4", "empty.mp4", "empty.mp4"]
        ds = dm.train_dataset
        ds.substitute = False  # evaluation behaviour
        clips, y, skipped = next(
            iter(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=dm.train_dataloader().collate_fn))
        )
        assert len(y) == 3 and len(skipped) == 2


def test_other_exceptions_are_not_swallowed(tmp_path):
    write_video(tmp_path / "c" / "a.mp4", _frames(4))

    def broken_transform(frames):
        raise KeyError("a bug in a transform")

    ds = VideoClipDataset([VideoSample(tmp_path / "c" / "a.mp4", 0)], 2, True, broken_transform)
    with pytest.raises(KeyError, match="a bug"):
        ds[0]
    missing = VideoClipDataset(
        [VideoSample(tmp_path / "c" / "gone.mp4", 0)], 2, True, ClipTransform(16, True)
    )
    with pytest.raises(FileNotFoundError):
        missing[0]


@pytest.mark.slow
def test_decode_errors_from_worker_processes_are_merged_and_logged(tmp_path):
    import lightning.pytorch as L

    from lightning_papers.fe_adapter import FEAdapterClassifier, FEAdapterConfig

    dm = VideoEmotionDataModule(
        "folder", root=str(_corrupt_folder(tmp_path)), num_frames=2, img_size=32, val_fraction=0.0,
        test_fraction=0.0, scan_files=False, batch_size=1, num_workers=2,
    )  # fmt: skip
    model = FEAdapterClassifier(
        "vit_tiny_patch16_224", img_size=32, num_frames=2, num_classes=2, head_dropout=0.0,
        backbone_kwargs=dict(patch_size=8, embed_dim=64, depth=2, num_heads=2), adapter=FEAdapterConfig(bottleneck=2),
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, dm)
    # the 2 workers decode disjoint shares; the main process sees every skip of every worker
    # (per epoch: corrupt.mp4 once, empty.mp4 twice, as its own item and while substituting corrupt.mp4)
    assert {p.split("/")[-1]: n for p, n in dm.skip_counts.items()} == {"corrupt.mp4": 2, "empty.mp4": 4}
    assert float(trainer.callback_metrics["train/skipped_clips"]) == 3.0  # the last epoch's sum


def _fake_dfew(root, n=10):
    split = root / "EmoLabel_DataSplit"
    for name in ("train(single-labeled)", "test(single-labeled)"):
        (split / name).mkdir(parents=True)
    for fold in range(1, 6):
        test_ids = [i for i in range(1, n + 1) if i % 5 == fold - 1]
        train_ids = [i for i in range(1, n + 1) if i not in test_ids]
        for name, ids in (("train", train_ids), ("test", test_ids)):
            rows = "".join(f"{i},{1 + i % 2}\n" for i in ids)
            (split / f"{name}(single-labeled)" / f"set_{fold}.csv").write_text("video_name,label\n" + rows)
    for i in range(1, n + 1):
        write_video(root / "Clip" / "original" / f"{i:05d}.mp4", _frames(4, seed=i))
    return root


def test_validation_is_never_drawn_from_test(tmp_path):
    root = _fake_dfew(tmp_path / "dfew", n=20)
    for fold in (1, 3):
        dm = VideoEmotionDataModule(
            "dfew", root=str(root), fold=fold, num_frames=2, img_size=16, val_fraction=0.2
        )
        dm.setup()
        train = {s.path for s in dm.train_dataset.samples}
        val = {s.path for s in dm.val_dataset.samples}
        test = {s.path for s in dm.test_dataset.samples}
        listed_train = {s.path for s in parse_dfew(root, fold, "train")}
        assert val and not val & test and not train & test and not val & train
        assert val <= listed_train and test == {s.path for s in parse_dfew(root, fold, "test")}
    assert VideoEmotionDataModule("dfew", root=str(root)).val_fraction == 0.1  # held out by default
    # val_fraction=0 turns validation off; it never falls back to the test split
    dm = VideoEmotionDataModule("dfew", root=str(root), num_frames=2, img_size=16, val_fraction=0.0)
    dm.setup()
    assert len(dm.val_dataset) == 0 and dm.val_dataloader() == []
    # synthetic / folder: disjoint train / val / test
    for c, n in (("calm", 6), ("tense", 6)):
        for i in range(n):
            write_video(tmp_path / "mine" / c / f"v{i}.mp4", _frames(4, seed=i))
    dm = VideoEmotionDataModule("folder", root=str(tmp_path / "mine"), num_frames=2, img_size=16)
    dm.setup()
    parts = [{s.path for s in d.samples} for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_synthetic_clips_are_seeded_balanced_and_regenerated_without_stale_files(tmp_path):
    gen = SyntheticEmotionVideos(tmp_path / "a", num_clips=8, clip_len=8, size=32, seed=3)
    root = gen.prepare()
    samples, classes = parse_folder(root)
    assert classes == sorted(SYNTHETIC_CLASSES) and len(samples) == 8
    assert sorted(np.bincount([s.label for s in samples]).tolist()) == [2, 2, 2, 2]
    again = SyntheticEmotionVideos(tmp_path / "b", num_clips=8, clip_len=8, size=32, seed=3).prepare()
    first = read_video(root / SYNTHETIC_CLASSES[0] / "00000.mp4")
    np.testing.assert_array_equal(first, read_video(again / SYNTHETIC_CLASSES[0] / "00000.mp4"))
    assert first.shape == (8, 32, 32, 3)
    mtime = (root / "manifest.json").stat().st_mtime_ns
    gen.prepare()  # cached: nothing rewritten
    assert (root / "manifest.json").stat().st_mtime_ns == mtime
    # regenerating the same folder with fewer clips leaves none of the earlier ones behind
    SyntheticEmotionVideos(tmp_path / "a", num_clips=4, clip_len=8, size=32, seed=3).prepare()
    assert len(parse_folder(root)[0]) == 4 and len(list(root.rglob("*.mp4"))) == 4


def test_synthetic_classes_differ_only_in_timing():
    t = (np.arange(8) + 0.5) / 8
    rng = np.random.default_rng(0)
    draws = {
        k: np.stack([SyntheticEmotionVideos.intensity(k, t, rng) for _ in range(3000)]) for k in range(4)
    }
    # the frames as a set: same distribution of expression levels in every class (per-frame models: chance)
    levels = {k: np.sort(d, axis=1).mean(0) for k, d in draws.items()}
    for k in range(1, 4):
        np.testing.assert_allclose(levels[k], levels[0], atol=0.02)
    # order: in "smile first" classes the smile peak precedes the frown peak; distance: close vs apart
    for k, d in draws.items():
        lag = d.argmin(1) - d.argmax(1)  # frames from the smile peak to the frown peak
        assert (np.sign(lag) == (1 if k % 2 == 0 else -1)).mean() > 0.95
        assert (np.abs(lag).mean() < 2.5) == (k < 2)


def test_synthetic_amplitude_and_hold_ranges_shape_the_expressions():
    t = (np.arange(64) + 0.5) / 64
    rng = np.random.default_rng(1)
    # subtle-only expressions never leave [0.5 - a/2, 0.5 + a/2]; broad ones reach the extremes
    subtle = np.stack([SyntheticEmotionVideos.intensity(0, t, rng, amplitude=(0.3, 0.3)) for _ in range(50)])
    broad = np.stack([SyntheticEmotionVideos.intensity(0, t, rng, amplitude=(1.0, 1.0)) for _ in range(50)])
    assert subtle.max() <= 0.65 + 1e-9 and subtle.min() >= 0.35 - 1e-9
    assert broad.max() == 1.0 and broad.min() == 0.0
    # sustained holds keep an expression at its peak for more frames than brief ones
    long = SyntheticEmotionVideos.intensity(2, t, np.random.default_rng(2), amplitude=(1, 1), hold=(0.1, 0.1))
    short = SyntheticEmotionVideos.intensity(
        2, t, np.random.default_rng(2), amplitude=(1, 1), hold=(0.03, 0.03)
    )
    assert (long == 1.0).sum() > (short == 1.0).sum() > 0
    # the defaults keep the settings (and so the cache folders) of earlier versions; bad ranges are refused
    assert "amplitude" not in SyntheticEmotionVideos(num_clips=8).settings
    assert SyntheticEmotionVideos(num_clips=8, amplitude=(0.9, 1.0)).settings["amplitude"] == [0.9, 1.0]
    with pytest.raises(ValueError, match="amplitude"):
        SyntheticEmotionVideos(num_clips=8, amplitude=(0.8, 0.5))
    with pytest.raises(ValueError, match="hold"):
        SyntheticEmotionVideos(num_clips=8, hold=(0.0, 0.1))


def test_dfew_split_with_every_clip_missing_or_a_bad_label_is_an_error(tmp_path):
    root = _fake_dfew(tmp_path / "dfew", n=10)
    (root / "Clip" / "original" / "00003.mp4").unlink()
    with pytest.warns(UserWarning, match=r"1 clips listed in .*set_1\.csv were not found"):
        assert len(parse_dfew(root, 1, "train")) == 7  # one missing: skipped with a warning
    for clip in (root / "Clip" / "original").iterdir():
        clip.unlink()
    with pytest.raises(FileNotFoundError, match=r"none of the 8 clips listed in .*set_1\.csv was found"):
        parse_dfew(root, 1, "train")  # a wrong root or clip folder, not an empty split
    table = root / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_2.csv"
    table.write_text("video_name,label\n1,3\n2,happy\n")
    with pytest.raises(ValueError, match=r"set_2\.csv, row 3: label 'happy' for '2' is not a number; expected 1\.\.7"):
        parse_dfew(root, 2, "train")
    table.write_text("video_name,label\n1,9\n")
    with pytest.raises(ValueError, match=r"set_2\.csv, row 2: label 9 for '1' is outside 1\.\.7"):
        parse_dfew(root, 2, "train")
