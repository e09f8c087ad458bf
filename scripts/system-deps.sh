#!/bin/sh
# System packages the test suite needs: a real redis-server (and redis-cli for clusters),
# Chromium, which the dashboard test drives headless, promtool (Debian's prometheus), which
# checks the shipped alert rules, and node with npm, which run the HTTP caching conformance suite.
set -eu

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = "0" ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "spork tests need:$missing (install them with your package manager)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "spork tests need:$missing (no apt-get here; install them with your package manager)" >&2
    exit 1
fi
echo "installing$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
