#!/usr/bin/env bash
# `make run`: a local NATS with JetStream (unless one already answers on 127.0.0.1:4222) and the
# switch with its defaults. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
nats_pid=""
cleanup() {
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  mkdir -p data/nats
  nats-server -js -a 127.0.0.1 -p 4222 -sd data/nats >data/nats.log 2>&1 &
  nats_pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
  echo "started nats-server (JetStream) on 127.0.0.1:4222, log in data/nats.log"
fi
./target/release/botstream "$@"
