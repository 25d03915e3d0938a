#!/bin/sh
# Runs the load scenarios of benches/README.md (S1..S5) one after the other and writes one JSON
# report per run into $OUT (default target/xds-load). Each run is bounded by `timeout`.
# Usage: benches/run-scenarios.sh [S1 S1t1 S1s2 S1c S2 S3a S3b S3c S3d S3e S4 S5 S5c]
set -eu
cd "$(dirname "$0")/.."
OUT=${OUT:-target/xds-load}
mkdir -p "$OUT"
cargo build --release -q -p xds-benches --bins
LOAD=${CARGO_TARGET_DIR:-target}/release/xds-load
run() {
    name=$1
    shift
    echo "== $name: xds-load $*"
    timeout 900 "$LOAD" --label "$name" --json-out "$OUT/$name.json" "$@" || echo "$name: exit $?"
}
S1="--streams 10000 --connections 100 --clusters 100 --endpoints 10"
S2="--streams 1000 --connections 10 --clusters 1000 --endpoints 10"
ALL=${*:-S1 S1t1 S1s2 S1c S2 S3a S3b S3c S3d S3e S4 S5 S5c}
for s in $ALL; do
    case $s in
    S1) run S1 $S1 --updates 3 ;;
    S1t1) run S1t1 $S1 --updates 3 --server-threads 1 ;;
    S1s2) run S1s2 $S1 --updates 3 --server-shards 2 --server-threads 1 ;;
    S1c) run S1c --streams 10000 --connections 10000 --clusters 100 --endpoints 10 --updates 3 ;;
    S2) run S2 $S2 --updates 3 ;;
    S3a) run S3a $S1 --variant delta --updates 3 ;;
    S3b) run S3b $S2 --variant delta --updates 3 ;;
    S3c) run S3c --variant delta --streams 1000 --connections 10 --clusters 10000 --endpoints 10 --updates 5 --update-kind one ;;
    S3d) run S3d --variant delta --streams 100 --connections 10 --clusters 10000 --endpoints 10 --updates 5 --update-kind one ;;
    S3e) run S3e --variant delta --streams 1000 --connections 10 --clusters 1000 --endpoints 10 --updates 5 --update-kind one ;;
    S4) run S4 $S1 --updates 3 --stall 1 ;;
    S5) run S5 $S1 --updates 0 --connect-concurrency 10000 ;;
    S5c) run S5c --streams 10000 --connections 10000 --clusters 100 --endpoints 10 --updates 0 --connect-concurrency 10000 ;;
    *) echo "unknown scenario $s" >&2 ;;
    esac
done
