#!/usr/bin/env bash
# Builds one freestanding test guest: build-guest.sh OUT.elf SOURCES...
# (boot.S, lib.c and the guest's own .c). Uses the system compiler and
# linker directly so the test build's flags (sanitizers, PIE) never reach
# code that runs without an OS. GUEST_CC overrides the compiler.
set -euo pipefail
out=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=${GUEST_CC:-cc}
tmp=$(mktemp -d "${out}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cflags=(-std=gnu17 -O2 -g0 -Wall -Wextra -Werror -Wno-unused-parameter
        -ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector
        -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
        -fno-tree-loop-distribute-patterns -fno-strict-aliasing --param=min-pagesize=0
        -m64 -mno-red-zone -mno-sse -mno-mmx -mgeneral-regs-only -mcmodel=small
        -I"$here")
objs=()
for src in "$@"; do
  obj="$tmp/$(basename "$src").o"
  "$cc" "${cflags[@]}" -c -o "$obj" "$src"
  objs+=("$obj")
done
ld -m elf_x86_64 -nostdlib -static --no-dynamic-linker --build-id=none \
   -z max-page-size=0x1000 -z noexecstack --no-warn-rwx-segments -T "$here/guest.ld" -o "$out.tmp" "${objs[@]}"
mv "$out.tmp" "$out"
