#!/bin/sh
# System packages the test suite drives for real: Debian's chromium (the web-page test) and
# postgresql (the job store and cluster tests start a throwaway server from its binaries).
# Installs them with apt-get when run as root; otherwise says in one line what to install.
# `--check` only reports (exit 1 when something is missing). Called by `make test`.
set -eu
has_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && return 0
  done
  return 1
}
missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium chromium-driver"
has_postgres || missing="${missing:+$missing }postgresql"
[ -z "$missing" ] && exit 0
if [ "${1:-}" != "--check" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $missing (apt-get) for the browser and database tests ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  command -v chromium >/dev/null 2>&1 && has_postgres && exit 0
fi
echo "kinemate: the test suite needs Debian's $missing: run 'sudo apt-get install $missing' (or 'make test' as root), then 'make test' again" >&2
exit 1
