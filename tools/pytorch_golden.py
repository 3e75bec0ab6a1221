#!/usr/bin/env python3
"""Golden files for checking nnc's training against PyTorch.

Builds three networks in PyTorch (float32, CPU, fixed seeds) and writes, for each, one
safetensors file under tests/golden/ that runtime/tests/pytorch_golden.rs reads:

- lenet5:          examples/lenet5.net
- resnet_bn:       tests/golden/resnet_bn.net (conv, batch-norm in training mode, ReLU,
                   residual additions, a projected shortcut), batch 32
- char_lstm_small: tests/golden/char_lstm_small.net (an LSTM over one-hot characters)

Each file holds, under PyTorch's names (`conv1.weight`, `bn1.running_var`,
`lstm1.weight_ih_l0`, `fc1.bias`):

- `init.*`   every parameter and buffer before training, in bfloat16: the initial values
             are rounded to bfloat16 before anything runs, so they are stored exactly in
             half the bytes;
- `input`    one batch (bfloat16, exact for the same reason) and `labels` (int64);
- `logits`, `loss`  the forward pass in training mode from the initial values;
- `grad.*`   the gradient of every parameter after one backward pass;
- `sgd.*`, `adam.*`  every parameter and buffer (batch-norm running statistics included)
             after 3 steps of SGD (momentum 0.9, weight decay 5e-4) or of Adam on the
             same batch, from the initial values;
- metadata: the learning rates, the number of steps, the versions used, and for every
             compared tensor `rounding.<name>`: how far PyTorch's float32 result is from
             the same computation in float64 (see `rounding` below), which the test's
             tolerances build on.

Run from the repository root with a Python that has torch, numpy and safetensors:

    ~/nnc-peers/venv/bin/python tools/pytorch_golden.py [--data ../shared/data/mnist]

Last run with Python 3.11.7, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0. The digits are
the first 32 of MNIST's training set (from --data); the characters are drawn from a seed.
"""

import argparse
import gzip
import pathlib
import struct

import numpy as np
import safetensors
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden"
BATCH = 32
STEPS = 3
SGD_LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
ADAM_LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
MEAN, STD = 0.1307, 0.3081


def sgd(params):
    return torch.optim.SGD(params, lr=SGD_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def adam(params):
    return torch.optim.Adam(params, lr=ADAM_LR, betas=BETAS, eps=EPS)


class LeNet5(nn.Module):
    """examples/lenet5.net."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.conv3(x)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(x)))


class ResNetBN(nn.Module):
    """tests/golden/resnet_bn.net."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv4 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(16)
        self.conv5, self.bn5 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv6, self.bn6 = nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16, 10)

    def forward(self, image):
        x = F.relu(self.bn1(self.conv1(image)))
        y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(x)))))
        z = F.relu(y + x)
        a = self.bn5(self.conv5(F.relu(self.bn4(self.conv4(z)))))
        s = self.bn6(self.conv6(z))
        return self.fc1(F.relu(a + s).mean(dim=(2, 3)))


class CharLSTM(nn.Module):
    """tests/golden/char_lstm_small.net: scores for every step, [batch, steps, vocab]."""

    def __init__(self, vocab=12, hidden=16):
        super().__init__()
        self.lstm1 = nn.LSTM(vocab, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.fc1(self.lstm1(x)[0])


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def bf16(t):
    """`t` rounded to bfloat16, as float32."""
    return t.to(torch.bfloat16).to(torch.float32)


def digits(data):
    images = read_idx(data / "train-images-idx3-ubyte.gz")[:BATCH]
    labels = read_idx(data / "train-labels-idx1-ubyte.gz")[:BATCH]
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - MEAN) / STD
    return bf16(x.reshape(BATCH, 1, 28, 28)), torch.from_numpy(labels.astype(np.int64))


def characters(vocab=12, steps=8):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (BATCH, steps + 1), generator=g)
    return F.one_hot(ids[:, :steps], vocab).to(torch.float32), ids[:, 1:].contiguous()


