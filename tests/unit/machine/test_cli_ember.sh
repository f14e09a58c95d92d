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

expect() { # expect STATUS STDERR_LINES WORD -- ARGS...
  local want=$1 lines=$2 word=$3
  shift 4
  "$ember" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
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

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
