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
interrupted=0
forward() {
  interrupted=1
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
# `wait` returns early (128+signal) when a trapped signal arrives: then wait again, for the
# switch's own status, even if it is gone by now (a switch with no calls drains at once).
while :; do
  interrupted=0
  if wait "$switch_pid"; then rc=0; else rc=$?; fi
  [ "$rc" = 127 ] && break # reaped by the previous wait: its status stands
  status=$rc
  [ "$interrupted" = 1 ] || break
done
if [ -n "$nats_pid" ]; then
  kill "$nats_pid" 2>/dev/null || true
  wait "$nats_pid" 2>/dev/null || true
fi
exit "$status"
