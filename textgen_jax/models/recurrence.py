"""The LSTM and GRU time loops with hand-written backward passes.

Shape key: T time, B batch, H hidden units, G fused gates: 4H (i, f, g, o) for the LSTM, 3H
(r, z, n) for the GRU.

`lstm_recurrence` runs h_t, c_t = cell(gates_x_t + h_{t-1} W, c_{t-1}) under `lax.scan`. Its
value equals the plain scan's; its gradient is the same math arranged for speed (measured in
experiments/results/speed.md). Differentiating the plain scan accumulates dW += h_{t-1}^T dgates_t
inside the reverse loop: one [H, B] x [B, G] matmul per timestep with only B rows of depth.
Here the reverse loop computes only dh_{t-1} = dgates_t W^T and stacks dgates; dW is one
[H, T*B] x [T*B, G] matmul after it, and the input projection's gradients (outside, by autodiff)
see the stacked dgates too. The forward pass keeps the gate activations and cell states, so
the backward pass recomputes nothing but tanh(c_t).

Where mask_t is False the carry is held (new = old), so the final carry is the state after each
sequence's last real token and the gradient passes through held steps unchanged.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

# A layer's state, float32, its output h last: (cell c_BxH, hidden h_BxH) for the LSTM, (h_BxH,)
# for the GRU.
Carry = tuple[jax.Array, ...]


def _gate_scale(hidden: int) -> jax.Array:
  """1 for the sigmoid gates i, f, o and 2 for g: tanh(x) = 2 sigmoid(2x) - 1 (see lstm_cell)."""
  return jnp.repeat(jnp.array([1.0, 1.0, 2.0, 1.0], jnp.float32), hidden)


def lstm_cell(gates_BxG: jax.Array, c_BxH: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(new c, new h, s) from pre-activation gates; s = sigmoid(i, f, 2g, o), so tanh(g) = 2s-1.

  One sigmoid over all four gates is one elementwise pass; separate sigmoids and a tanh on the
  four slices ran 3-4x slower on XLA:CPU (experiments/results/speed.md).
  """
  s_BxG = jax.nn.sigmoid(gates_BxG * _gate_scale(c_BxH.shape[-1])[None, :])
  i, f, s_g, o = jnp.split(s_BxG, 4, axis=-1)
  c_BxH = f * c_BxH + i * (2.0 * s_g - 1.0)
  return c_BxH, o * jnp.tanh(c_BxH), s_BxG


