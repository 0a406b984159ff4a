# Sourced by gpu_check.sh and gpu_day.sh, from the repository root: the environment of a GPU
# machine without network. Packages it lacks travel as wheels in .whl/ (see gpu_check.sh),
# installed to /tmp/site; the repository is imported as it is (PYTHONPATH, no pip install).
export PYTHONUNBUFFERED=1 TEXTGEN_JAX_HUGE_PAGES=0
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
