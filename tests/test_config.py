"""Tests for the config's numeric ranges (textgen_jax/config.py): every numeric field of both
families declares one, and a value outside it is a one-line error naming the flag."""

import math

import pytest

from textgen_jax import config as config_lib
from textgen_jax import seq2seq, vae
from textgen_jax.errors import TextgenError
from textgen_jax.seq2seq import config as seq2seq_config
from textgen_jax.vae import config as vae_config

FAMILIES = {"seq2seq": (seq2seq.get_config, seq2seq_config), "vae": (vae.get_config, vae_config)}


def outside(interval: str, default: float) -> list[float]:
  """Values just outside `interval`, each of the default's type where one exists."""
  integer = isinstance(default, int)
  if interval.startswith(">"):
    bound = float(interval.lstrip(">=").strip())
    below = bound - 1 if interval.startswith(">=") else bound
    return [int(below) if integer else below]
  low, high = (float(end) for end in interval[1:-1].split(","))
  values = [low - 1 if interval[0] == "[" else low, high + 1 if interval[-1] == "]" else high]
  return [int(v) for v in values] if integer else values + [math.nan]


def cases() -> list[tuple[str, str, float]]:
  found = []
  for family, (get_config, schema) in FAMILIES.items():
    for name, default in config_lib.numeric_fields(get_config()):
      found += [(family, name, value) for value in outside(schema.RANGES[name], default)]
  return found


@pytest.mark.parametrize("family", FAMILIES)
def test_every_numeric_field_declares_a_range_its_default_is_in(family):
  get_config, schema = FAMILIES[family]
  fields = dict(config_lib.numeric_fields(get_config()))
  assert set(fields) == set(schema.RANGES)
  assert all(config_lib.in_range(value, schema.RANGES[name]) for name, value in fields.items())
  schema.validate(get_config())  # The defaults pass.


@pytest.mark.parametrize("family, name, value", cases())
def test_a_value_outside_its_range_is_a_one_line_error_naming_the_flag(family, name, value):
  get_config, schema = FAMILIES[family]
  config = get_config()
  section, _, field = name.rpartition(".")
  (config[section] if section else config)[field] = value
  with pytest.raises(TextgenError) as raised:
    schema.validate(config)
  message = str(raised.value)
  assert "\n" not in message
  # The range check names the flag; a few fields (population sizes) are checked by their own
  # section's parser first, which names it too.
  assert message.startswith(f"--config.{name}"), message


@pytest.mark.parametrize(
  "interval, inside, out",
  [
    (">= 0", [0, 5.5], [-1e-9, math.inf]),
    ("> 0", [1e-9], [0, -1]),
    ("[0, 1)", [0, 0.99], [1, -0.1, math.nan]),
    ("(0, 1]", [1, 0.5], [0, 1.01]),
  ],
)
def test_in_range(interval, inside, out):
  assert all(config_lib.in_range(v, interval) for v in inside)
  assert not any(config_lib.in_range(v, interval) for v in out)


def test_the_reported_values_are_refused():
  # Issue 22's cases: a negative clip norm trained backwards, the rest were silently accepted.
  for name, value in [
    ("opt.grad_clip_norm", -1.0),
    ("data.max_examples", -5),
    ("train.label_smoothing", 1.0),
    ("opt.b2", 1.5),
    ("opt.warmup_steps", -3),
  ]:
    config = seq2seq.get_config()
    section, field = name.split(".")
    config[section][field] = value
    with pytest.raises(TextgenError, match=rf"^--config\.{name} must be"):
      seq2seq_config.validate(config)


def test_tied_embeddings_with_one_hot_inputs_is_a_one_line_error():
  config = seq2seq.get_config()
  config.model.tie_embeddings = True
  seq2seq_config.validate(config)  # Embedding inputs: fine.
  config.model.input_encoding = "one_hot"
  with pytest.raises(
    TextgenError, match=r"^--config.model.tie_embeddings=True .* embedding inputs$"
  ):
    seq2seq_config.validate(config)


def test_shared_embeddings_without_a_joint_vocabulary_is_a_one_line_error():
  config = seq2seq.get_config()
  config.model.share_embeddings = True
  with pytest.raises(TextgenError, match=r"^--config.model.share_embeddings=True .*=joint$"):
    seq2seq_config.validate(config)  # Word vocabularies: one per side.
  config.data.tokenizer = "sentencepiece"
  seq2seq_config.validate(config)
  config.data.subword_vocabularies = "separate"  # One SentencePiece model per side.
  with pytest.raises(TextgenError, match=r"^--config.model.share_embeddings=True .*=joint$"):
    seq2seq_config.validate(config)
  config.data.subword_vocabularies = "both"
  config.model.share_embeddings = False
  with pytest.raises(TextgenError, match=r"^--config.data.subword_vocabularies='both': choose"):
    seq2seq_config.validate(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_subword_sampling_needs_subwords_and_a_shared_data_order(family):
  get_config, schema = FAMILIES[family]
  config = get_config()
  config.data.subword_sampling = 0.1
  with pytest.raises(TextgenError, match=r"^--config.data.subword_sampling=0.1 .*=sentencepiece$"):
    schema.validate(config)
  config.data.tokenizer = "sentencepiece"
  schema.validate(config)
  config.population.data_order = "member"
  with pytest.raises(TextgenError, match=r"^--config.data.subword_sampling=0.1 with .*=shared$"):
    schema.validate(config)
  config.population.data_order = "shared"
  config.data.subword_sampling = 1.5
  with pytest.raises(TextgenError, match=r"data.subword_sampling"):
    schema.validate(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unknown_cell_and_cudnn_with_the_gru_are_one_line_errors(family):
  get_config, schema = FAMILIES[family]
  config = get_config()
  config.model.cell = "gru"
  schema.validate(config)  # The scan runs the GRU anywhere.
  config.model.lstm_backend = "cudnn"
  with pytest.raises(TextgenError, match=r"^--config.model.lstm_backend=cudnn: .*cell=gru\)"):
    schema.validate(config)
  config.model.lstm_backend = "auto"
  config.model.cell = "rnn"
  with pytest.raises(TextgenError, match=r"^--config.model.cell='rnn': choose lstm or gru$"):
    schema.validate(config)
