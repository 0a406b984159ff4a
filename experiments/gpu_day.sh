#!/usr/bin/env bash
# A GPU day in one script, sized for one H200 loan (15 minutes of device time; this script
# keeps to 12 by giving each part a time limit):
#   1. gpu_check.sh's tests (cuDNN's LSTM against the scan) and its train/decode benchmarks;
#   2. the population benchmark at the study shape (embedding 64, hidden 64, batch 16) with
#      N = 1, 8, 64 members, where a vmapped population should pay on a GPU;
#   3. the Penn Treebank study at the literature's budget (experiments/configs/ptb_full.py:lm,
#      ptb_collapse_study.py's recipes as one vmapped population, He et al.'s aggressive
#      training), each training under a time limit (they resume exactly: a second GPU day goes
#      on from the checkpoints in $OUT/runs), then the 500-sample test evaluation of each;
#   4. the tables into $OUT (the device tool's folder that comes back) or runs/gpu_day.
#
#   bash experiments/gpu_day.sh                  # on the GPU machine
#   GPU_DAY_TOY=1 bash experiments/gpu_day.sh    # every step at toy size, on a CPU (CI runs it)
#
# The machine has no network: packages it lacks travel as wheels in .whl/ (see gpu_check.sh).
# Penn Treebank is research-only and never committed: carry it as an ignored folder
#   mkdir -p .ptb && cp ../shared/data/ptb/ptb.*.txt .ptb/ && echo /.ptb/ >> .git/info/exclude
# and name .ptb (and .whl) in the device tool's `carry`; PTB_DIR defaults to .ptb.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_day}
toy=${GPU_DAY_TOY:-0}
mkdir -p "$out"
source experiments/gpu_env.sh
py=${PYTHON:-python3}
: > "$out/summary.txt"

# part NAME SECONDS COMMAND...: runs it under a limit, its output in $out/NAME.log, and records
# its exit code (124: the limit was reached; a training then resumes on the next GPU day) and
# its wall seconds.
part() {
  local name=$1 limit=$2 start=$SECONDS code
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  code=$?
  echo "$name $code $((SECONDS - start))" | tee -a "$out/summary.txt"
}

if [ "$toy" = 1 ]; then
  # Toy sizes: a generated corpus, a few steps, one round; what is checked is that every part
  # runs and the tables come out, not any figure.
  export PTB_DIR="$out/toy_ptb"
  mkdir -p "$PTB_DIR"
  "$py" - "$PTB_DIR" <<'EOF'
import random, sys
words = "the a cat dog sat ran on in park mat bird sang song we ate bread tea sun hills".split()
rng = random.Random(0)
for split, n in (("train", 96), ("valid", 24), ("test", 24)):
  with open(f"{sys.argv[1]}/ptb.{split}.txt", "w") as f:
    f.writelines(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n"
                 for _ in range(n))
EOF
  # The command line is checked, not the tests again (the main suite runs them).
  tests=(tests/models/test_cudnn_lstm.py -k "packed or strict" -n 0 --collect-only)
  bench=(--rounds=1 --min_seconds=0 --min_calls=1)
  train_sizes=(--shapes=seq2seq --embed_dim=16 --hidden_size=16 --vocab_size=50 --length=8
               --batch_sizes=4)
  decode_sizes=(--shapes=seq2seq --batch_sizes=1,4 --embed_dim=16 --hidden_size=16
                --vocab_size=50 --max_len=8)
  members=2
  study=(--config.train.num_steps=4 --config.train.eval_every=4 --config.train.checkpoint_every=2
         --config.train.log_every=2 --config.model.embed_dim=16 --config.model.hidden_size=16
         --config.model.latent_size=4 --config.data.batch_size=8 --config.train.eval_num_samples=2
         --config.train.eval_max_sentences=8 --config.train.num_examples_to_print=0)
  num_samples=4
  limits=(120 120 120 120 240 60)  # tests, bench, decode, population, each training, each eval
else
  export PTB_DIR=${PTB_DIR:-.ptb}
  tests=(tests/models/test_cudnn_lstm.py tests/models/test_recurrence.py tests/models/test_lstm.py
         tests/seq2seq/test_model.py tests/test_training.py tests/test_decoding.py
         tests/vae/test_loss.py)
  bench=(--rounds=3 --min_seconds=0.5)
  train_sizes=()
  decode_sizes=(--batch_sizes=1,64,1024)
  members=1,8,64
  study=()
  num_samples=500
  limits=(150 120 60 90 100 40)
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$py" -c "import jax, flax, optax; print(jax.__version__, jax.devices(), flax.__version__, \
optax.__version__)"
} 2>&1 | tee "$out/devices.txt"

# 1. Tests and speed, as gpu_check.sh.
part tests "${limits[0]}" "$py" -m pytest -p no:cacheprovider -q -n auto "${tests[@]}"
part bench_train "${limits[1]}" "$py" -m experiments.bench.train --lstm_backends=scan,auto \
    --torch=$( [ "$toy" = 1 ] && echo false || echo true ) "${bench[@]}" "${train_sizes[@]}" \
    --output="$out/bench_train.jsonl"
part bench_decode "${limits[2]}" "$py" -m experiments.bench.decode --strategies=greedy \
    --dtypes=float32 --baselines=naive "${bench[@]}" "${decode_sizes[@]}" \
    --output="$out/bench_decode.jsonl"
# 2. Populations at the study shape.
part bench_population "${limits[3]}" "$py" -m experiments.bench.population --shapes=study \
    --members="$members" --torch=false "${bench[@]}" --output="$out/bench_population.jsonl"

# 3. The PTB study: each training under its limit, then the test evaluation of what it reached.
train() {
  local name=$1
  shift
  part "train_$name" "${limits[4]}" "$py" experiments/train_vae.py --workdir="$out/runs/$name" \
      "$@" "${study[@]}"
}
train lm --config=experiments/configs/ptb_full.py:lm
train population --config=experiments/configs/ptb_collapse_study.py \
    --config.opt.schedule=plateau --config.train.held_out_metric=valid_neg_elbo
train aggressive --config=experiments/configs/ptb_full.py:vae --config.vae.aggressive=True
: > "$out/ptb_test.jsonl"
for name in lm population aggressive; do
  part "test_$name" "${limits[5]}" "$py" experiments/evaluate_vae.py --workdir="$out/runs/$name" \
      --data_path="$PTB_DIR/ptb.test.txt" --num_samples="$num_samples" \
      --output="$out/ptb_test.jsonl"
done

# 4. The tables.
"$py" -m experiments.bench.report --train="$out/bench_train.jsonl" \
    --decode="$out/bench_decode.jsonl" > "$out/tables.md" 2>&1
{
  echo
  echo "## Populations at the study shape"
  cat "$out/bench_population.jsonl" 2>/dev/null
  echo
  echo "## Penn Treebank test (one JSON line per run: lm, population's best member, aggressive)"
  cat "$out/ptb_test.jsonl"
  echo
  echo "## Parts (exit code, 124: stopped at its time limit; wall seconds)"
  cat "$out/summary.txt"
} >> "$out/tables.md"
cat "$out/tables.md"
