#!/usr/bin/env bash
# Install Debian's HAProxy: tests/test_cluster.py puts it in front of three gateways as the load balancer.
# The test runs its own haproxy process on a free loopback port; Debian's default service binds no port.
set -euo pipefail

dpkg -s haproxy 2>/dev/null | grep -q "Status: install ok installed" && exit 0
if [[ "$(id -u)" != 0 ]]; then
  echo "missing for the cluster test: haproxy; run 'sudo apt-get install haproxy'" >&2
  exit 1
fi
echo "installing haproxy"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q haproxy >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; }
