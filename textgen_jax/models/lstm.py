"""LSTM layers for teacher-forced passes and for one-token decoding steps.

Shape key: B batch, T time, E input features, H hidden units, G = 4H fused gates.

The input projection of every timestep is one [B*T, E] x [E, G] matmul hoisted out of the time
loop; only the recurrent [B, H] x [H, G] matmul runs inside `lax.scan`. Gates are fused into
one kernel (i, f, g, o). Matmuls may run in bfloat16 while the cell state stays float32.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, jax.Array]  # (cell c_BxH, hidden h_BxH), always float32.


def forget_bias_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """Zero biases except +1 on the forget gate, so early training remembers (Jozefowicz 2015)."""
  del key
  hidden_size = shape[-1] // 4
  return jnp.zeros(shape, dtype).at[hidden_size:2 * hidden_size].set(1.0)


def zero_carry(batch_size: int, hidden_size: int) -> Carry:
  zeros_BxH = jnp.zeros((batch_size, hidden_size), jnp.float32)
  return zeros_BxH, zeros_BxH


def reverse_padded(x_BxTx_: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """Reverses each sequence within its length; padding stays at the end."""
  time_steps = x_BxTx_.shape[1]
  t_T = jnp.arange(time_steps)
  source_BxT = jnp.where(t_T[None, :] < lengths_B[:, None], lengths_B[:, None] - 1 - t_T[None, :],
                         t_T[None, :])
  return jnp.take_along_axis(x_BxTx_, source_BxT.reshape(source_BxT.shape + (1,) *
                                                         (x_BxTx_.ndim - 2)), axis=1)


class LSTMLayer(nn.Module):
  """One LSTM layer with a hoisted input projection and a fused-gate recurrent kernel."""

  hidden_size: int
  dtype: Any = jnp.float32  # matmul dtype; the cell state is float32 regardless.
  scan_unroll: int = 1  # Timesteps per iteration of the compiled time loop.

  def setup(self):
    self.input_projection = nn.Dense(4 * self.hidden_size, dtype=self.dtype,
                                     bias_init=forget_bias_init, name="input_projection")
    self.recurrent_kernel = self.param("recurrent_kernel", nn.initializers.orthogonal(),
                                       (self.hidden_size, 4 * self.hidden_size))

  def _cell(self, carry: Carry, gates_x_BxG: jax.Array) -> Carry:
    c_BxH, h_BxH = carry
    gates_BxG = gates_x_BxG.astype(jnp.float32) + jnp.dot(
        h_BxH.astype(self.dtype), self.recurrent_kernel.astype(self.dtype),
        preferred_element_type=jnp.float32)
    i, f, g, o = jnp.split(gates_BxG, 4, axis=-1)
    c_BxH = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_BxH = jax.nn.sigmoid(o) * jnp.tanh(c_BxH)
    return c_BxH, h_BxH

  def __call__(self, x_BxTxE: jax.Array, carry: Carry,
               mask_BxT: jax.Array | None = None) -> tuple[Carry, jax.Array]:
    """Runs over all timesteps; where mask is False the carry is held, not updated.

    Holding the carry makes the final carry the state after each sequence's last real token.
    Returns (final carry, hidden states h_BxTxH).
    """
    gates_x_TxBxG = jnp.swapaxes(self.input_projection(x_BxTxE), 0, 1)
    if mask_BxT is None:
      mask_BxT = jnp.ones(x_BxTxE.shape[:2], bool)

    def time_step(carry, inputs):
      gates_x_BxG, mask_B = inputs
      new_carry = self._cell(carry, gates_x_BxG)
      carry = jax.tree.map(lambda new, old: jnp.where(mask_B[:, None], new, old), new_carry, carry)
      return carry, carry[1]

    carry, h_TxBxH = jax.lax.scan(time_step, carry, (gates_x_TxBxG, jnp.swapaxes(mask_BxT, 0, 1)),
                                  unroll=self.scan_unroll)
    return carry, jnp.swapaxes(h_TxBxH, 0, 1)

  def step(self, carry: Carry, x_BxE: jax.Array | None = None,
           gates_x_BxG: jax.Array | None = None) -> Carry:
    """One timestep, for decoding; returns the new carry (its h is the output).

    Takes the input x, or its projection gates_x = input_projection(x) when the caller has
    precomputed it (a decoder whose inputs come from a small vocabulary looks it up in a table).
    """
    if gates_x_BxG is None:
      gates_x_BxG = self.input_projection(x_BxE)
    return self._cell(carry, gates_x_BxG)


class StackedLSTM(nn.Module):
  """num_layers LSTM layers, dropout between them, optionally bidirectional."""

  hidden_size: int
  num_layers: int = 1
  dropout_rate: float = 0.0
  bidirectional: bool = False
  dtype: Any = jnp.float32
  scan_unroll: int = 1

  def setup(self):
    self.forward_layers = [LSTMLayer(self.hidden_size, self.dtype, self.scan_unroll,
                                     name=f"forward_{i}") for i in range(self.num_layers)]
    if self.bidirectional:
      self.backward_layers = [LSTMLayer(self.hidden_size, self.dtype, self.scan_unroll,
                                        name=f"backward_{i}") for i in range(self.num_layers)]
    self.dropout = nn.Dropout(self.dropout_rate)

  def __call__(self, x_BxTxE: jax.Array, lengths_B: jax.Array,
               initial_carries: Sequence[Carry] | None = None,
               deterministic: bool = True) -> tuple[list[Carry], jax.Array]:
    """Returns each layer's final carry (at each sequence's true end) and the top outputs.

    A bidirectional layer's carry concatenates forward and backward: [B, 2H] each.
    """
    batch_size, time_steps = x_BxTxE.shape[:2]
    mask_BxT = jnp.arange(time_steps)[None, :] < lengths_B[:, None]
    if initial_carries is None:
      initial_carries = [zero_carry(batch_size, self.hidden_size)] * self.num_layers
    final_carries = []
    for i in range(self.num_layers):
      if i > 0:
        x_BxTxE = self.dropout(x_BxTxE, deterministic=deterministic)
      carry, out_BxTxH = self.forward_layers[i](x_BxTxE, initial_carries[i], mask_BxT)
      if self.bidirectional:
        back_carry, back_out_BxTxH = self.backward_layers[i](
            reverse_padded(x_BxTxE, lengths_B), zero_carry(batch_size, self.hidden_size), mask_BxT)
        carry = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), carry, back_carry)
        out_BxTxH = jnp.concatenate([out_BxTxH, reverse_padded(back_out_BxTxH, lengths_B)], -1)
      final_carries.append(carry)
      x_BxTxE = out_BxTxH
    return final_carries, x_BxTxE

  def step(self, carries: Sequence[Carry], x_BxE: jax.Array | None = None,
           first_gates_x_BxG: jax.Array | None = None) -> tuple[list[Carry], jax.Array]:
    """One timestep through all layers (unidirectional only; no dropout at decode time).

    first_gates_x_BxG, if given, replaces the first layer's input projection of x_BxE.
    """
    new_carries = []
    for i, (layer, carry) in enumerate(zip(self.forward_layers, carries)):
      carry = layer.step(carry, x_BxE, first_gates_x_BxG if i == 0 else None)
      new_carries.append(carry)
      x_BxE = carry[1]
    return new_carries, x_BxE
