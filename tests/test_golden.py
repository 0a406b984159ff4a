"""One golden train step per model family: a fixed tiny batch, its loss and checksums of the
parameters after one Adam step (with dropout, so the dropout stream is pinned too).

These numbers change when the math changes: a new initialisation, loss, cell or optimizer
setting. Update them only for a change that is meant to alter training (say which in the commit),
after the invariant tests (tests/models/test_recurrence.py, tests/seq2seq/test_model.py) pass; a refactor or a speed
change must leave them as they are. Tolerances allow float32 rounding across CPUs, not more.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax import training
from textgen_jax import seq2seq
from textgen_jax.vae import loss as vae_loss
from textgen_jax.seq2seq.model import Seq2Seq, Seq2SeqConfig
from textgen_jax.vae.model import SentenceVAE, SentenceVAEConfig
from textgen_jax.seq2seq.loss import loss as seq2seq_loss

# Two real rows of lengths 5 and 3 and an all-PAD filler row; targets end in EOS (id 2).
TOKENS = np.array([[4, 7, 9, 5, 2, 0], [8, 6, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.int32)
BATCH = dict(
  inputs=jnp.asarray(TOKENS),
  input_lengths=jnp.array([5, 3, 0], jnp.int32),
  targets=jnp.asarray(TOKENS),
)

GOLDEN = {
  # family[_cell]: (summed NLL of the first step's batch, sum of |params| and of params**2 after it)
  "seq2seq": (20.018263, 623.10211, 229.23547),
  # Redrawn when the VAE's output layer took seq2seq's name, output_layer (flax seeds each
  # module's initialisation from its name); it was (19.918434, 703.58539, 246.41728).
  "vae": (20.264269, 704.81677, 247.00815),
  # The GRU cell (model.cell=gru), recorded when it was added, after its backward pass matched
  # autodiff of the plain scan and its step matched flax's nn.GRUCell (tests/models).
  "seq2seq_gru": (20.085272, 488.42892, 162.47069),
  "vae_gru": (20.093237, 562.40564, 181.44472),
}


def first_step(name):
  family, _, cell = name.partition("_")
  cell = cell or "lstm"
  if family == "seq2seq":
    model = Seq2Seq(Seq2SeqConfig(11, 11, embed_dim=8, hidden_size=16, dropout_rate=0.1, cell=cell))
    loss_fn = functools.partial(seq2seq_loss, model=model)
  else:
    model = SentenceVAE(
      SentenceVAEConfig(
        11,
        embed_dim=8,
        hidden_size=16,
        latent_size=4,
        embedding_dropout=0.1,
        output_dropout=0.1,
        cell=cell,
      )
    )
    loss_fn = functools.partial(
      vae_loss.sentence_loss,
      model=model,
      objective=vae_loss.VAEObjective(kl_schedule="constant"),
    )
  params = model.init(jax.random.key(0), BATCH["inputs"], BATCH["input_lengths"], BATCH["targets"])
  opt = seq2seq.get_config().opt
  opt.warmup_steps = 0
  state = training.create_train_state(model.apply, params, training.make_optimizer(opt, 10))
  state, sums = training.jit_train_step(loss_fn)(state, BATCH, jax.random.key(1))
  leaves = jax.tree.leaves(state.params)
  return (
    float(sums["nll_sum"]),
    float(sum(jnp.abs(x).sum() for x in leaves)),
    float(sum(jnp.square(x).sum() for x in leaves)),
  )


@pytest.mark.parametrize("family", list(GOLDEN))
def test_golden_train_step(family):
  measured = first_step(family)
  np.testing.assert_allclose(
    measured,
    GOLDEN[family],
    rtol=2e-5,
    err_msg=(
      f"{family}: the first train step changed; measured {measured}. If the change is meant to "
      "alter training, update GOLDEN (see the module docstring)."
    ),
  )
