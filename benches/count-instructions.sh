#!/bin/sh
# Counts the load server's instructions (callgrind) over one load run: a figure that stays the
# same from run to run whatever else the machine is doing, for comparing builds where CPU
# seconds vary more than the change being measured. User space only (the kernel's TCP work is
# not counted), and a `rep movsb` copy counts one instruction per byte.
#
# Usage: benches/count-instructions.sh [XDS-LOAD ARGS]
#   default: an S1-shaped run of 2,000 streams over 20 connections, initial state and 1 update
# Environment: SERVER (the server binary, default target/release/xds-load-server; a copy of an
# older build compares builds), OUT (callgrind's output file, default target/callgrind.out).
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "count-instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p xds-benches --bins
TARGET=${CARGO_TARGET_DIR:-target}
SERVER=$(realpath "${SERVER:-$TARGET/release/xds-load-server}")
OUT=$(realpath -m "${OUT:-$TARGET/callgrind.out}")
WRAPPER=$(mktemp)
trap 'rm -f "$WRAPPER"' EXIT
printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s %s "$@" 2>/dev/null\n' "$OUT" "$SERVER" > "$WRAPPER"
chmod +x "$WRAPPER"
if [ $# -eq 0 ]; then
    set -- --streams 2000 --connections 20 --clusters 100 --endpoints 10 --updates 1
fi
timeout 1800 "$TARGET/release/xds-load" --timeout-s 600 --update-timeout-s 600 --server-bin "$WRAPPER" "$@" |
    grep -E '^(initial|update|errors)'
echo "server instructions: $(sed -n 's/^summary: //p' "$OUT") ($OUT; callgrind_annotate --inclusive=yes $OUT | less)"
