# Sourced by the volume benchmarks: what keeps one case's timing free of the cases before it.
#
# On an ext4 filesystem without a journal the kernel does not reuse an inode for a minute
# after it was deleted, six while its inode table block is dirty (fs/ext4/ialloc.c,
# recently_deleted), and skips past every such inode when it allocates one. After `rm -rf` of
# 20,000 files, each file created nearby cost ~1 ms of system time on the benchmark machine,
# so a restore that came right after the removal of the previous one paid for it (a 2 GiB
# restore in 20,000 files: 6 s, or 20 s after a removal). So the benchmarks remove nothing
# between the cases they time, and wait after removing an earlier run's files.

# no_journal_ext4 DIR: whether DIR is on an ext4 filesystem that has no journal.
no_journal_ext4() {
    local fstype source
    fstype=$(findmnt -no FSTYPE -T "$1" 2> /dev/null) || return 1
    [ "$fstype" = ext4 ] || return 1
    source=$(findmnt -no SOURCE -T "$1")
    ! compgen -G "/proc/fs/jbd2/$(basename "$source")-*" > /dev/null
}

# remove_and_settle DIR: removes DIR; where deleted inodes are not reused at once, waits until
# they are, so that the cases timed next do not pay for the removal.
remove_and_settle() {
    [ -e "$1" ] || return 0
    rm -rf "$1"
    sync
    if no_journal_ext4 "$(dirname "$1")"; then
        echo "waiting 6 minutes: $(dirname "$1") is on ext4 without a journal, which reuses the inodes just removed only then (see bench/settle.sh)" >&2
        sleep 370
    fi
}

# warm DIR...: reads every file under DIR into the page cache. The benchmark machines' page
# cache does not keep what was written minutes ago (a 2 GiB repository read back from the disk
# in 7.8 s, from the cache in 0.24 s), so each case reads its inputs first: every tool then
# starts from the same cache, and the figures compare the tools, not the disk.
warm() {
    find "$@" -type f -exec cat {} + > /dev/null
}
