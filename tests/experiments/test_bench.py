"""The benchmarks (python -m experiments.bench.*) run end to end at a tiny size; their output
format, not their speed."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.bench import shapes
from tests.helpers import (
  REPO_ROOT,
  SENTENCES,
  make_pairs,
  tiny_config,
  tiny_vae_config,
  write_text,
  write_tsv,
)
from textgen_jax import seq2seq, vae

pytestmark = pytest.mark.slow  # Subprocesses: the fast subset (-m 'not slow') skips them.


TINY = [
  "--vocab_size=16",
  "--embed_dim=8",
  "--hidden_size=8",
  "--latent_size=4",
  "--dtypes=float32",
  "--min_seconds=0",
  "--min_calls=1",
]


def run_module(benchmark, *flags, timeout=300):
  """`python -m experiments.bench.<benchmark> flags...` from the repository root."""
  return subprocess.run(
    [sys.executable, "-m", f"experiments.bench.{benchmark}", *flags],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    timeout=timeout,
    check=False,
  )


def run_bench(benchmark, *flags):
  """The JSON lines (and stderr) of a tiny run of benchmark "decode" or "train"."""
  result = run_module(benchmark, *TINY, *flags)
  assert result.returncode == 0, result.stderr
  return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_bench_decode_prints_one_json_line_per_measurement_and_a_plot(tmp_path):
  plot, output = tmp_path / "decode.png", tmp_path / "decode.jsonl"
  records, _ = run_bench(
    "decode",
    "--max_len=5",
    "--batch_sizes=1,3",
    "--strategies=greedy,beam",
    "--baselines=naive",
    "--rounds=2",
    f"--plot={plot}",
    f"--output={output}",
  )
  assert [json.loads(line) for line in output.read_text().splitlines()] == records
  roofline, decode = records[0], records[1:]
  assert roofline["bench"] == "roofline" and roofline["matmul_flops_per_s_float32"] > 0
  assert roofline["memory_bytes_per_s"] > 0
  # Two rounds x three shapes x (greedy: compiled + naive, beam: compiled) x two batch sizes,
  # every decoder timed in round 0 before any in round 1.
  assert len(decode) == 2 * 3 * 3 * 2
  assert [r["round"] for r in decode] == [0] * 18 + [1] * 18
  assert {(r["model"], r["strategy"], r["implementation"]) for r in decode} == {
    (model, strategy, implementation)
    for model in ("seq2seq", "vae", "seq2seq_attention")
    for strategy, implementation in (
      ("greedy", "compiled"),
      ("greedy", "naive"),
      ("beam", "compiled"),
    )
  }
  for r in decode:
    assert r["tokens_per_s"] > 0 and 0 < r["latency_p50_s"] <= r["latency_p90_s"]
    rows = r["batch_size"] * (5 if r["strategy"] == "beam" else 1)
    assert r["tokens_per_call"] == rows * 5  # EOS pushed down: every row decodes max_len.
    if r["implementation"] == "compiled":
      assert r["compile_s"] > 0 and r["roofline_fraction"] > 0
      assert r["roofline_tokens_per_s"] == pytest.approx(
        r["tokens_per_s"] / r["roofline_fraction"], rel=1e-3
      )
    if (r["strategy"], r["implementation"]) == ("greedy", "compiled"):
      naive = [
        n
        for n in decode
        if (n["model"], n["batch_size"], n["round"], n["implementation"])
        == (r["model"], r["batch_size"], r["round"], "naive")
      ][0]
      assert r["speedup_vs_naive"] == pytest.approx(
        r["tokens_per_s"] / naive["tokens_per_s"], rel=1e-3
      )
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_decoders_of_the_benchmark_decode_every_token():
  """The JAX and PyTorch attention decoders bench.decode times: the same sizes, max_len tokens
  per row (EOS pushed down), the attention's FLOPs counted on top of the plain decoder's."""
  torch_reference = pytest.importorskip("experiments.bench.torch_reference")
  from experiments.bench import decoders  # pylint: disable=import-outside-toplevel
  from textgen_jax.decoding import DecodeSettings  # pylint: disable=import-outside-toplevel

  sizes = dict(
    shapes.DECODE_SHAPES["seq2seq_attention"], vocab_size=16, embed_dim=8, hidden_size=8, max_len=5
  )
  attention = decoders.seq2seq_decoder(sizes, "float32", None, attention="general")
  plain = decoders.seq2seq_decoder(sizes, "float32", None)
  assert attention.name == "seq2seq_attention" and plain.name == "seq2seq"
  assert (
    attention.flops_per_token
    == plain.flops_per_token + shapes.attention_step_costs(8, sizes["source_length"], 4)[0]
  )
  decode = decoders.compiled_decode_fn(attention, 3, DecodeSettings("greedy"))
  tokens = decode(attention.weights, attention.start(3, jax.random.key(0)), None)
  assert tokens.shape == (3, 5) and np.all(np.asarray(tokens) >= 3)  # Never PAD, BOS or EOS.
  torch_decoder = decoders.torch_decoder(torch_reference, attention)
  assert isinstance(torch_decoder, torch_reference.AttentionDecoder)
  torch_tokens = torch_reference.decode(torch_decoder, 3, 5)
  assert tuple(torch_tokens.shape) == (3, 5) and bool((torch_tokens >= 3).all())


def test_bench_decode_bad_flags_are_one_line_errors():
  for flag, message in (
    ("--strategies=greedy,fast", "--strategies"),
    ("--batch_sizes=0", "--batch_sizes"),
    ("--shapes=huge", "--shapes"),
  ):
    result = run_module("decode", *TINY, flag)
    assert result.returncode == 2 and result.stderr.startswith("error: " + message), result.stderr


def test_bench_train_times_jax_and_plain_flax_in_rounds_with_round_by_round_ratios():
  records, _ = run_bench("train", "--length=6", "--batch_sizes=2", "--torch=false", "--rounds=3")
  assert records[0]["bench"] == "roofline" and records[0]["cpu"]
  train = records[1:]
  assert [(r["model"], r["implementation"]) for r in train] == [
    ("seq2seq", "jax"),
    ("seq2seq", "flax"),
    ("vae", "jax"),
    ("vae", "flax"),
  ]
  for r in train:
    assert r["tokens"] == 2 * 6 and r["compile_s"] > 0 and len(r["rounds_tokens_per_s"]) == 3
    assert r["tokens_per_s"] == pytest.approx(float(np.median(r["rounds_tokens_per_s"])))
    assert r["tokens_per_s"] == pytest.approx(2 * 6 / r["step_s"], rel=1e-3)
    assert 0 < r["roofline_fraction"] < 1
  for jax_row, flax_row in ((train[0], train[1]), (train[2], train[3])):
    ratios = [
      a / b for a, b in zip(jax_row["rounds_tokens_per_s"], flax_row["rounds_tokens_per_s"])
    ]
    assert jax_row["lstm_backend"] == "scan"
    assert jax_row["speedup_vs_flax"] == pytest.approx(float(np.median(ratios)), rel=1e-4)
    assert jax_row["speedup_vs_flax_range"] == pytest.approx([min(ratios), max(ratios)])


def test_bench_train_compares_each_cell_with_its_own_baselines():
  records, _ = run_bench(
    "train",
    "--shapes=seq2seq",
    "--length=6",
    "--batch_sizes=2",
    "--torch=false",
    "--rounds=2",
    "--cells=lstm,gru",
  )
  train = {(r["implementation"], r["cell"]): r for r in records[1:]}
  assert set(train) == {("jax", "lstm"), ("jax", "gru"), ("flax", "lstm"), ("flax", "gru")}
  gru, flax_gru = train["jax", "gru"], train["flax", "gru"]
  ratios = [a / b for a, b in zip(gru["rounds_tokens_per_s"], flax_gru["rounds_tokens_per_s"])]
  assert gru["speedup_vs_flax"] == pytest.approx(float(np.median(ratios)), rel=1e-4)
  lstm = train["jax", "lstm"]["rounds_tokens_per_s"]
  ratios = [a / b for a, b in zip(gru["rounds_tokens_per_s"], lstm)]
  assert gru["speedup_vs_lstm"] == pytest.approx(float(np.median(ratios)), rel=1e-4)
  # Three gates to four: the GRU's dense FLOPs per token are fewer.
  assert gru["flops_per_token"] < train["jax", "lstm"]["flops_per_token"]


def test_bench_train_workloads_are_the_issue_shapes():
  """S and V as stated in the README and speed.md (a typo here would move every figure)."""
  assert shapes.WORKLOADS["seq2seq"] == dict(
    source_vocab_size=80,
    vocab_size=100,
    embed_dim=256,
    hidden_size=256,
    latent_size=0,
    source_length=16,
    length=60,
    batch_size=64,
  )
  assert shapes.WORKLOADS["vae"] == dict(
    source_vocab_size=10_000,
    vocab_size=10_000,
    embed_dim=256,
    hidden_size=512,
    latent_size=32,
    source_length=40,
    length=40,
    batch_size=32,
  )
  # Forward multiply-adds per target token: S's encoder reads 16 source tokens per 60 targets.
  s = shapes.forward_macs_per_token(shapes.WORKLOADS["seq2seq"])
  assert s == pytest.approx(16 / 60 * 2 * 256 * 1024 + 2 * 256 * 1024 + 256 * 100)


def test_bench_train_cudnn_on_a_cpu_is_a_one_line_error():
  result = run_module("train", *TINY, "--lstm_backends=cudnn")
  assert result.returncode == 2
  assert result.stderr.startswith("error: --lstm_backends=cudnn: cuDNN's LSTM needs a CUDA GPU")
  assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("family", ["seq2seq", "vae"])
def test_bench_decode_runs_on_a_trained_workdir(tmp_path, family):
  """Its real vocabulary and sizes; EOS is not pushed down, so tokens are counted as generated."""
  workdir = str(tmp_path / "workdir")
  if family == "seq2seq":
    config = tiny_config(write_tsv(tmp_path / "pairs.tsv", make_pairs(40)), train__num_steps=5)
    seq2seq.train_and_evaluate(config, workdir)
  else:
    corpus = write_text(tmp_path / "sentences.txt", "\n".join(SENTENCES) + "\n")
    vae.train_and_evaluate(tiny_vae_config(corpus, train__num_steps=5), workdir)
  records, _ = subprocess_records(f"--workdir={workdir}")
  decode = records[1:]
  assert [r["implementation"] for r in decode] == ["compiled", "naive"]
  assert {r["model"] for r in decode} == {"seq2seq" if family == "seq2seq" else "vae"}
  for r in decode:
    assert 0 < r["tokens_per_call"] <= 2 * r["max_len"] and r["tokens_per_s"] > 0


def subprocess_records(*flags):
  result = run_module(
    "decode",
    "--dtypes=float32",
    "--min_seconds=0",
    "--min_calls=1",
    "--batch_sizes=2",
    "--strategies=greedy",
    "--baselines=naive",
    *flags,
  )
  assert result.returncode == 0, result.stderr
  return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_bench_population_times_vmapped_members_against_sequential_runs():
  result = run_module(
    "population",
    "--shapes=study",
    "--members=1,2",
    "--rounds=2",
    "--min_seconds=0",
    "--min_calls=1",
    "--torch=false",
  )
  assert result.returncode == 0, result.stderr
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert "matmul_flops_per_s_float32" in records[0]
  timed = records[1:]
  assert sorted((r["num_members"], r["implementation"]) for r in timed) == [
    (1, "sequential"),
    (1, "vmapped"),
    (2, "sequential"),
    (2, "vmapped"),
  ]
  for r in timed:
    assert r["tokens"] == r["num_members"] * r["batch_size"] * r["length"]
    assert len(r["rounds_tokens_per_s"]) == 2 and r["tokens_per_s"] > 0
    assert 0 < r["roofline_fraction"] < 1
    other = "sequential" if r["implementation"] == "vmapped" else "vmapped"
    low, high = r[f"speedup_vs_{other}_range"]
    assert low <= r[f"speedup_vs_{other}"] <= high


def test_bench_population_rejects_bad_member_counts():
  result = run_module("population", "--members=0")
  assert result.returncode == 2 and "--members=0: each must be at least 1" in result.stderr
