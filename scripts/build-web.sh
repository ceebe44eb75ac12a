#!/usr/bin/env bash
# Builds the web app (web/ → web/dist, served by the control plane at /app/): installs its Node
# packages from web/package-lock.json when they are missing or the lock file changed, then type
# checks and bundles it with Vite. `make dev` and `make test` run it.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: scripts/install-deps.sh installs Node.js" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "Installing the web app's Node packages (npm ci in web/) ..." >&2
  npm ci --no-audit --no-fund >/tmp/onda-web-npm.log 2>&1 \
    || { tail -20 /tmp/onda-web-npm.log >&2; echo "npm ci failed; see /tmp/onda-web-npm.log" >&2; exit 1; }
fi
npm run --silent build >/tmp/onda-web-build.log 2>&1 \
  || { cat /tmp/onda-web-build.log >&2; echo "the web app does not build" >&2; exit 1; }
echo "web app built: web/dist" >&2
