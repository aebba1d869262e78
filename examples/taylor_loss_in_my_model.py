"""Use the evolved Taylor loss in your own PyTorch training loop: swap it in for nn.CrossEntropyLoss.

Trains the same small MLP on scikit-learn's digits with 40% of the training labels flipped, once with
cross-entropy and once with ``TaylorLoss()``, and prints the clean test accuracy of each (~20 s on a CPU).

    python examples/taylor_loss_in_my_model.py
"""

import torch
from torch import nn

from lightning_papers.data import DigitsDataModule
from lightning_papers.taylor_loss import TaylorLoss


def train(criterion: nn.Module, dm: DigitsDataModule, epochs: int = 60, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y_noisy in dm.train_dataloader():
            loss = criterion(model(x), y_noisy)  # same call as nn.CrossEntropyLoss
            opt.zero_grad()
            loss.backward()
            opt.step()
    x_test, y_test = dm.arrays("test")
    with torch.no_grad():
        return (model(x_test).argmax(-1) == y_test).float().mean().item()


if __name__ == "__main__":
    dm = DigitsDataModule(batch_size=128, noise_type="symmetric", noise_rate=0.4, seed=0)
    dm.setup()
    print(f"{float(dm.noisy_mask.float().mean()):.0%} of the training labels are wrong")
    for name, criterion in [("cross-entropy", nn.CrossEntropyLoss()), ("TaylorLoss()", TaylorLoss())]:
        print(f"{name:>14}: clean test accuracy {train(criterion, dm):.3f}")
    print("TaylorLoss coefficients:", [round(c, 4) for c in TaylorLoss().coefficients.tolist()])
