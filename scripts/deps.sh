#!/usr/bin/env bash
# Install the Debian 12 packages Ember needs to build, test and benchmark.
# Idempotent: installs only what is missing. Run as root (or with sudo).
set -euo pipefail

packages=(
  # build
  build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
  liburing-dev libjansson-dev libzstd-dev zlib1g-dev
  # tests
  libcmocka-dev cpio busybox-static e2fsprogs
  # test oracles and benchmark peers
  qemu-system-x86 qemu-utils
  acpica-tools  # iasl: disassembles the DSDT in tests/unit/machine/test_acpi
  # Linux guests (tests/e2e, scripts/demo.sh, bench/linux-boot.sh): Debian's
  # stock kernel (also bench/tcg.sh), and the source and tools to build the small guest kernel
  linux-image-amd64 linux-source-6.1 bc flex bison libelf-dev libssl-dev
  xz-utils lz4 python3
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
