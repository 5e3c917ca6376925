#!/usr/bin/env bash
# Which SHA-256 path makes the faster first backup of many small files on this CPU: ring
# (one message at a time; it uses the SHA extensions where the CPU has them) or the AVX2
# eight-lane path. The engine picks by the CPU; STOWAGE_SHA256=ring|lanes forces one.
# Runs the B data set's first backup (SIZE MiB in FILES files) with each path, alternating,
# RUNS times, and restic's first backup of the same data once per run as the baseline.
#
#   bench/sha256.sh                        # 512 MiB in 5,000 files, 5 runs
#   SIZE=2048 FILES=20000 RUNS=3 bench/sha256.sh
set -euo pipefail

SIZE=${SIZE:-512}
RUNS=${RUNS:-5}
FILES=${FILES:-5000}
WORK=${WORK:-/var/tmp/stowage-bench-sha256}
RESTIC=${RESTIC:-/usr/bin/restic}
TARGET=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}

cd "$(dirname "$0")/.."
cargo build --release -q -p stowage-restic --example engine
ENGINE=$TARGET/release/examples/engine

rm -rf "$WORK"
mkdir -p "$WORK"/{data,results}
echo "stowage-bench" > "$WORK/password"
export RESTIC_PASSWORD=stowage-bench

echo "generating data: ${SIZE} MiB in ${FILES} files" >&2
python3 bench/make-files.py "$WORK/data" "$SIZE" "$FILES"
sync

# wall NAME CMD... : appends the command's wall seconds to results/NAME
wall() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null 2> "$WORK/err.txt" || { echo "FAILED: $*" >&2; cat "$WORK/err.txt" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc >> "$WORK/results/$name"
}

for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
    # Alternate which path goes first, so neither always meets a warmer or quieter machine.
    if [ $((run % 2)) = 1 ]; then order="ring lanes"; else order="lanes ring"; fi
    for path in $order; do
        rm -rf "$WORK/repo"
        "$ENGINE" --repo "$WORK/repo" --password-file "$WORK/password" init > /dev/null 2>&1
        wall "$path" env STOWAGE_SHA256="$path" "$ENGINE" --repo "$WORK/repo" --password-file "$WORK/password" backup "$WORK/data"
    done
    rm -rf "$WORK/repo"
    "$RESTIC" -r "$WORK/repo" --no-cache init > /dev/null
    wall restic "$RESTIC" -r "$WORK/repo" --no-cache backup "$WORK/data"
done
rm -rf "$WORK/repo"

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { case " $flags " in *" $1 "*) echo yes ;; *) echo no ;; esac; }
ring=$(median < "$WORK/results/ring"); lanes=$(median < "$WORK/results/lanes"); restic=$(median < "$WORK/results/restic")
echo
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nproc) cores; sha_ni $(has sha_ni), avx2 $(has avx2); SIZE=${SIZE} MiB, FILES=${FILES}, RUNS=${RUNS} (medians); load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| B-first | seconds (median) | runs | / restic |"
echo "|---|---|---|---|"
for name in ring lanes restic; do
    m=$(median < "$WORK/results/$name")
    printf '| %s | %.2f | %s | %.2f |\n' "$name" "$m" "$(tr '\n' ' ' < "$WORK/results/$name" | xargs printf '%.2f ')" "$(echo "$m / $restic" | bc -l)"
done
printf '\nlanes / ring: %.2f\n' "$(echo "$lanes / $ring" | bc -l)"
