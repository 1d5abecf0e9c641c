#!/usr/bin/env bash
# The test command (README): sets up everything on a fresh machine, then lint, types, tests.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: python3-venv for the .venv, wrk for the serving benchmark's smoke test.
packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
command -v wrk >/dev/null || packages+=(wrk)
if [ ${#packages[@]} -gt 0 ]; then
  echo "== installing ${packages[*]} (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing mlstack and its dev tools into .venv"
# Strict editable mode: .venv sees the checkout as `mlstack.*` through a tree of links under
# build/ that pyright can follow (pyproject.toml says why); re-run after adding a module.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' \
  --config-settings editable_mode=strict

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== pyright"
.venv/bin/pyright
echo "== pytest"
.venv/bin/python -m pytest "$@"
