#!/usr/bin/env bash
# Installs tansu, the Kafka-protocol broker the Kafka tests and demos talk to, with its memory
# and SQLite storage engines (SQLite: a restarted broker keeps its topics), into a cache outside
# the clone (about 10 minutes to build the first time; later runs find it there). Prints the
# path of the tansu binary.
set -euo pipefail
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
ROOT="${RTAP_TANSU_ROOT:-/var/cache/rtap/tansu}"
BIN="$ROOT/bin/tansu"
if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$ROOT"
echo "install-tansu: building tansu $TANSU_VERSION into $ROOT (first time: about 9 minutes)" >&2
CARGO_TARGET_DIR="$ROOT/target" cargo install tansu --version "$TANSU_VERSION" \
  --features dynostore,libsql --locked --root "$ROOT" >&2
echo "$BIN"
