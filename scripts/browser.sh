#!/usr/bin/env bash
# Install Debian's Chromium for the console's browser tests, if it is missing.
# Playwright's own browser download does not work offline; the tests launch /usr/bin/chromium.
set -euo pipefail

[[ -x /usr/bin/chromium ]] && exit 0
if [[ "$(id -u)" != 0 ]]; then
  echo "Chromium is missing: run 'sudo apt-get install chromium' (the console tests need /usr/bin/chromium)" >&2
  exit 1
fi
echo "installing Chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