def loss_of(logits, labels):
    """Mean cross-entropy over every scored row (batch × steps for sequences)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def initial(model, seed):
    """PyTorch's default initialisation from `seed`, batch-norm scales and shifts drawn
    away from 1 and 0 (so that a gradient that ignored them would show), everything
    rounded to bfloat16."""
    torch.manual_seed(seed)
    net = model()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(bf16(t))
    return {k: v.clone() for k, v in net.state_dict().items()}


def trained(model, init, x, y, optimizer, dtype=torch.float32):
    net = model().to(dtype)
    net.load_state_dict(init)
    x = x.to(dtype)
    net.train()
    opt = optimizer(net.parameters())
    for _ in range(STEPS):
        opt.zero_grad()
        loss_of(net(x), y).backward()
        opt.step()
    return net.state_dict()


def golden(name, model, seed, x, y):
    init = initial(model, seed)
    net = model()
    net.load_state_dict(init)
    net.train()
    logits = net(x)
    loss = loss_of(logits, y)
    loss.backward()
    sgd_state = trained(model, init, x, y, sgd)
    adam_state = trained(model, init, x, y, adam)
    tensors = {"input": x.to(torch.bfloat16), "labels": y}
    tensors["logits"] = logits.detach()
    tensors["loss"] = loss.detach().reshape(1)
    for k, v in init.items():
        if v.is_floating_point():
            tensors[f"init.{k}"] = v.to(torch.bfloat16)
    for k, p in net.named_parameters():
        tensors[f"grad.{k}"] = p.grad.detach()
    for prefix, state in (("sgd", sgd_state), ("adam", adam_state)):
        for k, v in state.items():
            if v.is_floating_point():
                tensors[f"{prefix}.{k}"] = v.detach()
    metadata = {
        "steps": str(STEPS),
        "sgd_lr": repr(SGD_LR),
        "sgd_momentum": repr(MOMENTUM),
        "sgd_weight_decay": repr(WEIGHT_DECAY),
        "adam_lr": repr(ADAM_LR),
        "adam_beta1": repr(BETAS[0]),
        "adam_beta2": repr(BETAS[1]),
        "adam_eps": repr(EPS),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }
    deviations = rounding(model, init, x, y, tensors)
    metadata.update({f"rounding.{key}": f"{d:.3e}" for key, d in deviations.items()})
    path = OUT / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    print(f"{path.relative_to(ROOT)}: loss {loss.item():.6f}, {path.stat().st_size} bytes")
    worst = {}
    for key, d in sorted(deviations.items()):
        kind = key.split(".")[0] + (" running" if "running" in key else "")
        if d >= worst.get(kind, (-1.0,))[0]:
            worst[kind] = (d, key)
    for kind, (d, key) in worst.items():
        print(f"  float32 vs float64 {kind:<14} {d:.2e}  ({key})")


def rounding(model, init, x, y, tensors):
    """How far PyTorch's float32 results are from the same computation in float64, per
    compared tensor, as max |float32 - float64| over the scale the test divides by: the
    tensor's largest |value|, or for parameters after the optimizer steps the largest
    change. The test allows nnc a multiple of this (batch-norm's backward pass and
    Adam's normalised steps amplify rounding, so a fixed tolerance would be either too
    loose for some tensors or too tight for others)."""
    net = model().double()
    net.load_state_dict(init)
    net.train()
    logits = net(x.double())
    loss = loss_of(logits, y)
    loss.backward()
    exact = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for k, p in net.named_parameters():
        exact[f"grad.{k}"] = p.grad
    for prefix, opt in (("sgd", sgd), ("adam", adam)):
        for k, v in trained(model, init, x, y, opt, torch.float64).items():
            if v.is_floating_point():
                exact[f"{prefix}.{k}"] = v.detach()
    deviations = {}
    for key, e in exact.items():
        got = tensors[key].double()
        scale = got.abs().max().item()
        tensor = key.split(".", 1)[-1]
        if key.startswith(("sgd.", "adam.")) and "running" not in key:
            scale = (got - init[tensor].double()).abs().max().item()
        deviations[key] = (got - e).abs().max().item() / (scale or 1.0)
    return deviations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    x, y = digits(args.data)
    golden("lenet5", LeNet5, 1, x, y)
    golden("resnet_bn", ResNetBN, 2, x, y)
    golden("char_lstm_small", CharLSTM, 3, *characters())


if __name__ == "__main__":
    main()
