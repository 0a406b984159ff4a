"""A run's workdir: its config.json and vocabularies, the checks that make resuming safe, and
loading and saving a trained model, the same for every model family.

Every model family writes the config it trained with (config.json, whose `family` names the
family) and its vocabularies beside checkpoints/; loading a model for inference reads them back,
and resuming checks that the current settings still describe the checkpoints.

Its concerns, one module each: assets.py (config.json, vocabularies, data checksums, paths),
lock.py (one training at a time), resume.py (the checks that make resuming and loading safe,
compatibility with older workdirs), loading.py (load a trained model, save a copy).
"""

from textgen_jax.workdir.assets import (  # noqa: F401 (the package's interface)
  CONFIG_FILE,
  VOCABULARY_CHECKSUMS,
  DATA_CHECKSUMS,
  DATA_FIELDS,
  checkpoint_dir,
  best_dir,
  has_checkpoints,
  make_workdir,
  read_config,
  read_model_config,
  family_of,
  write_assets,
  data_checksums,
  write_data_checksums,
  read_data_checksums,
  changed_data_files,
  check_vocabulary_files,
)
from textgen_jax.workdir.lock import (  # noqa: F401 (the package's interface)
  LOCK_FILE,
  lock_for_training,
  unlock,
)
from textgen_jax.workdir.resume import (  # noqa: F401 (the package's interface)
  MUST_MATCH_ON_RESUME,
  ADDED_LATER,
  OLD_VALUES,
  family_defaults,
  added_later,
  values_before,
  SPEED_ONLY,
  FREE_ON_RESUME,
  check_saved_config,
  check_resumable,
)
from textgen_jax.workdir.loading import (  # noqa: F401 (the package's interface)
  Loaded,
  load,
  best_member,
  average_params,
  save,
)
