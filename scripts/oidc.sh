#!/usr/bin/env bash
# Install the OpenID Connect provider tests/test_sso.py starts (panva/oidc-provider, from the npm registry,
# at the versions tests/oidc/package-lock.json pins). Needs Node.js 18 or later and npm.
set -euo pipefail

dir="$(cd "$(dirname "$0")/../tests/oidc" && pwd)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "Node.js and npm are needed for tests/test_sso.py; run 'sudo apt-get install nodejs npm'" >&2
  exit 1
fi
# npm ci again only when the lock file changed since the last install.
[[ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]] && exit 0
echo "installing tests/oidc (npm ci)"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
