#!/usr/bin/env python3
"""Checks that checkpoints written by `nnc train` load strictly into PyTorch modules.

`nnc train` writes the weights as a plain `state_dict` under PyTorch's names and layouts
(optimizer state and position go to the sibling `.train.safetensors`). This script builds
the PyTorch module of each network below with nnc's layer names, loads a checkpoint with
`load_state_dict(strict=True)`, runs it on a random batch and prints the logits' shape:

    nnc train examples/lenet5.net --max-steps 5 --out /tmp/lenet5.safetensors
    python tools/pytorch_load.py lenet5 /tmp/lenet5.safetensors
    nnc train examples/char_lstm.net --data ../shared/data/text/quotes-train.txt \
        --max-steps 2 --out /tmp/char_lstm.safetensors
    python tools/pytorch_load.py char_lstm /tmp/char_lstm.safetensors

`resnet_bn` is the batch-norm network of `tests/golden/resnet_bn.net` (add a train section
to train it); its checkpoints carry `num_batches_tracked` as PyTorch's do.

Run with a Python that has torch and safetensors (last run with torch 2.15.0).
"""

import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file


class LeNet5(nn.Module):
    """examples/lenet5.net"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.dense1 = nn.Linear(120, 84)
        self.dense2 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.conv3(x)).flatten(1)
        return self.dense2(torch.tanh(self.dense1(x)))


class ResNetBN(nn.Module):
    """tests/golden/resnet_bn.net, with nnc's layer names."""

    def __init__(self):
        super().__init__()
        conv = lambda i, o, k, s=1: nn.Conv2d(i, o, k, stride=s, padding=k // 2, bias=False)
        self.conv1, self.batchnorm1 = conv(1, 8, 3), nn.BatchNorm2d(8)
        self.conv2, self.batchnorm2 = conv(8, 8, 3), nn.BatchNorm2d(8)
        self.conv3, self.batchnorm3 = conv(8, 8, 3), nn.BatchNorm2d(8)
        self.conv4, self.batchnorm4 = conv(8, 16, 3, 2), nn.BatchNorm2d(16)
        self.conv5, self.batchnorm5 = conv(16, 16, 3), nn.BatchNorm2d(16)
        self.conv6, self.batchnorm6 = conv(8, 16, 1, 2), nn.BatchNorm2d(16)
        self.dense1 = nn.Linear(16, 10)

    def forward(self, x):
        r = torch.relu
        s = r(self.batchnorm1(self.conv1(x)))
        y = self.batchnorm3(self.conv3(r(self.batchnorm2(self.conv2(s)))))
        s = r(y + s)
        y = self.batchnorm5(self.conv5(r(self.batchnorm4(self.conv4(s)))))
        s = r(y + self.batchnorm6(self.conv6(s)))
        return self.dense1(s.mean((2, 3)))


class CharLSTM(nn.Module):
    """examples/char_lstm.net (an LSTM of 256 over 128 one-hot characters)."""

    def __init__(self, vocab=128, hidden=256):
        super().__init__()
        self.lstm1 = nn.LSTM(vocab, hidden, batch_first=True)
        self.dense1 = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.dense1(self.lstm1(x)[0])


MODELS = {
    "lenet5": (LeNet5, (2, 1, 28, 28)),
    "resnet_bn": (ResNetBN, (2, 1, 28, 28)),
    "char_lstm": (CharLSTM, (2, 64, 128)),
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in MODELS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(MODELS)} CHECKPOINT")
    make, shape = MODELS[sys.argv[1]]
    module = make()
    module.load_state_dict(load_file(sys.argv[2]), strict=True)
    module.eval()
    with torch.no_grad():
        out = module(torch.rand(shape))
    print(f"{sys.argv[2]} loads strictly into {make.__name__}; logits {tuple(out.shape)}")


if __name__ == "__main__":
    main()
