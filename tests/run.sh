#!/usr/bin/env bash
# Install everything the tests need, then run EVERY test, the slow ones included (the README's
# test command; CI runs this through .ci/run). Tests marked gpu skip without CUDA, the browser
# tests without /usr/bin/chromium (installed below). Plain `pytest` is the fast loop for your own
# edits: pyproject's addopts leaves the slow tests out there. Arguments go on to pytest; a later
# -m replaces the one here (e.g. `bash tests/run.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then  # real-browser end-to-end test (Debian's Chromium, offline)
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
python -m pip install -q -r requirements.txt
# the house style is checked, not hoped for: format and lint the whole tree first
python -m ruff format --check --quiet . || { echo "ruff format: run 'ruff format .'"; exit 1; }
python -m ruff check --quiet . || exit 1
set +e
# two workers: most tests wait on subprocesses and a browser, so two cores halve the wall time
python -m pytest -n "${CVDD_TEST_WORKERS:-2}" --dist loadgroup -m "slow or not slow" "$@"
rc=$?
set -e
[ "$rc" = 5 ] && { echo "no tests collected"; exit 1; }
exit "$rc"
