"""The LSTM variant of B4: a char-LSTM training step. 65 one-hot characters, an LSTM of 256
(PyTorch's gates i, f, g, o and two biases), 64 steps, batch 32, logits (65) at every step,
cross-entropy averaged over all steps, full backpropagation through time, Adam lr 2e-3
(betas 0.9/0.999, eps 1e-8). Metric: tokens/s = batch * steps / step time.

Frameworks: torch_nn_lstm (torch.nn.LSTM, PyTorch's fused CPU kernel), torch_loop (a Python
loop over torch.nn.LSTMCell), jax_scan (jax.jit of value_and_grad over lax.scan). Each one's
output projection is one product over the stacked hidden states.

This file uses the harness of the shared peer benchmarks (../shared/bench/peers/common.py,
beside the project checkout) and runs in their virtual environment:
    ~/nnc-peers/venv/bin/python bench/peers/b4_charlstm_train.py --fw jax_scan --threads 1
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("NNC_SHARED_PEERS", os.path.join(HERE, "..", "..", "..", "shared", "bench", "peers"))
if not os.path.exists(os.path.join(SHARED, "common.py")):
    raise SystemExit(f"the peer harness is not at {SHARED} (set NNC_SHARED_PEERS to the folder holding common.py)")
sys.path.insert(0, SHARED)
import common  # noqa: E402

FWS = ["torch_nn_lstm", "torch_loop", "jax_scan"]
V, H, T, B = 65, 256, 64, 32
WL = "B4_charlstm_train_T64_B32_H256"


def data():
    import numpy as np
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(T, B))
    x = np.eye(V, dtype=np.float32)[ids]  # [T, B, V], time first
    y = rng.integers(0, V, size=(T, B)).astype(np.int64)
    return x, y


def run_torch(args, kind):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xn, yn = data()
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    t0 = time.perf_counter()
    out = nn.Linear(H, V)
    if kind == "loop":
        cell = nn.LSTMCell(V, H)
        params = list(cell.parameters()) + list(out.parameters())

        def forward(x):
            h, c = torch.zeros(B, H), torch.zeros(B, H)
            hs = []
            for t in range(T):
                h, c = cell(x[t], (h, c))
                hs.append(h)
            return out(torch.stack(hs))
        notes = "python loop over T of torch.nn.LSTMCell(65,256); one Linear on the stacked h"
    else:
        lstm = nn.LSTM(V, H)  # time first
        params = list(lstm.parameters()) + list(out.parameters())

        def forward(x):
            hs, _ = lstm(x)
            return out(hs)
        notes = "torch.nn.LSTM(65,256) + Linear"
    opt = torch.optim.Adam(params, lr=2e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = forward(x)
        loss = F.cross_entropy(logits.reshape(T * B, V), y.reshape(T * B))
        loss.backward()
        opt.step()
        return loss

    l0 = step()
    first = time.perf_counter() - t0
    r = common.bench_throughput(step, lambda: None, T * B, args.reps, args.target, args.warmup)
    r["first_step_s"] = first
    r["loss_first"] = float(l0.detach())
    r["versions"] = common.versions(["torch", "numpy"])
    r["notes"] = notes + "; torch.optim.Adam default implementation"
    return r


def run_jax(args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax
    xn, yn = data()
    x, y = jnp.asarray(xn), jnp.asarray(yn.astype(np.int32))
    t0 = time.perf_counter()
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    s = 1.0 / H ** 0.5
    params = {"Wx": jax.random.uniform(k[0], (V, 4 * H), jnp.float32, -s, s),
              "Wh": jax.random.uniform(k[1], (H, 4 * H), jnp.float32, -s, s),
              "b": jax.random.uniform(k[2], (4 * H,), jnp.float32, -s, s),
              "Wo": jax.random.uniform(k[3], (H, V), jnp.float32, -s, s),
              "bo": jax.random.uniform(k[4], (V,), jnp.float32, -s, s)}

    def loss_fn(p, x, y):
        def cell(state, xt):
            h, c = state
            z = xt @ p["Wx"] + h @ p["Wh"] + p["b"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        zero = jnp.zeros((B, H), jnp.float32)
        _, hs = lax.scan(cell, (zero, zero), x)
        logits = hs @ p["Wo"] + p["bo"]
        lse = jax.nn.logsumexp(logits, axis=-1)
        return jnp.mean(lse - jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0])

    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 2e-3

    @jax.jit
    def train_step(p, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        p = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
        return p, m, v, t, loss

    z = jax.tree_util.tree_map(jnp.zeros_like, params)
    st = {"p": params, "m": z, "v": z, "t": jnp.zeros((), jnp.float32), "l": None}

    def step():
        st["p"], st["m"], st["v"], st["t"], st["l"] = train_step(st["p"], st["m"], st["v"], st["t"], x, y)

    def sync():
        jax.block_until_ready(st["p"])

    step()
    sync()
    first = time.perf_counter() - t0
    l0 = float(st["l"])
    r = common.bench_throughput(step, sync, T * B, args.reps, args.target, args.warmup)
    r["first_step_s"] = first
    r["loss_first"] = l0
    r["versions"] = common.versions(["jax", "jaxlib", "numpy"])
    r["notes"] = "jax.jit(value_and_grad(lax.scan LSTM) + hand-written Adam, torch formula)"
    return r


def main():
    args = common.base_parser(FWS).parse_args()
    if args.fw == "all":
        common.emit({"workload": WL, "threads": args.threads, "results": common.run_all(__file__, args, FWS)})
        return
    common.setup(args)
    try:
        if args.fw == "torch_nn_lstm":
            r = run_torch(args, "nn")
        elif args.fw == "torch_loop":
            r = run_torch(args, "loop")
        elif args.fw == "jax_scan":
            r = run_jax(args)
        else:
            raise SystemExit("unknown fw " + args.fw)
    except Exception as e:  # noqa
        common.fail(WL, args.fw, args.threads, e)
    # Forward multiply-adds per step: the four gates' input and hidden products and the output.
    macs = T * B * (4 * H * (V + H) + H * V)
    r["train_flops_per_step_est"] = 3 * 2 * macs
    r["achieved_gflops"] = 6 * macs / (r["step_ms_median"] * 1e-3) / 1e9
    common.emit({"workload": WL, "fw": args.fw, "threads": args.threads,
                 "metric": "train_tokens_per_s", "value": r["items_per_s"], **r})


if __name__ == "__main__":
    main()
