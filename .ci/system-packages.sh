#!/bin/sh
# Debian packages the tests need: a headless Chromium for the browser tests
# (optuna-dashboard, report.html), Prometheus for the metrics test, shellcheck for uvrun. Installs only
# what is missing; where it cannot (no root, no apt, no network) it says so and exits 0: the
# tests that need them then skip with a reason.
set -u
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v prometheus >/dev/null 2>&1 || need="$need prometheus"
command -v shellcheck >/dev/null 2>&1 || need="$need shellcheck"  # tests/test_uvrun.py
[ -z "$need" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: no apt-get; missing:$need (their tests will skip)" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
# Several jobs may share the machine: wait for dpkg's lock instead of failing.
lock="-oDPkg::Lock::Timeout=600"
$SUDO apt-get "$lock" update -qq >/dev/null 2>&1 || true
# shellcheck disable=SC2086 # $need is a list of package names
if ! $SUDO apt-get "$lock" install -y -qq --no-install-recommends $need >/dev/null; then
    echo "system-packages: could not install$need (their tests will skip)" >&2
fi
exit 0
