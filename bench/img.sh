#!/bin/bash
# Time ember-img against qemu-img on the same work and print the ratios
# (ember / qemu: below 1.0 means ember-img is faster): wall-clock time and
# CPU time (user + system, all threads). One run each; on a busy machine
# the wall-clock column can swing by 2x, the CPU column much less.
#   bench/img.sh [EMBER_IMG] [SIZE_MiB]      default: build/src/tools/ember-img, 2048
set -eu
E=${1:-build/src/tools/ember-img}
SIZE_MB=${2:-2048}
command -v qemu-img >/dev/null || { echo "qemu-img not installed"; exit 77; }
[ -x "$E" ] || { echo "no ember-img at $E"; exit 1; }
E=$(realpath "$E")
T=$(mktemp -d /tmp/ember-bench-XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"

# Source: a quarter random, a quarter compressible text, half holes.
echo "preparing a ${SIZE_MB} MiB source image in $T ..."
truncate -s ${SIZE_MB}M src.raw
step=$((SIZE_MB / 8)); [ $step -ge 1 ] || step=1
for ((i = 0; i < SIZE_MB; i += step * 4)); do
    dd if=/dev/urandom of=src.raw bs=1M seek=$i count=$step conv=notrunc status=none
    yes "ember bench line $i" | head -c $((step * 1024 * 1024)) |
        dd of=src.raw bs=1M seek=$((i + step)) conv=notrunc status=none iflag=fullblock
done
sync

t() { # t CMD...: "wall cpu" seconds of one run (after writing back what earlier runs left
       # dirty, with the command's existing files, its inputs, read into the page cache)
    local a s e
    sync
    for a in "$@"; do [ -f "$a" ] && [ "$a" != "$1" ] && cat "$a" >/dev/null; done
    s=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$T/time" "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    awk -v w="$(echo "$e - $s" | bc -l)" '{ printf "%.3f %.2f", w, $1 + $2 }' "$T/time"
}
row() { # row LABEL EMBER_CMD -- QEMU_CMD
    local label=$1; shift
    local ecmd=() qcmd=()
    while [ "$1" != "--" ]; do ecmd+=("$1"); shift; done; shift
    qcmd=("$@")
    local ew ec qw qc
    read -r ew ec <<<"$(t "${ecmd[@]}")"
    read -r qw qc <<<"$(t "${qcmd[@]}")"
    printf "%-28s wall: ember %7.2fs qemu %7.2fs ratio %5.2f | cpu: ember %6.2fs qemu %6.2fs ratio %5.2f\n" \
        "$label" "$ew" "$qw" "$(echo "$ew / $qw" | bc -l)" "$ec" "$qc" "$(echo "($ec + 0.005) / ($qc + 0.005)" | bc -l)"
}

row "convert raw -> qcow2" "$E" convert -O qcow2 src.raw e.qcow2 -- qemu-img convert -O qcow2 src.raw q.qcow2
row "convert qcow2 -> raw" "$E" convert -O raw q.qcow2 e.raw -- qemu-img convert -O raw q.qcow2 q.raw
row "convert -c (zlib)" "$E" convert -c -O qcow2 src.raw ec.qcow2 -- qemu-img convert -c -O qcow2 src.raw qc.qcow2
row "convert -c (zstd)" "$E" convert -c -O qcow2 -o compression_type=zstd src.raw ez.qcow2 -- qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw qz.qcow2
row "convert compressed -> raw" "$E" convert -O raw qc.qcow2 e2.raw -- qemu-img convert -O raw qc.qcow2 q2.raw
qemu-img convert -O qcow2 -o cluster_size=4k src.raw q4k.qcow2
row "check" "$E" check q.qcow2 -- qemu-img check q.qcow2
row "check (4 KiB clusters)" "$E" check q4k.qcow2 -- qemu-img check q4k.qcow2
row "compare" "$E" compare src.raw q.qcow2 -- qemu-img compare src.raw q.qcow2
row "map --output=json" "$E" map --output=json q.qcow2 -- qemu-img map --output=json q.qcow2
ok=true
for img in e.qcow2 ec.qcow2 ez.qcow2; do
    qemu-img check -q $img && qemu-img compare -q src.raw $img || { echo "BAD: $img"; ok=false; }
done
cmp -s src.raw e.raw && cmp -s src.raw e2.raw || { echo "BAD: raw outputs differ"; ok=false; }
$ok && echo "results verified (qemu-img check and compare of every ember output, cmp of raw outputs)"
ls -s --block-size=M e.qcow2 q.qcow2 ec.qcow2 qc.qcow2 ez.qcow2 qz.qcow2 q4k.qcow2 | sed 's/^/size: /'

