#!/usr/bin/env bash
# The training loop of benchmarks/torch_training_loop.py at its two models, rnnfast's kernels on
# torch's OpenMP threads (the default) and on rnnfast's own (--own-threads), two rounds; then the
# CPU GEMMs of the two models' layers, rnnfast's own against torch's. Run from the repository
# root with the package importable (PYTHONPATH=python after a development build).
set -euo pipefail
here=$(dirname "$0")
BIG="--T 100 --B 64 --I 128 --H 256 --steps 5 --repeats 9"
SMALL="--steps 20 --repeats 9"
lscpu | grep -E "Model name|^CPU\(s\)|Model:" 
git rev-parse --short HEAD
for round in 1 2; do
  for shape in "$BIG" "$SMALL"; do
    for threads in "" "--own-threads"; do
      echo "== round $round: $shape $threads"
      python benchmarks/torch_training_loop.py $shape --phases $threads
    done
  done
done
for shape in "800 32 256 64" "6400 128 1024 256"; do
  echo "== GEMMs, M I GH H = $shape"
  python "$here/gemm_vs_torch.py" $shape
done
