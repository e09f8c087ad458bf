#!/bin/sh
# Installs everything the test suite needs, then runs all of it: pytest, ruff and mypy.
set -eu
cd "$(dirname "$0")/.."

sh scripts/system-deps.sh
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

status=0
python3 -m pytest --cov=spork_cli --cov-branch --cov-report=term:skip-covered "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "no tests were collected: that is a failure" >&2
    exit 1
fi
exit "$status"
