#!/usr/bin/env bash
# Build the book, offline:
#   1. set up .venv (scripts/setup_venv.sh; a no-op when it is up to date),
#   2. execute every chapter notebook with papermill in one profile
#      (python -m zoomin_lib.book.runner; $ZOOMIN_PROFILE, default cpu) into book/executed/,
#      two at a time with one thread each ($ZOOMIN_JOBS, default 2); unchanged chapters come from
#      the runner's cache,
#   3. render book/ with Jupyter Book 1.x into book/_build/html/ (warnings are errors),
#   4. open every page in headless Chromium (python -m zoomin_lib.book.page_check): broken images,
#      unrendered formulas, console errors, missing figures, non-content output; screenshots in
#      book/_build/page_check/. Skipped with a note when chromium/chromedriver are not installed,
#      unless ZOOMIN_PAGE_CHECK=1 (CI), which makes it required.
# Extra arguments go to the runner, e.g. `bash scripts/build_book.sh --fail-fast`.
# ZOOMIN_BOOK_STRICT=0 renders even if Sphinx warns (default 1: -W, a warning fails the build).
# ZOOMIN_BOOK_DIR=DIR builds a copy of book/'s sources in DIR instead (CI's smoke book), so that
# a smoke build never replaces the cpu book's executed chapters.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

profile="${ZOOMIN_PROFILE:-cpu}"
book="${ZOOMIN_BOOK_DIR:-book}"
book="${book%/}"
if [ "$(realpath -m "$book")" != "$root/book" ]; then  # the sources of book/, without its executed chapters and build
  mkdir -p "$book"
  (cd book && tar --exclude=./_build --exclude=./executed -cf - .) | (cd "$book" && tar -xf -)
fi
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

echo "== [1/4] environment: scripts/setup_venv.sh"
bash scripts/setup_venv.sh
end_phase "environment (.venv)"

echo "== [2/4] notebooks: python -m zoomin_lib.book.runner --profile $profile -> $book/executed/"
rc=0
.venv/bin/python -m zoomin_lib.book.runner --profile "$profile" --out "$book/executed" --jobs "${ZOOMIN_JOBS:-2}" "$@" || rc=$?
end_phase "notebooks (profile $profile)"
if [ "$rc" -ne 0 ]; then
  print_timings
  echo "build_book: notebook execution failed (see the summary above); the book was not rendered." >&2
  exit "$rc"
fi

echo "== [3/4] book: jupyter-book build $book/ --builder html"
# Every chapter in the toc must have an executed copy, else say which (Sphinx's own error is a KeyError).
missing=()
while IFS= read -r entry; do
  [ -f "$book/$entry.ipynb" ] || [ -f "$book/$entry.md" ] || missing+=("$book/$entry")
done < <(sed -n 's/^[[:space:]-]*file:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$book/_toc.yml")
if [ "${#missing[@]}" -gt 0 ]; then
  print_timings
  echo "build_book: chapters listed in book/_toc.yml have no executed copy:" >&2
  printf '  %s(.ipynb)\n' "${missing[@]}" >&2
  echo "  (is notebooks/NN_name.ipynb there, and did the runner execute it?)" >&2
  exit 1
fi
strict=(-W --keep-going)
[ "${ZOOMIN_BOOK_STRICT:-1}" = "0" ] && strict=()
.venv/bin/jupyter-book build "$book/" --builder html "${strict[@]}"
end_phase "book (jupyter-book html)"

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "== [4/4] pages: python -m zoomin_lib.book.page_check $book/_build/html (headless Chromium)"
  rc=0
  .venv/bin/python -m zoomin_lib.book.page_check "$book/_build/html" || rc=$?
  end_phase "pages (headless Chromium)"
  if [ "$rc" -ne 0 ]; then
    print_timings
    echo "build_book: the page check failed (above; screenshots in $book/_build/page_check/)." >&2
    exit "$rc"
  fi
elif [ "${ZOOMIN_PAGE_CHECK:-0}" = "1" ]; then
  print_timings
  echo "build_book: ZOOMIN_PAGE_CHECK=1 but chromium/chromedriver are missing (bash scripts/setup_browser.sh)" >&2
  exit 1
else
  echo "== [4/4] pages: skipped: no /usr/bin/chromium and /usr/bin/chromedriver (bash scripts/setup_browser.sh, as root)"
fi

print_timings
echo
echo "The book is at: $(realpath -m "$book")/_build/html/index.html"
