#!/usr/bin/env bash
# Pod volume engine (stowage-restic) vs restic 0.14 vs the copy ceiling (`cp -r` on the same
# disk), measured in one run with /usr/bin/time -v (wall time, peak RSS).
#
#   bench/volumes.sh                 # 2 GiB per data set, medians of 3
#   SIZE=256 RUNS=1 bench/volumes.sh # quick
#
# Data sets: A = one file of SIZE MiB of random data; B = SIZE MiB in FILES files (20,000).
# Cases: first backup, unchanged re-backup, re-backup after appending 1 byte to A, restore.
# Both tools run without a local cache (restic --no-cache; the engine has none) and with
# compression on at their defaults. Each case first reads the data set and its tool's
# repository, so that both are in the page cache for every tool alike.
# Every copy and restore writes a directory of its own and nothing is removed until the end
# (bench/settle.sh says why), so the run needs about SIZE * 2 * (1 + 3 * RUNS) MiB of disk.
set -euo pipefail

SIZE=${SIZE:-2048}
RUNS=${RUNS:-3}
FILES=${FILES:-20000}
WORK=${WORK:-/var/tmp/stowage-bench-volumes}
RESTIC=${RESTIC:-/usr/bin/restic}
TARGET=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}

cd "$(dirname "$0")/.."
cargo build --release -q -p stowage-restic --example engine
ENGINE=$TARGET/release/examples/engine

source bench/settle.sh
remove_and_settle "$WORK"
mkdir -p "$WORK"/{data/A,data/B,results,out}
need=$(( SIZE * 2 * (1 + 3 * RUNS) / 1024 + 1 ))
free=$(df -Pk "$WORK" | awk 'NR == 2 { print int($4 / 1024 / 1024) }')
if [ "$free" -lt "$need" ]; then
    echo "$WORK has $free GiB free; the data, the copies and the restores need about $need GiB (kept until the end, see bench/settle.sh)" >&2
    exit 1
fi
echo "stowage-bench" > "$WORK/password"
export RESTIC_PASSWORD=stowage-bench

echo "generating data: A = ${SIZE} MiB in 1 file, B = ${SIZE} MiB in ${FILES} files" >&2
head -c "$((SIZE << 20))" /dev/urandom > "$WORK/data/A/big"
python3 bench/make-files.py "$WORK/data/B" "$SIZE" "$FILES"
sync

# measure NAME CMD... : appends "wall_seconds peak_rss_kib" to results/NAME
measure() {
    local name=$1; shift
    # Write back what the previous case left dirty first, so that no case pays for another's
    # writes (on a slow disk that swung a 2 GiB restore from 8 s to 83 s); then read the
    # data set and the tool's repository into the page cache (bench/settle.sh).
    sync
    local repo
    case $name in
        *-engine) repo=$WORK/repo-engine-$set ;;
        *-restic) repo=$WORK/repo-restic-$set ;;
        *) repo= ;;
    esac
    warm "$WORK/data/$set" ${repo:+"$repo"}
    /usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/out.txt" 2> "$WORK/err.txt" || {
        echo "FAILED: $*" >&2; cat "$WORK/err.txt" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$WORK/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
    # The engine resets its peak after opening the repository (whose scrypt key derivation
    # takes 128 MiB) and reports both: the whole process's peak is the larger one.
    local open op
    open=$(sed -n 's/^peak RSS of opening: \([0-9]*\) KiB$/\1/p' "$WORK/err.txt")
    op=$(sed -n 's/^operation peak RSS after open: \([0-9]*\) KiB$/\1/p' "$WORK/err.txt")
    if [ -n "$open" ] && [ "$open" -gt "$rss" ]; then rss=$open; fi
    if [ -n "$op" ]; then echo "$op" >> "$WORK/results/$name-op"; fi
    echo "$wall $rss" >> "$WORK/results/$name"
}

# `engine SET ARGS...` and `restic_ SET ARGS...` on the set's repository, as executables so
# that /usr/bin/time measures them alone.
cat > "$WORK/engine" <<SH
#!/bin/sh
set=\$1; shift
exec "$ENGINE" --repo "$WORK/repo-engine-\$set" --password-file "$WORK/password" "\$@"
SH
cat > "$WORK/restic_" <<SH
#!/bin/sh
set=\$1; shift
exec "$RESTIC" -r "$WORK/repo-restic-\$set" --no-cache "\$@"
SH
chmod +x "$WORK/engine" "$WORK/restic_"
export PATH="$WORK:$PATH"

for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    for set in A B; do
        rm -rf "$WORK"/repo-*
        out=$WORK/out/$run-$set
        engine "$set" init > /dev/null
        restic_ "$set" init > /dev/null
        src="$WORK/data/$set"

        measure "$set-first-engine" engine "$set" backup "$src"
        measure "$set-first-restic" restic_ "$set" backup "$src"
        # The copy ceiling of both the backup and the restore rows: `cp -r` reads the data as a
        # backup does and writes it as a restore does.
        measure "$set-copy" cp -r "$src" "$out-copy"

        measure "$set-unchanged-engine" engine "$set" backup "$src"
        measure "$set-unchanged-restic" restic_ "$set" backup "$src"

        if [ "$set" = A ]; then
            printf 'x' >> "$src/big"
            measure "A-append-engine" engine A backup "$src"
            measure "A-append-restic" restic_ A backup "$src"
        fi

        snap=$(engine "$set" backup "$src" | awk '{print $2}')
        # Each into a directory of its own, none removed before the end (bench/settle.sh).
        mkdir -p "$out-engine" "$out-restic"
        measure "$set-restore-engine" engine "$set" restore "$snap" "$out-engine"
        measure "$set-restore-restic" restic_ "$set" restore latest --target "$out-restic"
    done
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
col() { [ -f "$WORK/results/$1" ] && awk "{print \$$2}" "$WORK/results/$1" | median || echo ""; }

echo
echo "SIZE=${SIZE} MiB, FILES=${FILES}, RUNS=${RUNS} (medians); $(nproc) cores; $(restic version | cut -d' ' -f1-2)"
echo
echo "| case | engine s | restic s | copy s | engine/restic | engine/copy | engine RSS MiB | engine RSS after open MiB | restic RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in A-first B-first A-unchanged B-unchanged A-append A-restore B-restore; do
    e=$(col "$c-engine" 1); r=$(col "$c-restic" 1)
    case $c in *-first | *-restore) k=$(col "${c%%-*}-copy" 1) ;; *) k="" ;; esac
    em=$(col "$c-engine" 2); rm_=$(col "$c-restic" 2); eo=$(col "$c-engine-op" 1)
    awk -v c="$c" -v e="$e" -v r="$r" -v k="$k" -v em="$em" -v rm="$rm_" -v eo="$eo" 'BEGIN {
        printf "| %s | %.2f | %.2f | %s | %.2f | %s | %.0f | %s | %.0f |\n", c, e, r,
            (k == "" ? "" : sprintf("%.2f", k)), e / r,
            (k == "" ? "" : sprintf("%.2f", e / k)), em / 1024,
            (eo == "" ? "" : sprintf("%.0f", eo / 1024)), rm / 1024 }'
done
rm -rf "$WORK/out"
