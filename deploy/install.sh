#!/usr/bin/env bash
# Create or update geoseg's virtual environment from the locked dependency set, then install
# geoseg itself (editable). Idempotent: the slow part runs only when the lock file changes.
#   GEOSEG_VENV=/some/path  keep the environment elsewhere (e.g. a cache shared by CI runs);
#                           ./.venv then links to it, so commands in README stay the same.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock="$root/deploy/requirements.lock"
venv="${GEOSEG_VENV:-$root/.venv}"
# ./.venv may be the link an earlier GEOSEG_VENV install made: update the environment it points to
if [ -L "$venv" ]; then venv=$(readlink -f "$venv"); fi
want=$(sha256sum "$lock" | cut -d' ' -f1)
stamp="$venv/.geoseg-lock.sha256"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "geoseg: installing the locked environment into $venv (first time: several GB, a few minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install --quiet -r "$lock"
  echo "$want" > "$stamp"
fi
if [ "$venv" != "$root/.venv" ]; then
  ln -sfn "$venv" "$root/.venv"
fi
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
echo "geoseg: environment ready in $venv" >&2
