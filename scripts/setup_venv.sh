#!/usr/bin/env bash
# Create .venv/ at the repository root if missing and install the pinned environment.
# Idempotent: re-installs only when requirements.txt or constraints.txt changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      echo "$py"; return 0
    fi
  done
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 && { echo "$py"; return 0; }
  done
  echo "setup_venv: no python3 found" >&2; return 1
}

if [ ! -x .venv/bin/python ]; then
  py="$(pick_python)"
  echo "setup_venv: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi

stamp=.venv/.zoomin-installed
want="$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup_venv: installing pinned dependencies (torch 2.13.0 CPU, Jupyter Book 1.x, ...)"
  # (this machine's pip config names index folders that may be absent; drop only those warnings)
  .venv/bin/python -m pip install --quiet -r requirements.txt -c constraints.txt \
    2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
  # the editable install of zoomin_lib + data_prep: its output (a setuptools notice) is shown only on failure
  if ! log="$(.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1)"; then
    echo "$log" >&2
    echo "setup_venv: installing the project itself (pip install -e .) failed" >&2
    exit 1
  fi
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want" > "$stamp"
fi
