#!/usr/bin/env bash
# Starts a Kafka-protocol broker (tansu, installed by scripts/install-tansu.sh) on a free
# loopback port, storing its topics in SQLite under DIR (default ./data/tansu), so a restart
# keeps them. Prints the bootstrap address (host:port); the broker's pid goes to DIR/tansu.pid.
#
#   broker=$(scripts/start-tansu.sh)            # e.g. 127.0.0.1:40123
#   rtap up --kafka "$broker"
#   kill "$(cat data/tansu/tansu.pid)"          # stop it
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-./data/tansu}"
PORT="${TANSU_PORT:-}"
TANSU="$(scripts/install-tansu.sh)"
mkdir -p "$DIR"
if [[ -z "$PORT" ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
(
  cd "$DIR"
  nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "sqlite://tansu.db" >tansu.log 2>&1 &
  echo $! >tansu.pid
)
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.1
done
echo "start-tansu: the broker did not listen on 127.0.0.1:$PORT; see $DIR/tansu.log" >&2
exit 1
