#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run):
#   1. set up .venv (scripts/setup_venv.sh),
#   2. pytest: the unit tests in tests/ and every notebooks/*.ipynb executed by nbval,
#      all in the smoke profile (ZOOMIN_PROFILE=smoke; the notebook kernels inherit it).
# nbval starts each kernel in notebooks/; zoomin_lib.infra.config.repo_root() walks up from there,
# so results still go to results/NN_name/. Only *.ipynb are collected from notebooks/ (the
# Jupytext *.py sources do not match pytest's test_*.py pattern).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -x` or `bash scripts/test.sh tests`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

start=$SECONDS
bash scripts/setup_venv.sh
echo "== setup: $((SECONDS - start))s"

export ZOOMIN_PROFILE=smoke
# unattended: progress bars are text and the attention explorer draws its snapshot, not widgets
export ZOOMIN_BATCH=1
# smoke results go beside the build outputs, never over the book's results/ (cpu profile)
export ZOOMIN_RESULTS="${ZOOMIN_RESULTS:-$root/build/test-results}"
# and the smoke profile's (smaller) generated data sets are cached apart from the book's data/
export ZOOMIN_DATA="${ZOOMIN_DATA:-$root/build/test-data}"
# Paths among the arguments replace the default targets; options are added to them.
targets=(tests notebooks)
for arg in "$@"; do
  case "$arg" in -*) ;; *) targets=(); break ;; esac
done

rc=0
.venv/bin/python -m pytest "${targets[@]}" "$@" \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
  --durations=15 || rc=$?

echo "== tests: $((SECONDS - start))s in all"
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here." >&2
  exit 1
fi
exit "$rc"
