"""textgen-jax: LSTM text generation in JAX/Flax.

The engine is at the top of the package; each model family is a subpackage over it,
`textgen_jax.seq2seq` (encoder-decoder, Translator) and `textgen_jax.vae` (sentence VAE and its
LM, SentenceModel), registered in families.py.

families.py       `Family`: what the engine knows of a family, and the registry
recipe.py         train and evaluate, once for every family: data, workdir, model, loop
run_spec.py       the config parsed once: population, run keys, LSTM backend, device layout
config.py         the shared config sections (data, opt, train, parallel, population), checks
loop.py           the training loop: resume, step, log, evaluate, checkpoint, stop
training.py       the train state, the optimizer, pure train and eval steps
plateau.py        the held-out plateau schedule and early stopping
population.py     N runs in one vmapped program: members, per-member values, ranking
losses.py         masked token cross-entropy and the metric sums every family reports
metrics.py        metric sums to summaries, the metrics.jsonl log, the loss-curve plot
tensorboard_events.py  the same numbers (and sample lines) as TensorBoard event files
decoding.py       greedy, sampling and beam search, one compiled while_loop each
checkpointing.py  orbax checkpoints with checksums and run state; a failed write keeps the last
parallel.py       devices, hosts, the mesh and how batches and parameters split over it
device_memory.py  what fits on the device, for decoding batch sizes
files.py          small files written whole or not at all; text reads with one-line errors
errors.py         TextgenError (one-line messages for the scripts) and TrainingStopped
cli.py            what the scripts share: flags, one-line errors, exit codes
data/             tokenizers, vocabularies, readers, bucketed batching, the bundled corpus;
                  pipeline.py: a run's data from its config
models/           linen layers: LSTMs, attention, dropout, token inputs
workdir/          a run's directory: assets, lock, resume checks, loading and saving
"""
