import pytest
import torch

from lightning_papers.data import TextDataModule, bundled_text, decode_bytes, encode_bytes


def test_bundled_corpora_are_real_text():
    docs = bundled_text("pydoc")
    assert len(docs) > 300_000 and "for" in docs
    code = bundled_text("stdlib_source")
    assert "def " in code and "import " in code
    with pytest.raises(ValueError, match="'wiki'"):
        bundled_text("wiki")


def test_byte_roundtrip():
    text = "héllo, wörld → ok"
    ids = encode_bytes(text)
    assert ids.dtype == torch.long and int(ids.max()) < 256
    assert decode_bytes(ids) == text


def test_windows_split_and_shapes():
    dm = TextDataModule(seq_len=64, batch_size=8, val_fraction=0.1, seed=0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 64) and torch.equal(batch["input_ids"], batch["labels"])
    train_starts, val_starts = set(dm._splits["train"].tolist()), set(dm._splits["val"].tolist())
    assert not train_starts & val_starts
    total = len(train_starts) + len(val_starts)
    assert len(val_starts) == pytest.approx(0.1 * total, abs=1)
    assert len(dm.tokens("val")) == 64 * len(val_starts)
    again = TextDataModule(seq_len=64, seed=0)
    again.setup()
    assert torch.equal(dm._splits["val"], again._splits["val"])
    other = TextDataModule(seq_len=64, seed=1)
    other.setup()
    assert not torch.equal(dm._splits["val"], other._splits["val"])


def test_text_files_and_calibration(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("abcdefgh" * 100)
    dm = TextDataModule(text_files=[str(f)], seq_len=16, batch_size=2)
    dm.setup()
    assert decode_bytes(dm.tokens("train")[:8]) in ("abcdefgh" * 2)
    calib = dm.calibration_batches(nsamples=5, seqlen=10, seed=1)
    assert calib.shape == (5, 10)
    assert torch.equal(calib, dm.calibration_batches(nsamples=5, seqlen=10, seed=1))
    with pytest.raises(ValueError, match="seqlen=100000"):
        dm.calibration_batches(nsamples=2, seqlen=100_000)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TextDataModule(text_files=[str(tmp_path / "nope.txt")]).setup()
    with pytest.raises(ValueError, match="seq_len must be >= 2, got 1"):
        TextDataModule(seq_len=1)


def test_empty_file_list_and_empty_files_are_errors(tmp_path):
    with pytest.raises(ValueError, match="text_files is an empty list"):
        TextDataModule(text_files=[])
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        TextDataModule(text_files=[str(empty)]).setup()
