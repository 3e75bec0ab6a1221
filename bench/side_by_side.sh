#!/usr/bin/env bash
# The recurrent workloads side by side, alternating nnc and its peers in one run on this
# machine: B4 (tanh RNN, ../shared/bench/models/b4_char_rnn.net) against JAX's lax.scan, as
# ../shared/bench/side_by_side.sh runs it, and its LSTM variant (bench/models/b4_char_lstm.net)
# against the best of torch.nn.LSTM, a torch.nn.LSTMCell loop and JAX's lax.scan
# (bench/peers/b4_charlstm_train.py). Prints per workload and thread count nnc's tokens/s,
# the peer's and the ratio (above 1: nnc ahead).
# Needs ../shared beside the checkout, the peers' venv (bash ../shared/bench/peers/setup_venv.sh,
# once per machine) and a release build:
#   cargo build --release && bash bench/side_by_side.sh [THREADS...]      (default: 1 2)
set -u
SHARED="${SHARED:-../shared/bench}"
PEERS_HOME="${PEERS_HOME:-$HOME/nnc-peers}"
PY="$PEERS_HOME/venv/bin/python"
NNC=./target/release/nnc
THREADS="${*:-1 2}"
[ -x "$PY" ] || { echo "no peers venv at $PEERS_HOME (bash $SHARED/peers/setup_venv.sh)" >&2; exit 1; }
[ -x "$NNC" ] || { echo "no release build (cargo build --release)" >&2; exit 1; }
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# tokens/s: examples/s of `nnc bench --train` (median of 3 invocations) times the 64 steps
nnc_tokens() { for i in 1 2 3; do $NNC bench "$1" --train --batch 32 --threads "$2" 2>/dev/null \
  | grep -oE '[0-9.]+ examples/s' | grep -oE '^[0-9.]+'; done | med | awk '{print $1 * 64}'; }
peer() { # script fw threads -> tokens/s
  "$PY" "$1" --threads "$3" --fw "$2" --reps 3 2>/dev/null | "$PY" -c '
import sys, json
for line in sys.stdin:
    try: d = json.loads(line)
    except Exception: continue
    if "value" in d: print(d["value"])' | tail -n 1; }
row() { printf '%-24s %s threads  nnc %10.0f  %-14s %10.0f  ratio %.2fx\n' "$1" "$2" "$3" "$4" "$5" \
  "$(awk -v a="$3" -v b="$5" 'BEGIN{print (b > 0 ? a / b : 0)}')"; }
for t in $THREADS; do
  n=$(nnc_tokens "$SHARED/models/b4_char_rnn.net" "$t")
  p=$(peer "$SHARED/peers/b4_charrnn_train.py" jax_scan "$t")
  row "B4 char-RNN" "$t" "$n" jax_scan "${p:-0}"
  n=$(nnc_tokens bench/models/b4_char_lstm.net "$t")
  best=0; name=none
  for fw in torch_nn_lstm torch_loop jax_scan; do
    v=$(peer bench/peers/b4_charlstm_train.py "$fw" "$t")
    if [ -n "$v" ] && awk -v a="$v" -v b="$best" 'BEGIN{exit !(a > b)}'; then best=$v; name=$fw; fi
  done
  row "B4-LSTM char-LSTM" "$t" "$n" "$name" "$best"
done
