"""The fold loop: fit + test per fold with validation from the training list, then mean ± std."""

import pytest
import yaml

from lightning_papers.fe_adapter import summarize_folds
from tests.fe_adapter.test_data import _fake_dfew


def test_summary_is_mean_and_sample_std_over_folds():
    text = summarize_folds(
        {f: {"test/uar": u, "test/war": u + 0.1} for f, u in zip(range(1, 6), [0.5, 0.6, 0.7, 0.6, 0.6])}
    )
    assert "fold 3: UAR 70.00  WAR 80.00" in text
    assert text.endswith("mean ± std over 5 folds: UAR 60.00 ± 7.07  WAR 70.00 ± 7.07")
    with pytest.raises(ValueError, match="no fold"):
        summarize_folds({})


@pytest.mark.slow
def test_cross_validate_runs_every_requested_fold(tmp_path):
    from lightning_papers.fe_adapter import cross_validate

    root = _fake_dfew(tmp_path / "dfew", n=20)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"monitor": "val/uar", "mode": "max"}}]},
        "model": {"class_path": "FEAdapterClassifier", "init_args": {
            "backbone": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 2, "num_classes": 7,
            "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
            "adapter": {"bottleneck": 2}}},
        "data": {"class_path": "VideoEmotionDataModule", "init_args": {
            "dataset": "dfew", "num_frames": 2, "img_size": 32, "batch_size": 4, "val_fraction": 0.2}},
    }  # fmt: skip
    path = tmp_path / "tiny_dfew.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "folds.json"
    summary = cross_validate(
        str(path), root=str(root), folds=[2, 5], output=str(out), workdir=str(tmp_path / "runs")
    )
    assert summary.splitlines()[0].startswith("fold 2: UAR") and "over 2 folds" in summary
    assert out.is_file() and (tmp_path / "runs" / "fold_5").is_dir()
    # the checkpoint used for testing was chosen on validation data of each fold's own training list
    assert list((tmp_path / "runs" / "fold_2").rglob("*.ckpt"))
