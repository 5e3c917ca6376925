#!/usr/bin/env bash
# Two builds of the volume engine (the `engine` example) on the same directory: a first backup
# into a fresh repository, then an unchanged re-backup, the two builds alternating RUNS times;
# prints the medians and their ratios (B / A). For a before/after comparison of a change:
#
#   git archive <before> | tar -x -C /tmp/before
#   (cd /tmp/before && cargo build --release -p stowage-restic --example engine) && cp $T/release/examples/engine /tmp/engine-a
#   cargo build --release -p stowage-restic --example engine && cp $T/release/examples/engine /tmp/engine-b
#   RUNS=9 bench/engine-ab.sh /tmp/engine-a /tmp/engine-b DIR
set -euo pipefail

A=$1 B=$2 DATA=$3
RUNS=${RUNS:-5}
WORK=${WORK:-/var/tmp/stowage-bench-engine-ab}
rm -rf "$WORK"
mkdir -p "$WORK"
echo stowage-bench > "$WORK/password"

seconds() {
    /usr/bin/time -f %e -o "$WORK/time" "$@" > /dev/null 2> "$WORK/err" || {
        echo "FAILED: $*" >&2; cat "$WORK/err" >&2; exit 1; }
    cat "$WORK/time"
}

for run in $(seq "$RUNS"); do
    # Alternate which build goes first, so neither always meets a warmer or quieter machine.
    order="a b"; [ $((run % 2)) = 0 ] && order="b a"
    for build in $order; do
        engine=$A; [ "$build" = b ] && engine=$B
        rm -rf "$WORK/repo"
        "$engine" --repo "$WORK/repo" --password-file "$WORK/password" init > /dev/null 2>&1
        args=(--repo "$WORK/repo" --password-file "$WORK/password" backup "$DATA")
        seconds "$engine" "${args[@]}" >> "$WORK/first-$build"
        seconds "$engine" "${args[@]}" >> "$WORK/unchanged-$build"
    done
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo "$(find "$DATA" -type f | wc -l) files, RUNS=$RUNS (medians), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for case in first unchanged; do
    a=$(median < "$WORK/$case-a") b=$(median < "$WORK/$case-b")
    awk -v c="$case" -v a="$a" -v b="$b" 'BEGIN { printf "%s backup: A %.2f s, B %.2f s, B/A %.2f\n", c, a, b, b / a }'
done
