"""The published cross-validation protocol: train and test on every fold, report mean ± std UAR / WAR.

``lightning-papers fe-adapter-folds --config cli_configs/fe_adapter/dfew.yaml --root /data/DFEW`` runs
``fit`` then ``test`` (on the checkpoint chosen by *validation* UAR, validation being carved out of each
fold's training list) for folds 1..5 and prints one line per fold and the mean ± std.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightning_papers.files import atomic_write_text

__all__ = ["cross_validate", "summarize_folds"]


def summarize_folds(results: dict[int, dict[str, float]]) -> str:
    """A per-fold table and the mean ± std (sample std over folds) of test UAR and WAR.

    Example::

        >>> print(summarize_folds({1: {"test/uar": 0.6, "test/war": 0.7}, 2: {"test/uar": 0.64, "test/war": 0.72}}))
        fold 1: UAR 60.00  WAR 70.00
        fold 2: UAR 64.00  WAR 72.00
        mean ± std over 2 folds: UAR 62.00 ± 2.83  WAR 71.00 ± 1.41
    """
    if not results:
        raise ValueError("no fold results to summarise")
    lines = []
    for fold in sorted(results):
        r = results[fold]
        lines.append(f"fold {fold}: UAR {100 * r['test/uar']:.2f}  WAR {100 * r['test/war']:.2f}")
    uar = 100 * np.array([results[f]["test/uar"] for f in sorted(results)])
    war = 100 * np.array([results[f]["test/war"] for f in sorted(results)])
    ddof = 1 if len(uar) > 1 else 0
    lines.append(
        f"mean ± std over {len(uar)} folds: UAR {uar.mean():.2f} ± {uar.std(ddof=ddof):.2f}  "
        f"WAR {war.mean():.2f} ± {war.std(ddof=ddof):.2f}"
    )
    return "\n".join(lines)


def cross_validate(
    config: str,
    root: str | None = None,
    folds: list[int] | None = None,
    overrides: list[str] | None = None,
    output: str | None = None,
    workdir: str = "fe_adapter_folds",
) -> str:
    """Fit and test a YAML config on each fold; return (and print) the per-fold and mean ± std summary.

    Args:
        config: a ``lightning-papers fit`` config whose data is a ``VideoEmotionDataModule`` with folds.
        root: the dataset root (``--data.init_args.root``), unless the config sets it.
        folds: folds to run (default: all folds of the dataset, DFEW / MAFW 1..5).
        overrides: extra LightningCLI arguments, e.g. ``["--trainer.max_epochs=20"]``.
        output: write the per-fold metrics as JSON here (atomically).
        workdir: each fold's logs and checkpoints go to ``<workdir>/fold_<k>``.

    The test uses the checkpoint with the
    best validation UAR when the config has a ``ModelCheckpoint``, else the last weights.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from lightning_papers.cli import _import_packages
    from lightning_papers.fe_adapter.parsers import DATASETS

    _import_packages()
    base = (
        ["--config", str(config)]
        + ([f"--data.init_args.root={root}"] if root else [])
        + list(overrides or [])
    )
    results: dict[int, dict[str, float]] = {}
    todo = list(folds) if folds else None
    k = 0
    while True:
        fold = todo[k] if todo else k + 1
        cli = LightningCLI(
            model_class=None, datamodule_class=None, subclass_mode_model=True, subclass_mode_data=True,
            save_config_kwargs={"overwrite": True}, run=False,
            args=[*base, f"--data.init_args.fold={fold}", f"--trainer.default_root_dir={Path(workdir) / f'fold_{fold}'}"],
        )  # fmt: skip
        if todo is None:
            spec = DATASETS.get(getattr(cli.datamodule, "dataset", ""))
            if spec is None or not spec.folds:
                raise ValueError("the config's dataset has no folds; pass folds= or use a DFEW / MAFW config")
            todo = list(spec.folds)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        ckpt = next(
            (c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path), None
        )
        metrics = cli.trainer.test(
            cli.model,
            datamodule=cli.datamodule,
            ckpt_path=ckpt.best_model_path if ckpt else None,
            verbose=False,
        )[0]
        results[fold] = {key: float(v) for key, v in metrics.items()}
        print(
            f"[fe_adapter folds] fold {fold}: UAR {metrics['test/uar']:.4f} WAR {metrics['test/war']:.4f}",
            flush=True,
        )
        k += 1
        if k >= len(todo):
            break
    summary = summarize_folds(results)
    if output:
        atomic_write_text(output, json.dumps({"folds": results, "summary": summary}, indent=2))
    return summary