def lstm_step(
  dtype: Any, gates_x_BxG: jax.Array, kernel_HxG: jax.Array, carry: Carry
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One timestep from input gates: (new c, new h, s) as in lstm_cell; the recurrent matmul in
  dtype with float32 accumulation. The decoding step and the time loop share it."""
  c_BxH, h_BxH = carry
  gates_BxG = gates_x_BxG.astype(jnp.float32) + jnp.dot(
    h_BxH.astype(dtype), kernel_HxG.astype(dtype), preferred_element_type=jnp.float32
  )
  return lstm_cell(gates_BxG, c_BxH)


def _forward(
  dtype: Any,
  unroll: int,
  gates_x_TxBxG: jax.Array,
  kernel_HxG: jax.Array,
  carry: Carry,
  mask_TxB: jax.Array | None,
):
  """The time loop; returns (final carry, h_TxBxH) and the residuals for the backward pass."""
  kernel_HxG = kernel_HxG.astype(dtype)

  def time_step(carry, inputs):
    c_BxH, h_BxH = carry
    gates_x_BxG, mask_B = inputs
    new_c_BxH, new_h_BxH, act_BxG = lstm_step(dtype, gates_x_BxG, kernel_HxG, carry)
    if mask_B is not None:
      new_c_BxH = jnp.where(mask_B[:, None], new_c_BxH, c_BxH)
      new_h_BxH = jnp.where(mask_B[:, None], new_h_BxH, h_BxH)
    return (new_c_BxH, new_h_BxH), (new_c_BxH, new_h_BxH, act_BxG)

  final, (c_TxBxH, h_TxBxH, act_TxBxG) = jax.lax.scan(
    time_step, carry, (gates_x_TxBxG, mask_TxB), unroll=unroll
  )
  return (final, h_TxBxH), (c_TxBxH, h_TxBxH, act_TxBxG)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def lstm_recurrence(
  dtype: Any,
  unroll: int,
  gates_x_TxBxG: jax.Array,
  kernel_HxG: jax.Array,
  carry: Carry,
  mask_TxB: jax.Array | None = None,
) -> tuple[Carry, jax.Array]:
  """(final carry, h_TxBxH) of the LSTM over precomputed input gates gates_x = x W_x + b.

  dtype: of the recurrent matmul (float32 accumulation; the cell state is float32).
  mask_TxB: False where the carry is held (padding); None when every step is real.
  """
  return _forward(dtype, unroll, gates_x_TxBxG, kernel_HxG, carry, mask_TxB)[0]


def _recurrence_fwd(dtype, unroll, gates_x_TxBxG, kernel_HxG, carry, mask_TxB):
  outputs, (c_TxBxH, h_TxBxH, act_TxBxG) = _forward(
    dtype, unroll, gates_x_TxBxG, kernel_HxG, carry, mask_TxB
  )
  # An empty array carries the input gates' dtype (residuals must be arrays).
  dtype_marker = jnp.zeros((0,), gates_x_TxBxG.dtype)
  residuals = (dtype_marker, kernel_HxG, carry, mask_TxB, c_TxBxH, h_TxBxH, act_TxBxG)
  return outputs, residuals


def _recurrence_bwd(dtype, unroll, residuals, cotangents):
  dtype_marker, kernel_HxG, (c0_BxH, h0_BxH), mask_TxB, c_TxBxH, h_TxBxH, act_TxBxG = residuals
  (dc_final_BxH, dh_final_BxH), dh_out_TxBxH = cotangents
  # The state each step started from: the initial carry, then the previous step's.
  c_prev_TxBxH = jnp.concatenate([c0_BxH[None], c_TxBxH[:-1]], 0)
  h_prev_TxBxH = jnp.concatenate([h0_BxH[None], h_TxBxH[:-1]], 0)
  kernel_T_GxH = kernel_HxG.astype(dtype).T

  def reverse_step(carry, inputs):
    dc_BxH, dh_BxH = carry
    dh_out_BxH, c_BxH, c_prev_BxH, act_BxG, mask_B = inputs
    dh_BxH = dh_BxH + dh_out_BxH
    i, f, s_g, o = jnp.split(act_BxG, 4, axis=-1)
    tanh_c_BxH = jnp.tanh(c_BxH)
    dc_cell_BxH = dc_BxH + dh_BxH * o * (1.0 - tanh_c_BxH**2)
    # d(gate)/d(pre-activation) is s(1 - s) for each sigmoid gate and 4 s(1 - s) for g.
    dact_BxG = jnp.concatenate(
      [
        dc_cell_BxH * (2.0 * s_g - 1.0),
        dc_cell_BxH * c_prev_BxH,
        4.0 * dc_cell_BxH * i,
        dh_BxH * tanh_c_BxH,
      ],
      -1,
    )
    dgates_BxG = dact_BxG * act_BxG * (1.0 - act_BxG)
    if mask_B is not None:
      dgates_BxG = jnp.where(mask_B[:, None], dgates_BxG, 0.0)
    dh_prev_BxH = jnp.dot(
      dgates_BxG.astype(dtype), kernel_T_GxH, preferred_element_type=jnp.float32
    )
    dc_prev_BxH = dc_cell_BxH * f
    if mask_B is not None:  # A held step passes its gradient through unchanged.
      dh_prev_BxH = jnp.where(mask_B[:, None], dh_prev_BxH, dh_BxH)
      dc_prev_BxH = jnp.where(mask_B[:, None], dc_prev_BxH, dc_BxH)
    return (dc_prev_BxH, dh_prev_BxH), dgates_BxG

  (dc0_BxH, dh0_BxH), dgates_TxBxG = jax.lax.scan(
    reverse_step,
    (dc_final_BxH, dh_final_BxH),
    (dh_out_TxBxH, c_TxBxH, c_prev_TxBxH, act_TxBxG, mask_TxB),
    reverse=True,
    unroll=unroll,
  )
  hidden, gates = kernel_HxG.shape
  dkernel_HxG = jnp.dot(
    h_prev_TxBxH.reshape(-1, hidden).astype(dtype).T,
    dgates_TxBxG.reshape(-1, gates).astype(dtype),
    preferred_element_type=jnp.float32,
  ).astype(kernel_HxG.dtype)
  mask_cotangent = None
  return (dgates_TxBxG.astype(dtype_marker.dtype), dkernel_HxG, (dc0_BxH, dh0_BxH), mask_cotangent)


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ---- The GRU (Cho et al. 2014), as cuDNN and PyTorch define it ----
#
# Gates r, z, n (G = 3H): r, z = sigmoid(x W_x[r,z] + b[r,z] + h W_h[r,z]),
# n = tanh(x W_xn + b_n + r * (h W_hn + b_hn)), h' = (1 - z) n + z h. The recurrent bias b_hn sits
# inside r * (...), so it is a parameter of its own (the r and z recurrent biases would only add
# to the input biases). The backward pass is arranged as the LSTM's: the reverse loop computes
# dh_{t-1} and stacks the gates' gradients; dW_h is one matmul after it.


def gru_step(
  dtype: Any, gates_x_BxG: jax.Array, kernel_HxG: jax.Array, bias_H: jax.Array, carry: Carry
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One timestep from input gates: (new h, s = sigmoid(r, z) [B, 2H], n, h W_hn + b_hn); the
  recurrent matmul in dtype with float32 accumulation. Decoding and the time loop share it."""
  (h_BxH,) = carry
  hidden = h_BxH.shape[-1]
  gates_x_BxG = gates_x_BxG.astype(jnp.float32)
  gates_h_BxG = jnp.dot(
    h_BxH.astype(dtype), kernel_HxG.astype(dtype), preferred_element_type=jnp.float32
  )
  s_Bx2H = jax.nn.sigmoid(gates_x_BxG[:, : 2 * hidden] + gates_h_BxG[:, : 2 * hidden])
  r_BxH, z_BxH = jnp.split(s_Bx2H, 2, axis=-1)
  hn_BxH = gates_h_BxG[:, 2 * hidden :] + bias_H[None, :]
  n_BxH = jnp.tanh(gates_x_BxG[:, 2 * hidden :] + r_BxH * hn_BxH)
  return n_BxH + z_BxH * (h_BxH - n_BxH), s_Bx2H, n_BxH, hn_BxH


def _gru_forward(dtype, unroll, gates_x_TxBxG, kernel_HxG, bias_H, carry, mask_TxB):
  """The time loop; returns (final carry, h_TxBxH) and the residuals for the backward pass."""
  kernel_HxG = kernel_HxG.astype(dtype)

  def time_step(carry, inputs):
    (h_BxH,) = carry
    gates_x_BxG, mask_B = inputs
    new_h_BxH, s_Bx2H, n_BxH, hn_BxH = gru_step(dtype, gates_x_BxG, kernel_HxG, bias_H, carry)
    if mask_B is not None:
      new_h_BxH = jnp.where(mask_B[:, None], new_h_BxH, h_BxH)
    return (new_h_BxH,), (new_h_BxH, s_Bx2H, n_BxH, hn_BxH)

  final, (h_TxBxH, s_TxBx2H, n_TxBxH, hn_TxBxH) = jax.lax.scan(
    time_step, carry, (gates_x_TxBxG, mask_TxB), unroll=unroll
  )
  return (final, h_TxBxH), (h_TxBxH, s_TxBx2H, n_TxBxH, hn_TxBxH)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def gru_recurrence(
  dtype: Any,
  unroll: int,
  gates_x_TxBxG: jax.Array,
  kernel_HxG: jax.Array,
  bias_H: jax.Array,
  carry: Carry,
  mask_TxB: jax.Array | None = None,
) -> tuple[Carry, jax.Array]:
  """(final carry, h_TxBxH) of the GRU over precomputed input gates gates_x = x W_x + b.

  bias_H: the recurrent bias b_hn of the candidate n. dtype: of the recurrent matmul.
  mask_TxB: False where the carry is held (padding); None when every step is real.
  """
  return _gru_forward(dtype, unroll, gates_x_TxBxG, kernel_HxG, bias_H, carry, mask_TxB)[0]


def _gru_recurrence_fwd(dtype, unroll, gates_x_TxBxG, kernel_HxG, bias_H, carry, mask_TxB):
  outputs, (h_TxBxH, s_TxBx2H, n_TxBxH, hn_TxBxH) = _gru_forward(
    dtype, unroll, gates_x_TxBxG, kernel_HxG, bias_H, carry, mask_TxB
  )
  dtype_marker = jnp.zeros((0,), gates_x_TxBxG.dtype)
  residuals = (
    dtype_marker,
    kernel_HxG,
    bias_H,
    carry,
    mask_TxB,
    h_TxBxH,
    s_TxBx2H,
    n_TxBxH,
    hn_TxBxH,
  )
  return outputs, residuals


def _gru_recurrence_bwd(dtype, unroll, residuals, cotangents):
  dtype_marker, kernel_HxG, bias_H, (h0_BxH,), mask_TxB, h_TxBxH, s_TxBx2H, n_TxBxH, hn_TxBxH = (
    residuals
  )
  (dh_final_BxH,), dh_out_TxBxH = cotangents
  h_prev_TxBxH = jnp.concatenate([h0_BxH[None], h_TxBxH[:-1]], 0)
  kernel_T_GxH = kernel_HxG.astype(dtype).T

  def reverse_step(dh_BxH, inputs):
    dh_out_BxH, h_prev_BxH, s_Bx2H, n_BxH, hn_BxH, mask_B = inputs
    dh_BxH = dh_BxH + dh_out_BxH
    r_BxH, z_BxH = jnp.split(s_Bx2H, 2, axis=-1)
    dn_pre_BxH = dh_BxH * (1.0 - z_BxH) * (1.0 - n_BxH**2)  # Through h' = n + z (h - n), tanh.
    ds_Bx2H = jnp.concatenate([dn_pre_BxH * hn_BxH, dh_BxH * (h_prev_BxH - n_BxH)], -1)
    dgates_rz_Bx2H = ds_Bx2H * s_Bx2H * (1.0 - s_Bx2H)
    # The gradient reaching h W_h (+ b_hn) and the one reaching the input gates differ in n only.
    dgates_h_BxG = jnp.concatenate([dgates_rz_Bx2H, dn_pre_BxH * r_BxH], -1)
    if mask_B is not None:
      dgates_h_BxG = jnp.where(mask_B[:, None], dgates_h_BxG, 0.0)
      dn_pre_BxH = jnp.where(mask_B[:, None], dn_pre_BxH, 0.0)
    dh_prev_BxH = dh_BxH * z_BxH + jnp.dot(
      dgates_h_BxG.astype(dtype), kernel_T_GxH, preferred_element_type=jnp.float32
    )
    if mask_B is not None:  # A held step passes its gradient through unchanged.
      dh_prev_BxH = jnp.where(mask_B[:, None], dh_prev_BxH, dh_BxH)
    return dh_prev_BxH, (dgates_h_BxG, dn_pre_BxH)

  dh0_BxH, (dgates_h_TxBxG, dn_pre_TxBxH) = jax.lax.scan(
    reverse_step,
    dh_final_BxH,
    (dh_out_TxBxH, h_prev_TxBxH, s_TxBx2H, n_TxBxH, hn_TxBxH, mask_TxB),
    reverse=True,
    unroll=unroll,
  )
  hidden, gates = kernel_HxG.shape
  dkernel_HxG = jnp.dot(
    h_prev_TxBxH.reshape(-1, hidden).astype(dtype).T,
    dgates_h_TxBxG.reshape(-1, gates).astype(dtype),
    preferred_element_type=jnp.float32,
  ).astype(kernel_HxG.dtype)
  dbias_H = jnp.sum(dgates_h_TxBxG[..., 2 * hidden :], axis=(0, 1)).astype(bias_H.dtype)
  dgates_x_TxBxG = jnp.concatenate([dgates_h_TxBxG[..., : 2 * hidden], dn_pre_TxBxH], -1)
  mask_cotangent = None
  return (
    dgates_x_TxBxG.astype(dtype_marker.dtype),
    dkernel_HxG,
    dbias_H,
    (dh0_BxH,),
    mask_cotangent,
  )


gru_recurrence.defvjp(_gru_recurrence_fwd, _gru_recurrence_bwd)
