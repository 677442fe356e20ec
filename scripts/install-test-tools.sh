#!/usr/bin/env bash
# The system tools the test suite drives besides Python: Chromium (the dashboard's browser
# tests), docker-compose (the compose file's static checks) and Caddy (deploy/Caddyfile
# in front of coordinator replicas). `make test` runs this
# first. As root with apt-get it installs what is missing; otherwise it names what to
# install and stops, so a missing tool is a clear message, never a skipped test.
set -euo pipefail

missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v caddy >/dev/null || missing+=(caddy)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} with apt-get (about a minute, once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    exit 0
fi
echo "the tests need: ${missing[*]}" >&2
echo "install them with your package manager, e.g.: sudo apt-get install ${missing[*]}" >&2
exit 1
