#!/usr/bin/env bash
# Build Ember's small guest kernel from Debian's linux-source-6.1 with the
# config fragment next to this script, and print the bzImage's path.
#
# The result is cached outside the repository, keyed by a hash of the
# fragment and the source tarball, so it is built once:
#   ${EMBER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ember}/linux-<key>/bzImage
# Progress goes to stderr; stdout is the bzImage path only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/ember-guest.config
tarball=${LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
cache=${EMBER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ember}

[ -r "$tarball" ] || { echo "build-kernel: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }
[ -r "$fragment" ] || { echo "build-kernel: $fragment missing" >&2; exit 1; }

key=$( { sha256sum "$fragment" | cut -d' ' -f1; stat -c '%s %Y' "$tarball"; } | sha256sum | cut -c1-16)
out=$cache/linux-$key
if [ -f "$out/bzImage" ]; then
  echo "$out/bzImage"
  exit 0
fi

mkdir -p "$cache"
# One builder at a time: a second caller waits for the first one's result.
exec 9>"$cache/linux-$key.lock"
flock 9
if [ -f "$out/bzImage" ]; then
  echo "$out/bzImage"
  exit 0
fi

work=$cache/linux-$key.work
rm -rf "$work"
mkdir -p "$work"
echo "build-kernel: extracting $tarball into $work" >&2
tar -xJf "$tarball" -C "$work" --strip-components=1

cd "$work"
# merge_config reports every option the fragment overrides: keep that in a
# log, shown only when configuring fails.
if ! { make -s ARCH=x86_64 tinyconfig &&
       ./scripts/kconfig/merge_config.sh -m .config "$fragment" &&
       make -s ARCH=x86_64 olddefconfig; } >config.log 2>&1; then
  cat config.log >&2
  echo "build-kernel: configuring failed" >&2
  exit 1
fi
# Every line of the fragment must have survived olddefconfig; a dropped
# option means a missing dependency, which would surface much later as a
# guest that fails to find its disk or console.
missing=0
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  opt=${line%%=*}; val=${line#*=}
  if [ "$val" = n ]; then
    grep -q "^$opt=" .config && { echo "build-kernel: $opt still set" >&2; missing=1; }
  else
    grep -qx "$line" .config || { echo "build-kernel: $line did not survive olddefconfig" >&2; missing=1; }
  fi
done <"$fragment"
[ "$missing" = 0 ] || exit 1

echo "build-kernel: building bzImage with -j${EMBER_KERNEL_JOBS:-$(nproc)}" >&2
make -s ARCH=x86_64 -j"${EMBER_KERNEL_JOBS:-$(nproc)}" bzImage >&2

mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
cd "$cache"
rm -rf "$work"
echo "$out/bzImage"
