#!/usr/bin/env bash
# `make run`: a local NATS with JetStream (unless one already answers on 127.0.0.1:4222) and the
# switch with its defaults. Ctrl-C (or SIGTERM) stops both: the signal goes to the switch, which
# drains its calls (a second one ends them at once); NATS is stopped only once the switch is gone.
# RUN_NATS_PORT and BOTSTREAM_BIN change the NATS port and the binary (the tests use both).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${RUN_NATS_PORT:-4222}
bin=${BOTSTREAM_BIN:-./target/release/botstream}
export BOTSTREAM_NATS_URL=${BOTSTREAM_NATS_URL:-nats://127.0.0.1:$port}
nats_pid=""
switch_pid=""
forward() {
  [ -n "$switch_pid" ] && kill -TERM "$switch_pid" 2>/dev/null || true
}
trap forward INT TERM
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  mkdir -p data/nats
  # Its own session too: a terminal's Ctrl-C must not stop NATS under the draining switch.
  setsid nats-server -js -a 127.0.0.1 -p "$port" -sd data/nats >data/nats.log 2>&1 &
  nats_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "started nats-server (JetStream) on 127.0.0.1:$port, log in data/nats.log"
fi
# Its own session, so a terminal's Ctrl-C reaches the switch once, through `forward`.
setsid "$bin" "$@" &
switch_pid=$!
status=0
# `wait` returns early when a trapped signal arrives: keep waiting until the switch is gone.
while kill -0 "$switch_pid" 2>/dev/null; do
  wait "$switch_pid" && status=0 || status=$?
done
if [ -n "$nats_pid" ]; then
  kill "$nats_pid" 2>/dev/null || true
  wait "$nats_pid" 2>/dev/null || true
fi
exit "$status"
