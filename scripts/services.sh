#!/usr/bin/env bash
# Start the database servers the test suite uses, if they are installed but not running.
set -euo pipefail

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && [[ "${POLYRELAY_TEST_BACKENDS:-sqlite,postgresql}" == *postgresql* ]]; then
  echo "PostgreSQL is not reachable on 127.0.0.1:5432; set POLYRELAY_TEST_BACKENDS=sqlite to test on SQLite only" >&2
  exit 1
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
