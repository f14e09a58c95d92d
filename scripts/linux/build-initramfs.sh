#!/usr/bin/env bash
# Build Ember's test initramfs: Debian's static busybox plus the /init next
# to this script, as a gzip'd newc cpio.
#
#   build-initramfs.sh OUTPUT
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-initramfs.sh OUTPUT}
busybox=${BUSYBOX:-/bin/busybox}

[ -x "$busybox" ] || { echo "build-initramfs: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
# A dynamically linked busybox would need a libc in the image.
if ! file -b "$busybox" 2>/dev/null | grep -q 'statically linked' && \
   ldd "$busybox" >/dev/null 2>&1; then
  echo "build-initramfs: $busybox is not statically linked (install busybox-static)" >&2
  exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/ember-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,root,etc}
cp "$busybox" "$root/bin/busybox"
install -m 0755 "$here/initramfs/init" "$root/init"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"

tmp_out="$out.tmp.$$"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | \
   cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9n >"$tmp_out"
mv "$tmp_out" "$out"
