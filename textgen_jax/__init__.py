"""textgen-jax: LSTM text generation in JAX/Flax.

The engine is at the top of the package (data/, models/ layers, training, train_loop, decoding,
checkpointing, parallel, workdir, recipe, the shared config sections); each model family is a
subpackage over it: `textgen_jax.seq2seq` (encoder-decoder, Translator) and `textgen_jax.vae`
(sentence VAE and its LM, SentenceModel).
"""
