"""Every config in experiments/configs/ (each variant) passes its family's validation, and the
README's main run (fr_en.py) trains and translates raw text."""

import importlib.util
import pathlib

import pytest

from textgen_jax import families, seq2seq
from textgen_jax.data.tokenizers import SentencePieceTokenizer

CONFIGS = pathlib.Path(__file__).parents[2] / "experiments" / "configs"


def load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f"configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def configs():
  for path in sorted(CONFIGS.glob("*.py")):
    module = load(path)
    variants = getattr(module, "VARIANTS", None) or getattr(module, "KINDS", None)
    for variant in variants or [None]:
      yield pytest.param(path, variant, id=path.stem + (f":{variant}" if variant else ""))


@pytest.mark.parametrize("path,variant", list(configs()))
def test_every_experiment_config_validates(path, variant):
  module = load(path)
  config = module.get_config() if variant is None else module.get_config(variant)
  families.get(config.family).validate(config)


@pytest.mark.slow
def test_the_readme_main_run_is_subwords_with_attention_and_one_table(tmp_path):
  config = load(CONFIGS / "fr_en.py").get_config()
  config.data.max_examples = 1500
  config.data.vocab_size = 600
  config.model.embed_dim = config.model.hidden_size = 16
  config.train.num_steps = 4
  config.train.eval_every = config.train.checkpoint_every = 4
  config.train.max_greedy_eval_pairs = 8
  translator = seq2seq.train_and_evaluate(config, str(tmp_path / "fr_en"))
  assert isinstance(translator.source_tokenizer, SentencePieceTokenizer)
  params = translator.params["params"]
  assert "source_inputs" not in params and "kernel" not in params["output_layer"]
  assert "attention" in str(jax_paths(params))
  (output,) = translator.translate(["Tom has 48213 dollars."])
  assert isinstance(output, str) and "▁" not in output


def jax_paths(tree, prefix=""):
  return [prefix + k for k in tree] + [
    p for k, v in tree.items() if isinstance(v, dict) for p in jax_paths(v, prefix + k + "/")
  ]
