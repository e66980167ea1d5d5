#!/usr/bin/env bash
# Install Debian's Chromium (and fonts for Chinese text and emoji) for the console's browser tests.
# Playwright's own browser download does not work offline; the tests launch /usr/bin/chromium.
set -euo pipefail

packages=(chromium fonts-wqy-microhei fonts-noto-color-emoji)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" 2>/dev/null | grep -q "Status: install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" != 0 ]]; then
  echo "missing for the console tests: ${missing[*]}; run 'sudo apt-get install ${missing[*]}'" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
