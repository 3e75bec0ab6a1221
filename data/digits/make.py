"""Cut the embedded digit set out of the shared MNIST digits.

Takes the first 2,000 training and the first 500 test examples of the IDX files in
../../../shared/data/mnist (relative to this script) and writes them here in the same
IDX layout, gzip-compressed. The gzip timestamp is fixed at zero so that rerunning the
script reproduces the files byte for byte.

Usage (from the repository root): python3 data/digits/make.py
"""

import gzip
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "mnist"))

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# (split, number of examples to keep)
SPLITS = [("train", 2000), ("test", 500)]


def read_idx(path, magic):
    """Return (dims, data bytes) of an unsigned-byte IDX file, checking its magic."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        sys.exit(f"{path}: magic {found}, expected {magic}")
    rank = magic & 0xFF
    dims = list(struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank]))
    data = raw[4 + 4 * rank :]
    expected = 1
    for d in dims:
        expected *= d
    if len(data) != expected:
        sys.exit(f"{path}: header says {expected} bytes of data, found {len(data)}")
    return dims, data


def write_idx(path, magic, dims, data):
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    with open(path, "wb") as out:
        # mtime=0 and no file name in the header: identical output on every run.
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as f:
            f.write(header + data)


def cut(name, magic, keep):
    """Write the first `keep` examples of SOURCE/name to HERE/name."""
    dims, data = read_idx(os.path.join(SOURCE, name), magic)
    if dims[0] < keep:
        sys.exit(f"{name} has only {dims[0]} examples, need {keep}")
    per_example = len(data) // dims[0]
    write_idx(os.path.join(HERE, name), magic, [keep] + dims[1:], data[: keep * per_example])
    return os.path.getsize(os.path.join(HERE, name))


def main():
    for split, keep in SPLITS:
        for kind, magic in (("images-idx3", IMAGES_MAGIC), ("labels-idx1", LABELS_MAGIC)):
            name = f"{split}-{kind}-ubyte.gz"
            size = cut(name, magic, keep)
            print(f"{name}: {keep} examples, {size} bytes")


if __name__ == "__main__":
    main()
