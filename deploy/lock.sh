#!/usr/bin/env bash
# Regenerate deploy/requirements.lock from the current environment (run after changing
# dependencies in pyproject.toml and installing them into .venv).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
{
  echo "# Locked dependency set for geoseg (runtime + tests). Regenerate with deploy/lock.sh."
  echo "# torch/torchvision are the registry's matching pair (CUDA build; runs on CPU too). Keep them at"
  echo "# 2.14.1/0.29.1: the development and CI machines hold those wheels locally and cap pip there."
  "$root/.venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^geoseg'
} > "$root/deploy/requirements.lock"
