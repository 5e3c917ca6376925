"""Writes SIZE MiB of random data into FILES files under ROOT, 500 to a directory:
the "many small files" data set of the volume benchmarks.

    python3 bench/make-files.py ROOT SIZE_MIB FILES
"""
import os
import sys

root, size, files = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
each = size // files
for i in range(files):
    d = os.path.join(root, f"d{i // 500:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(each))
