#!/usr/bin/env bash
# Runs one test guest under a VMM and checks what it reports.
#
#   run-guest.sh [--append WORDS] [--timeout SEC] [--disk-format raw|qcow2]
#                VMM GUEST.elf [VMM args...]
#
# VMM is "qemu" (Debian's qemu-system-x86_64 -M q35 -accel kvm, or
# -accel $QEMU_ACCEL when set, e.g. tcg) or the path
# of the ember binary (extra args such as "-accel kvm" pick its accelerator).
# The guest's name (GUEST.elf without .elf) selects the devices, disk image,
# CPU count and input it needs. The run passes when the guest's TAP stream
# on COM1 is complete and all "ok", the VMM's exit status is the expected one
# (isa-debug-exit: 33 = pass, 35 = fail; 0 for the reset/poweroff guests,
# which run with -no-reboot) and any host-side check (disk contents, echoed
# input) holds. Exit 0 pass, 1 fail, 77 skip (reason printed).
set -uo pipefail

append_extra=""
timeout_s=60
disk_format=raw
while [ $# -gt 0 ]; do
  case $1 in
    --append) append_extra=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --disk-format) disk_format=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "run-guest.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "usage: run-guest.sh [--append WORDS] [--timeout SEC] [--disk-format raw|qcow2] VMM GUEST.elf [VMM args...]" >&2
  exit 2
fi
vmm=$1
elf=$2
shift 2
extra_args=("$@")
guest=$(basename "$elf" .elf)

skip() { echo "SKIP: $*"; exit 77; }
fail_reason=""

