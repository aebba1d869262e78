"""Use MetaMD in your own model: a drop-in torch.optim optimizer with a meta-learned adaptive mirror map.

Run: python examples/metamd_in_my_model.py   (digits, CPU, about a minute)

1. Train your own nn.Module with ``MetaMirrorDescent`` (default: the shipped adaptive map at Adam's lr 1e-3).
2. Meta-learn a map on small versions of *your* model and data with ``meta_train`` (functional_call inside).
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_papers.metamd import MetaMirrorDescent, ModuleTaskSampler, meta_train
from lightning_papers.metamd.adaptive_meta import validation_score
from lightning_papers.metamd.optimizer import resolve_mirror_map

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, inp):
        return self.head(self.body(inp))


def train(make_optimizer, epochs=8):
    torch.manual_seed(0)
    net = MyNet()
    opt = make_optimizer(net.parameters())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # schedulers work as usual
    for _ in range(epochs):
        for i in range(0, len(x_train), 64):
            opt.zero_grad()
            F.cross_entropy(net(x_train[i : i + 64]), y_train[i : i + 64]).backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)  # and so does gradient clipping
            opt.step()
        sched.step()
    with torch.no_grad():
        return F.cross_entropy(net(x_train), y_train).item(), (
            net(x_test).argmax(1) == y_test
        ).float().mean().item()


# 1) the shipped adaptive map (default), the neutral map "adam" (== torch.optim.Adam) or "identity" (== SGD)
for name, make in [
    ("MetaMD (shipped map, lr=1e-3)", lambda p: MetaMirrorDescent(p)),
    ("MetaMD neutral map = Adam lr=1e-3", lambda p: MetaMirrorDescent(p, mirror_map="adam")),
    ("torch.optim.Adam lr=1e-3", lambda p: torch.optim.Adam(p)),
]:
    loss, acc = train(make)
    print(f"{name:36s} train loss {loss:.4f}  test acc {acc:.3f}")

# 2) meta-learn on your own model: tasks = (fresh init of MyNet, random 256-example subset), full batch
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64)
start = resolve_mirror_map("adaptive_mix")  # meta-training continues from the shipped map (in place)
held_out = ModuleTaskSampler(MyNet(), loader, "cross_entropy", n_examples=256, lr=3e-3)
tasks = [held_out.sample(50_000 + i) for i in range(2)]  # never drawn during meta-training
before = validation_score(start, tasks, 60)
result = meta_train(
    MyNet(),
    start,
    data=loader,
    loss="cross_entropy",
    lr=3e-3,  # the learning rate you use with Adam
    meta_steps=6,
    tasks_per_step=3,
    unroll_steps=8,
    max_warm_start=30,
    meta_lr=0.005,
    task_pool=6,
    reference_steps=150,
    val_tasks=2,
    val_every=3,
    val_steps=60,
    progress=False,
)  # output="my_map.pt" saves it; MetaMirrorDescent(params, lr=3e-3, mirror_map="my_map.pt") uses it
after = validation_score(result.mirror_map, tasks, 60)
print(
    f"meta-train on MyNet: held-out mean log-loss vs Adam {before:+.3f} -> {after:+.3f} (negative = faster)"
)
print(f"validation-selected meta-step: {result.mirror_map.meta['selected_step']}")
