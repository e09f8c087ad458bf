#!/bin/sh
# The whole test suite from nothing: system packages, a fresh virtual environment of its own
# (so nothing installed by hand elsewhere can make a run pass), the project with its `test`
# extra, then pytest (ruff and mypy run inside it). A second, short step adds the `fast` extra
# (uvloop, hiredis) to the same environment and proves the package with it: imports, mypy and
# the state contract tests, and the edge bounds (raw connections, where uvloop differs most).
#
#   sh scripts/test.sh                 everything, as CI runs it
#   sh scripts/test.sh tests/gateway   arguments go to the main pytest run (the fast step is
#                                      skipped when arguments are given)
#
# SPORK_TEST_VENV=DIR keeps the environment in DIR (made afresh each run) instead of a
# temporary directory that is removed afterwards.
set -eu
cd "$(dirname "$0")/.."

sh scripts/system-deps.sh

if [ -n "${SPORK_TEST_VENV:-}" ]; then
    venv=$SPORK_TEST_VENV
else
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/spork-test.XXXXXX")
    trap 'rm -rf "$scratch"' EXIT INT TERM
    venv=$scratch/venv
fi
python3 -m venv --clear "$venv"
py=$venv/bin/python
export PATH="$venv/bin:$PATH"
# Nothing from the user's site directory or a stray PYTHONPATH may take part.
export PYTHONNOUSERSITE=1
unset PYTHONPATH || true
pip="$py -m pip --quiet --disable-pip-version-check"
$pip install --upgrade pip
$pip install -e '.[test]'
echo "test environment: $venv ($($py -m pip list --format=freeze | wc -l) packages)"

status=0
$py -m pytest -n "${SPORK_TEST_WORKERS:-auto}" \
    --cov=spork_cli --cov-branch --cov-report=term:skip-covered "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "no tests were collected: that is a failure" >&2
    exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
[ "$#" -eq 0 ] || exit 0

echo "with the fast extra (uvloop, hiredis):"
$pip install -e '.[test,fast]'
SPORK_FAST_EXTRA=1 $py -m pytest -n "${SPORK_TEST_WORKERS:-auto}" -p no:cacheprovider \
    tests/test_fast_extra.py tests/state tests/edge/test_bounds.py tests/test_quality.py::test_mypy_strict
