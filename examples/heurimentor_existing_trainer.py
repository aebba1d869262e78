"""Add HeuriMentor (TSM + ATE + DMU) to your own Trainer and LightningModule.

Any LightningModule works as long as its training batches carry ``source_ids`` (and ``positions`` for the
DMU); returning ``{"loss": ..., "sample_loss": per_sample}`` from ``training_step`` adds per-source loss.
Here: a small GRU language model (not Aquila2) on the three embedded sources; one source is corrupted
for a while and HeuriMentor skips, rolls back, excludes the bad samples and down-weights the source.

Run: python examples/heurimentor_existing_trainer.py   (about 30 s on one CPU core)
"""

import lightning.pytorch as L
import torch
from torch import nn

from lightning_papers.heurimentor import (
    AdaptiveTrainingEngine,
    DataManagementUnit,
    MixtureDataModule,
    TrainingStateMonitor,
)


class TinyGRULM(L.LightningModule):
    """Your model: nothing HeuriMentor-specific except returning the per-sample loss."""

    def __init__(self, vocab: int = 256, hidden: int = 128):
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(vocab, hidden), nn.GRU(hidden, hidden, batch_first=True), nn.Linear(hidden, vocab)

    def per_sample_loss(self, batch):
        ids = batch["input_ids"]
        logits = self.head(self.rnn(self.emb(ids[:, :-1]))[0])
        tok = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return tok.mean(1)

    def training_step(self, batch, batch_idx):
        sample_loss = self.per_sample_loss(batch)
        return {"loss": sample_loss.mean(), "sample_loss": sample_loss.detach()}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def main(steps: int = 200) -> None:
    L.seed_everything(0)
    data = MixtureDataModule(
        seq_len=64, batch_size=16, max_chars=100_000,
        stages=[{"name": "all", "weights": {"prose": 0.4, "code": 0.4, "qa": 0.2}}],
        corrupt_source="code", corrupt_start=16 * 80, corrupt_stop=16 * 140,  # noise in "code" for steps 80-140
    )
    tsm = TrainingStateMonitor(detectors=[{"kind": "rolling", "window": 20, "ratio": 1.3}], heldout_every=50,
                               trajectory_every=50, log_dir="heurimentor_example")
    ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=10, max_rollbacks=3)
    dmu = DataManagementUnit(downweight_on_spike=0.25)
    trainer = L.Trainer(max_steps=steps, callbacks=[tsm, ate, dmu], logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, default_root_dir="heurimentor_example")
    trainer.fit(TinyGRULM(), data)
    print(f"skipped steps: {list(ate.skipped_steps)}")
    print(f"rollbacks: {list(ate.rollback_log)}")
    print(f"final mixture weights: {dmu.sampler.weights}")
    print("event log: heurimentor_example/heurimentor.log, dashboard: heurimentor_example/heurimentor_dashboard.png")


if __name__ == "__main__":
    main()
