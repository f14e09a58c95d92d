#!/usr/bin/env bash
# The ember program's command-line contract, end to end: --help/--version
# exit 0 on stdout; every malformed command line exits 1 with exactly one
# line on stderr naming the option; a missing kernel file is reported by
# name. Usage: test_cli_ember.sh PATH/TO/ember
set -uo pipefail
ember=$1
failures=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_as=() # a command prefix: run ember as another user
expect() { # expect STATUS STDERR_LINES WORD -- ARGS...
  local want=$1 lines=$2 word=$3
  shift 4
  "${run_as[@]}" "$ember" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local n
  n=$(wc -l <"$tmp/err")
  if [ "$got" -ne "$want" ] || [ "$n" -ne "$lines" ] || ! grep -q -e "$word" "$tmp/err" "$tmp/out"; then
    echo "not ok: ember $* -> status $got (want $want), $n stderr lines (want $lines), looking for '$word'"
    sed 's/^/  | /' "$tmp/err"
    failures=$((failures + 1))
  else
    echo "ok: ember $*"
  fi
}

expect 0 0 "Usage: ember" -- --help
expect 0 0 "Examples" -- -h
expect 0 0 "^ember " -- --version
expect 1 1 "-m: invalid size 'abc'" -- -kernel k -m abc
expect 1 1 "-smp" -- -kernel k -smp 0
expect 1 1 "-bogus: unknown option" -- -kernel k -bogus
expect 1 1 "-m: missing argument" -- -kernel k -m
expect 1 1 "no -kernel" -- -m 64
expect 1 1 "-device: unknown device 'e1000'" -- -kernel k -device e1000
expect 1 1 "iosize=3" -- -kernel k -device isa-debug-exit,iosize=3
expect 1 1 "drive 'x' is not defined" -- -kernel k -device virtio-blk-pci,drive=x
expect 1 1 "-accel: accelerator 'xen'" -- -kernel k -accel xen
expect 1 1 "-cpu: unknown CPU feature" -- -kernel k -cpu host,-nope
expect 1 1 "$tmp/missing" -- -kernel "$tmp/missing" -accel kvm:tcg -serial none
expect 1 1 "-drive id=d0" -- -kernel "$tmp/missing" -serial none -drive "file=$tmp/nodisk,if=virtio,id=d0,format=raw"

# Accelerator choice. Without -accel, a KVM this user cannot open means the
# software CPU, said in one line (the second line: the missing kernel);
# -accel kvm then fails saying what to do. /dev/kvm is root-only here, so
# "nobody" is a user without access.
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && [ -e /dev/kvm ] &&
   ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r /dev/kvm; then
  run_as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  expect 1 2 "permission to open /dev/kvm.*falling back to the tcg" -- -kernel /nonexistent -serial none
  expect 1 1 "no permission to open /dev/kvm: add yourself to the kvm group or use -accel tcg" -- \
    -kernel /nonexistent -serial none -accel kvm
  run_as=()
else
  echo "skip: KVM permission checks need root, setpriv and a root-only /dev/kvm"
fi
# KVM on the PVM backend cannot run a stock kernel: a bzImage without -accel
# gets the software CPU, said in one line (the second: this fake bzImage's
# own error); a PVH guest and -accel kvm keep KVM.
if [ -d /sys/module/kvm_pvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  head -c 1024 /dev/zero >"$tmp/bzImage"
  printf 'HdrS' | dd of="$tmp/bzImage" bs=1 seek=514 conv=notrunc status=none
  expect 1 2 "PVM backend.*falling back to the tcg" -- -kernel "$tmp/bzImage" -serial none
  expect 1 1 "boot protocol" -- -kernel "$tmp/bzImage" -serial none -accel kvm
else
  echo "skip: the PVM fallback check needs a usable /dev/kvm on the kvm_pvm backend"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
