#!/usr/bin/env bash
# Build the book, offline:
#   1. set up .venv (scripts/setup_venv.sh; a no-op when it is up to date),
#   2. execute every chapter notebook with papermill in one profile
#      (python -m zoomin_lib.book.runner; $ZOOMIN_PROFILE, default cpu) into book/executed/,
#   3. render book/ with Jupyter Book 1.x into book/_build/html/ (warnings are errors).
# Extra arguments go to the runner, e.g. `bash scripts/build_book.sh --fail-fast`.
# ZOOMIN_BOOK_STRICT=0 renders even if Sphinx warns (default 1: -W, a warning fails the build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

profile="${ZOOMIN_PROFILE:-cpu}"
timings=()
phase_start=$SECONDS
start_all=$SECONDS

end_phase() {  # end_phase NAME: record the seconds since the previous phase ended
  local took=$((SECONDS - phase_start))
  timings+=("$(printf '  %-30s %6ds' "$1" "$took")")
  echo "== $1: ${took}s"
  phase_start=$SECONDS
}

print_timings() {
  echo
  echo "== elapsed per phase"
  printf '%s\n' "${timings[@]}"
  printf '  %-30s %6ds\n' "total" "$((SECONDS - start_all))"
}

echo "== [1/3] environment: scripts/setup_venv.sh"
bash scripts/setup_venv.sh
end_phase "environment (.venv)"

echo "== [2/3] notebooks: python -m zoomin_lib.book.runner --profile $profile -> book/executed/"
rc=0
.venv/bin/python -m zoomin_lib.book.runner --profile "$profile" "$@" || rc=$?
end_phase "notebooks (profile $profile)"
if [ "$rc" -ne 0 ]; then
  print_timings
  echo "build_book: notebook execution failed (see the summary above); the book was not rendered." >&2
  exit "$rc"
fi

echo "== [3/3] book: jupyter-book build book/ --builder html"
# Every chapter in the toc must have an executed copy, else say which (Sphinx's own error is a KeyError).
missing=()
while IFS= read -r entry; do
  [ -f "book/$entry.ipynb" ] || [ -f "book/$entry.md" ] || missing+=("book/$entry")
done < <(sed -n 's/^[[:space:]-]*file:[[:space:]]*\([^[:space:]#]*\).*/\1/p' book/_toc.yml)
if [ "${#missing[@]}" -gt 0 ]; then
  print_timings
  echo "build_book: chapters listed in book/_toc.yml have no executed copy:" >&2
  printf '  %s(.ipynb)\n' "${missing[@]}" >&2
  echo "  (is notebooks/NN_name.ipynb there, and did the runner execute it?)" >&2
  exit 1
fi
strict=(-W --keep-going)
[ "${ZOOMIN_BOOK_STRICT:-1}" = "0" ] && strict=()
.venv/bin/jupyter-book build book/ --builder html "${strict[@]}"
end_phase "book (jupyter-book html)"

print_timings
echo
echo "The book is at: $root/book/_build/html/index.html"
