#!/usr/bin/env bash
# Boot a small Linux guest under Ember's software CPU with a root shell on
# the serial console.
#
#   bash scripts/demo.sh [extra ember options...]
#
# Installs what is missing (scripts/deps.sh), builds ember (build dir
# `build`, or $BUILDDIR), builds the small kernel from Debian's
# linux-source-6.1 and the busybox initramfs (both cached under
# ~/.cache/ember; the kernel takes a while the first time), then runs:
#
#   ember -accel tcg -m 256 -smp 2 -kernel BZIMAGE -initrd INITRAMFS \
#         -append console=ttyS0 -nographic \
#         -drive file=DISK,if=virtio,format=raw -device virtio-rng-pci
#
# DISK is a scratch ext4 image (mount /dev/vda /mnt in the guest).
# In the guest: `poweroff` ends ember with status 0; Ctrl-A x quits at once.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
builddir=${BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
ninja -C "$builddir" src/tools/ember >/dev/null

cache=${EMBER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ember}
mkdir -p "$cache"
echo "demo: building the guest kernel (cached after the first time)..." >&2
kernel=$(bash scripts/linux/build-kernel.sh)
initrd=$cache/initramfs.gz
bash scripts/linux/build-initramfs.sh "$initrd"
disk=$cache/demo-disk.ext4
if [ ! -f "$disk" ]; then
  truncate -s 256M "$disk"
  /sbin/mke2fs -q -F -t ext4 -L ember-demo "$disk"
fi

echo "demo: booting Linux on ember's software CPU; 'poweroff' or Ctrl-A x to leave" >&2
exec "$builddir/src/tools/ember" -accel tcg -m 256 -smp 2 \
  -kernel "$kernel" -initrd "$initrd" -append 'console=ttyS0' -nographic \
  -drive "file=$disk,if=virtio,format=raw" -device virtio-rng-pci "$@"
