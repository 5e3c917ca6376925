#!/usr/bin/env bash
# Two builds of the volume engine (the `engine` example) restoring the same snapshot, and
# restic restoring the same data, alternating RUNS times with a `sync` before each restore;
# prints each round and the medians. Build the two engines as bench/engine-ab.sh says.
#
# Every restore goes into a directory of its own, and none is removed before the end (see
# bench/settle.sh: on ext4 without a journal, a restore right after `rm -rf` of another's files
# pays for the removal).
#
#   RUNS=5 SIZE=512 FILES=5000 bench/restore-ab.sh /tmp/engine-a /tmp/engine-b
set -euo pipefail

A=$1 B=$2
RUNS=${RUNS:-5}
WORK=${WORK:-/var/tmp/stowage-bench-restore-ab}
RESTIC=${RESTIC:-/usr/bin/restic}
cd "$(dirname "$0")/.."
source bench/settle.sh
remove_and_settle "$WORK"
mkdir -p "$WORK/results"
echo stowage-bench > "$WORK/password"
export RESTIC_PASSWORD=stowage-bench
python3 bench/make-files.py "$WORK/data" "${SIZE:-512}" "${FILES:-5000}"

"$A" --repo "$WORK/repo" --password-file "$WORK/password" init > /dev/null 2>&1
snap=$("$A" --repo "$WORK/repo" --password-file "$WORK/password" backup "$WORK/data" 2> /dev/null | awk '{print $2}')
"$RESTIC" -r "$WORK/restic-repo" --no-cache init > /dev/null
"$RESTIC" -r "$WORK/restic-repo" --no-cache backup "$WORK/data" > /dev/null

# restore NAME CMD... : times CMD restoring into the empty directory $out (made new for each
# run and tool below), appends to results/NAME
restore() {
    local name=$1; shift
    sync
    case $name in restic) warm "$WORK/restic-repo" ;; *) warm "$WORK/repo" ;; esac
    /usr/bin/time -f %e -o "$WORK/time" "$@" > /dev/null 2> "$WORK/err" || {
        echo "FAILED: $*" >&2; cat "$WORK/err" >&2; exit 1; }
    cat "$WORK/time" >> "$WORK/results/$name"
    cat "$WORK/time"
}

for run in $(seq "$RUNS"); do
    out=$WORK/out-$run-a; mkdir "$out"
    a=$(restore a "$A" --repo "$WORK/repo" --password-file "$WORK/password" restore "$snap" "$out")
    out=$WORK/out-$run-b; mkdir "$out"
    b=$(restore b "$B" --repo "$WORK/repo" --password-file "$WORK/password" restore "$snap" "$out")
    out=$WORK/out-$run-restic; mkdir "$out"
    r=$(restore restic "$RESTIC" -r "$WORK/restic-repo" --no-cache restore latest --target "$out")
    echo "run $run/$RUNS: A $a s, B $b s, restic $r s (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
rm -rf "$WORK"/out*

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ma=$(median < "$WORK/results/a"); mb=$(median < "$WORK/results/b"); mr=$(median < "$WORK/results/restic")
printf 'medians: A %.2f s, B %.2f s, restic %.2f s; B/A %.2f, A/restic %.2f, B/restic %.2f\n' \
    "$ma" "$mb" "$mr" "$(echo "$mb / $ma" | bc -l)" "$(echo "$ma / $mr" | bc -l)" "$(echo "$mb / $mr" | bc -l)"
