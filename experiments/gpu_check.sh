#!/usr/bin/env bash
# The GPU check, sized for a short loan of a GPU machine (under 10 minutes on one H200):
#   1. the tests that exercise the models and training on the GPU, including cuDNN's real LSTM
#      kernel against the scan (tests/models/test_cudnn_lstm.py);
#   2. experiments.bench.train: textgen-jax with lstm_backend scan and cudnn, plain Flax, and
#      PyTorch (nn.LSTM, which runs cuDNN) on the S and V workloads, interleaved rounds;
#   3. experiments.bench.decode greedy at three batch sizes, against the naive loop and PyTorch;
#   4. the tables (experiments.bench.report) and the raw JSON lines, into $OUT (the device
#      tool's folder that comes back) or runs/gpu_check.
#
#   bash experiments/gpu_check.sh
#
# The machine has no network: it uses the jax/flax/optax/orbax/torch already installed there and
# the repository as it is (PYTHONPATH, no pip install). Packages it lacks (ml_collections on the
# H200 image) travel as wheels in .whl/, installed to /tmp/site when present:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       ml_collections
# and name .whl in the device tool's `carry`. Record the figures in experiments/results/speed.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
source experiments/gpu_env.sh

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import jax, flax, optax, torch; print(jax.__version__, jax.devices(), \
flax.__version__, optax.__version__, torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$out/devices.txt"

timeout 240 python3 -m pytest -p no:cacheprovider -q -n 8 tests/models/test_cudnn_lstm.py \
    tests/models/test_recurrence.py tests/models/test_lstm.py tests/seq2seq/test_model.py \
    tests/test_training.py tests/test_decoding.py tests/vae/test_loss.py 2>&1 | tee "$out/tests.txt"

timeout 200 python3 -m experiments.bench.train --lstm_backends=scan,cudnn --rounds=3 \
    --min_seconds=0.5 --output="$out/bench_train.jsonl" 2> "$out/bench_train.err"

timeout 120 python3 -m experiments.bench.decode --strategies=greedy --dtypes=float32 \
    --batch_sizes=1,64,1024 --min_seconds=0.5 --output="$out/bench_decode.jsonl" \
    2> "$out/bench_decode.err"

python3 -m experiments.bench.report --train="$out/bench_train.jsonl" \
    --decode="$out/bench_decode.jsonl" > "$out/tables.md" 2>&1
cat "$out/tables.md"
