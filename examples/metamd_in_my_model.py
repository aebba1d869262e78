"""Use MetaMD in your own model: a drop-in torch.optim optimizer with a meta-learned mirror map.

Run: python examples/metamd_in_my_model.py   (digits, CPU, well under a minute)

1. Train your own nn.Module with ``MetaMirrorDescent`` (default: the shipped meta-learned map, lr=1).
2. Meta-learn a map for your own task family with ``meta_train`` and a ``TaskSampler`` subclass.
"""

import math

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from lightning_papers.metamd import FunctionalTask, MetaMirrorDescent, MirrorMap, TaskSampler, meta_train
from lightning_papers.metamd.meta_train import reference_solution, unrolled_regret_bound

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


def train(make_optimizer, epochs=10):
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


# 1) the shipped meta-learned map ("digits_mlp"), a saved map file, or "identity" (= plain SGD)
for name, make in [
    ("MetaMD (shipped map, lr=1)", lambda p: MetaMirrorDescent(p, lr=1.0)),
    ("MetaMD identity map = SGD lr=0.1", lambda p: MetaMirrorDescent(p, lr=0.1, mirror_map="identity")),
    ("Adam lr=3e-3", lambda p: torch.optim.Adam(p, lr=3e-3)),
]:
    loss, acc = train(make)
    print(f"{name:36s} train loss {loss:.4f}  test acc {acc:.3f}")


# 2) meta-learn a map for your own family of problems (here: random ridge regressions)
class RidgeTasks(TaskSampler):
    def sample(self, seed):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(40, 8, generator=g) * torch.logspace(-1, 0.5, 8)
        b = a @ torch.randn(8, 1, generator=g)
        return FunctionalTask(
            [torch.zeros(1, 8), torch.zeros(1)],
            lambda p: 0.5 * ((a @ p[0].T + p[1] - b) ** 2).mean() + 1e-3 * (p[0] ** 2).sum(),
        )


sampler = RidgeTasks()
held_out = [sampler.sample(10_000 + i) for i in range(4)]  # tasks never drawn during meta-training
for task in held_out:
    task.reference = reference_solution(task, steps=300, lr=0.05)


def mean_log_bound(mirror_map):
    return (
        sum(math.log(float(unrolled_regret_bound(mirror_map, t, 10, 1.0)[0].detach())) for t in held_out) / 4
    )


start_map = MirrorMap(num_slots=2, num_terms=2, assignment="kind", init_scale=20.0)
before = mean_log_bound(start_map)
result = meta_train(
    sampler,
    start_map,
    meta_steps=20,
    unroll_steps=10,
    task_pool=8,
    reference_steps=300,
    reference_lr=0.05,
    meta_lr=0.1,
    progress=False,
)
print(
    f"meta-train on RidgeTasks: held-out log regret bound {before:.2f} -> {mean_log_bound(result.mirror_map):.2f}"
)
