"""textgen-jax: LSTM text generation in JAX/Flax.

The engine is at the top of the package (data/, models/ layers, training, loop, plateau,
decoding, checkpointing, parallel, workdir, files, recipe, run_spec, families, the shared config
sections, cli for the scripts); each model family is a subpackage over it:
`textgen_jax.seq2seq` (encoder-decoder, Translator) and `textgen_jax.vae` (sentence VAE and
its LM, SentenceModel).
"""