[ -r "$elf" ] || { echo "run-guest.sh: guest $elf not found" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ember-guest-$guest.XXXXXX")
vmm_pid=""
cleanup() {
  [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- VMM --
needs_kvm=false
is_qemu=false
if [ "$vmm" = qemu ]; then
  is_qemu=true
  qemu_accel=${QEMU_ACCEL:-kvm} # bench/tcg.sh sets tcg
  [ "$qemu_accel" = tcg ] || needs_kvm=true
  qemu=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 is not installed"
  cmd=("$qemu" -M q35 -accel "$qemu_accel" -nographic -no-reboot -m 64 -nic none
       -device isa-debug-exit,iobase=0xf4,iosize=0x04)
  virtio_opts=",disable-legacy=on"   # modern-only IDs (0x1040 + type) on q35
else
  [ -x "$vmm" ] || skip "VMM $vmm is not built"
  cmd=("$vmm" -nographic -no-reboot -m 64 -device isa-debug-exit,iobase=0xf4,iosize=0x04)
  virtio_opts=""
  accel=kvm
  for ((i = 0; i < ${#extra_args[@]}; i++)); do
    if [ "${extra_args[i]}" = -accel ] && [ $((i + 1)) -lt ${#extra_args[@]} ]; then
      accel=${extra_args[i + 1]}
    fi
  done
  case $accel in kvm*) needs_kvm=true ;; esac
fi
if $needs_kvm && { ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; }; then
  skip "/dev/kvm is not available to this user"
fi

# ---------------------------------------------------- per-guest setup --
append=""
expect_status=33
send_lines=()
post_check=""

# One 512-byte sector: 16 records of "TAG N" padded to 31 bytes + "\n".
sector_pattern() {
  local rec
  rec=$(printf '%-31s' "$1 $2")
  local i
  for ((i = 0; i < 16; i++)); do printf '%s\n' "$rec"; done
}
# The disk virtio-blk starts with: sectors 0-63 and the last one patterned.
blk_sectors=2048
blk_write_first=40
blk_write_count=4
make_blk_image() { # FILE [with-guest-writes]
  local s
  : >"$1"
  truncate -s $((blk_sectors * 512)) "$1"
  {
    for ((s = 0; s < 64; s++)); do sector_pattern "ember sector" "$s"; done
  } | dd of="$1" conv=notrunc status=none
  sector_pattern "ember sector" $((blk_sectors - 1)) |
    dd of="$1" bs=512 seek=$((blk_sectors - 1)) conv=notrunc status=none
  if [ "${2:-}" = with-guest-writes ]; then
    for ((s = blk_write_first; s < blk_write_first + blk_write_count; s++)); do
      sector_pattern "guest wrote" "$s" | dd of="$1" bs=512 seek="$s" conv=notrunc status=none
    done
  fi
}
# With --disk-format qcow2 the guest's disk is a qcow2 overlay (made by
# qemu-img) whose backing file, named relative to the overlay, is a qcow2 of
# the raw pattern. Afterwards the backing file must be byte-for-byte
# untouched, the guest's writes must lie in the overlay itself, both images
# must pass qemu-img check, and the chain is converted back to $tmp/disk.img
# for the same comparisons as a raw disk.
blk_device_args() {
  make_blk_image "$tmp/disk.img"
  local file=$tmp/disk.img
  if [ "$disk_format" = qcow2 ]; then
    command -v qemu-img >/dev/null || skip "qemu-img is not installed"
    qemu-img convert -f raw -O qcow2 "$tmp/disk.img" "$tmp/base.qcow2" &&
      qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$tmp/disk.qcow2" ||
      { echo "run-guest.sh: qemu-img could not make the qcow2 images" >&2; exit 1; }
    sha256sum <"$tmp/base.qcow2" >"$tmp/base.sum"
    file="$tmp/disk.qcow2,l2-cache-size=131072"  # a small L2 cache, as an option
  fi
  cmd+=(-drive "file=$file,format=$disk_format,if=none,id=disk0"
        -device "virtio-blk-pci,drive=disk0,serial=ember-guest-disk${blk_queues:+,num-queues=$blk_queues}$virtio_opts")
}
# Guest-written bytes [$1, $2) are stored in the overlay (depth 0 of its map).
qcow2_overlay_holds() {
  qemu-img map -f qcow2 --output=json "$tmp/disk.qcow2" | python3 -c '
import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
own = [(e["start"], e["start"] + e["length"]) for e in json.load(sys.stdin)
       if e["depth"] == 0 and e["data"]]
pos = lo
for a, b in sorted(own):
    if a <= pos < b:
        pos = b
sys.exit(0 if pos >= hi else 1)' "$1" "$2"
}
qcow2_back_to_raw() {
  [ "$disk_format" = qcow2 ] || return 0
  local img
  for img in base.qcow2 disk.qcow2; do
    if ! qemu-img check -f qcow2 "$tmp/$img" >"$tmp/check" 2>&1; then
      fail_reason="qemu-img check finds $img damaged: $(tr '\n' ' ' <"$tmp/check" | head -c 300)"
      return 1
    fi
  done
  if ! sha256sum <"$tmp/base.qcow2" | cmp -s - "$tmp/base.sum"; then
    fail_reason="the backing file base.qcow2 was modified"
    return 1
  fi
  if [ "${1:-}" = with-guest-writes ] &&
     ! qcow2_overlay_holds $((blk_write_first * 512)) $(((blk_write_first + blk_write_count) * 512)); then
    fail_reason="the guest's writes are not stored in the overlay: $(qemu-img map -f qcow2 "$tmp/disk.qcow2" | tr '\n' ' ' | head -c 300)"
    return 1
  fi
  qemu-img convert -f qcow2 -O raw "$tmp/disk.qcow2" "$tmp/disk.img" ||
    { fail_reason="qemu-img cannot read the qcow2 image back"; return 1; }
}

case $guest in
  serial)
    line="hello-ember-$$-$RANDOM"
    send_lines=("$line" "$line")
    append="expect=$line"
    post_check=check_serial_echo
    ;;
  pci)
    blk_device_args
    cmd+=(-device "virtio-rng-pci$virtio_opts")
    append="virtio=2,4"
    ;;
  virtio-blk)
    blk_queues=2
    blk_device_args
    append="sectors=$blk_sectors wfirst=$blk_write_first wcount=$blk_write_count serial=ember-guest-disk mq=$blk_queues"
    post_check=check_blk_image
    ;;
  virtio-hostile)
    blk_device_args
    append="ramend=$((64 << 20))"
    post_check=check_blk_unchanged
    ;;
  virtio-console)
    cmd+=(-device "virtio-serial-pci$virtio_opts"
          -chardev "file,id=vc0,path=$tmp/console.txt" -device virtconsole,chardev=vc0)
    post_check=check_console_file
    ;;
  virtio-rng | hostile-io)
    cmd+=(-device "virtio-rng-pci$virtio_opts")
    ;;
  memory)
    # Past ember's 3 GiB low window and QEMU q35's 2 GiB split: RAM at 4 GiB+.
    mem_mib=4608
    append="mem=$mem_mib"
    ;;
  boot)
    cmd+=(-smp 2)
    append="check=pvh-cmdline-ok mem=64"
    ;;
  smp)
    cmd+=(-smp 4)
    append="cpus=4"
    ;;
  reset | poweroff)
    expect_status=0
    if [[ " $append_extra " == *" reboots="* ]]; then
      # The machine must reboot: no -no-reboot; the last boot passes via isa-debug-exit.
      expect_status=33
      for ((i = 0; i < ${#cmd[@]}; i++)); do
        [ "${cmd[i]}" = -no-reboot ] && unset 'cmd[i]'
      done
      cmd=("${cmd[@]}")
    fi
    ;;
  crash)
    # ember: register dump and status 2; QEMU -no-reboot: a reset, status 0.
    if $is_qemu; then expect_status=0; else expect_status=2; post_check=check_crash_dump; fi
    ;;
esac
if [ -n "${mem_mib:-}" ]; then
  for ((i = 0; i < ${#cmd[@]}; i++)); do
    [ "${cmd[i]}" = -m ] && cmd[i + 1]=$mem_mib
  done
fi
[ -n "$append_extra" ] && append="${append:+$append }$append_extra"
cmd+=(-kernel "$elf")
[ -n "$append" ] && cmd+=(-append "$append")
cmd+=("${extra_args[@]}")

check_serial_echo() {
  local n
  n=$(grep -cxF "echo: ${send_lines[0]}" "$tmp/clean")
  [ "$n" -eq 2 ] || { fail_reason="the guest echoed the sent line $n times, expected 2"; return 1; }
}
check_blk_image() {
  qcow2_back_to_raw with-guest-writes || return 1
  make_blk_image "$tmp/expected.img" with-guest-writes
  if ! cmp "$tmp/disk.img" "$tmp/expected.img" >"$tmp/cmp" 2>&1; then
    fail_reason="disk image differs from the expected contents: $(head -c 200 "$tmp/cmp")"
    return 1
  fi
}

check_console_file() {
  local want=("hello from virtio-console" "split message")
  grep -q '^# emerg-write used' "$tmp/clean" && want+=("emergency")
  local w
  for w in "${want[@]}"; do
    if ! grep -qxF "$w" "$tmp/console.txt" 2>/dev/null; then
      fail_reason="virtio-console output lacks the line \"$w\"; it holds: $(head -c 200 "$tmp/console.txt" 2>/dev/null | tr '\n' '|')"
      return 1
    fi
  done
}
check_crash_dump() {
  local w
  for w in 'triple fault' 'rip=' 'cr0='; do
    grep -qF "$w" "$tmp/err" && continue
    fail_reason="the VMM's stderr lacks '$w' (expected a register dump)"
    return 1
  done
}
check_blk_unchanged() {
  qcow2_back_to_raw || return 1
  make_blk_image "$tmp/expected.img"
  if ! cmp "$tmp/disk.img" "$tmp/expected.img" >"$tmp/cmp" 2>&1; then
    fail_reason="disk image changed: $(head -c 200 "$tmp/cmp")"
    return 1
  fi
}

# ---------------------------------------------------------------- run --
# stdin is a FIFO we keep open: the guest asks for input with "# send-line"
# and gets the next line only then (bytes sent earlier could be dropped
# when the guest resets its UART FIFO).
mkfifo "$tmp/in"
timeout -k 5 "$timeout_s" "${cmd[@]}" <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
vmm_pid=$!
exec 3>"$tmp/in"
sent=0
while kill -0 "$vmm_pid" 2>/dev/null; do
  if [ "$sent" -lt "${#send_lines[@]}" ]; then
    asked=$(grep -c '# send-line' "$tmp/out")
    while [ "$sent" -lt "$asked" ] && [ "$sent" -lt "${#send_lines[@]}" ]; do
      printf '%s\n' "${send_lines[sent]}" >&3
      sent=$((sent + 1))
    done
  fi
  sleep 0.2
done
wait "$vmm_pid"
status=$?
vmm_pid=""
exec 3>&-

# COM1 output without CRs and terminal escapes (SeaBIOS clears the screen).
tr -d '\r' <"$tmp/out" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' >"$tmp/clean"

report() {
  echo "---- COM1 output ($guest, ${cmd[0]##*/}) ----"
  cat "$tmp/clean"
  if [ -s "$tmp/err" ]; then
    echo "---- VMM stderr ----"
    cat "$tmp/err"
  fi
  echo "---- command: ${cmd[*]}"
}

plan=$(grep -oE '^1\.\.[0-9]+' "$tmp/clean" | head -n1 | cut -d. -f3)
results=$(grep -cE '^(ok|not ok) [0-9]+' "$tmp/clean")
failed=$(grep -E '^not ok [0-9]+' "$tmp/clean")

# An ember without the requested accelerator (e.g. -accel tcg before the
# software CPU lands) stops before the guest prints anything and says so:
# skip. Not for kvm, whose availability was checked above: any KVM error
# there is a real failure.
if ! $is_qemu && ! $needs_kvm && [ -z "$plan" ] && [ "$status" -ne "$expect_status" ] &&
   grep -qiE 'accel|tcg' "$tmp/err" &&
   grep -qiE 'not (available|supported|built|compiled)|unknown|unavailable|missing|unsupported' "$tmp/err"; then
  skip "$(head -n1 "$tmp/err")"
fi

if grep -qE 'runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|ThreadSanitizer' "$tmp/err"; then
  fail_reason="the VMM reported a sanitizer error (see stderr)"
elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  fail_reason="timed out after ${timeout_s}s"
elif [ -z "$plan" ]; then
  fail_reason="no TAP plan on COM1 (exit status $status)"
elif grep -q '^Bail out!' "$tmp/clean"; then
  fail_reason="$(grep -m1 '^Bail out!' "$tmp/clean")"
elif [ -n "$failed" ]; then
  fail_reason="guest reported failures"
elif [ "$results" -ne "$plan" ]; then
  fail_reason="planned $plan tests, saw $results results"
elif [ "$status" -ne "$expect_status" ]; then
  fail_reason="VMM exit status $status, expected $expect_status"
elif [ -n "$post_check" ]; then
  $post_check
fi

if [ -n "$fail_reason" ]; then
  report
  echo "FAIL: $guest: $fail_reason"
  exit 1
fi
grep -E '^(1\.\.[0-9]+|ok [0-9]+|# )' "$tmp/clean"
echo "PASS: $guest (exit status $status)"
exit 0
