#!/bin/bash
# Boot to first serial output and to exit: ember (-accel kvm, -accel tcg)
# against QEMU (-accel kvm, -M q35 and -M microvm) on the same test guest,
# N runs each, medians, peak RSS, and ratios to QEMU q35.
#
#   bench/boot.sh [BUILD_DIR] [N]        default: build, 5
#
# BUILD_DIR holds src/tools/ember, bench/startup and tests/guest/boot.elf
# (use a release build). The guest is tests/guest/boot (a PVH ELF: checks
# its entry state, start_info, ACPI and MP tables, then isa-debug-exit; 33
# = all checks passed). Columns:
#   first byte: spawn -> first byte on the serial console (for QEMU q35
#               that is SeaBIOS's, not the guest's)
#   guest line: spawn -> the guest's first line ("1..N", its TAP plan)
#   exit:       spawn -> the VMM's exit
#   RSS:        the VMM process's peak resident set
# Ratios below 1.0 mean less time or memory than QEMU q35.
set -u
B=${1:-build}
N=${2:-5}
E=$B/src/tools/ember
S=$B/bench/startup
G=$B/tests/guest/boot.elf
for f in "$E" "$S"; do
  [ -x "$f" ] || { echo "boot.sh: $f is not built (ninja -C $B)"; exit 1; }
done
[ -r "$G" ] || { echo "boot.sh: $G is not built (ninja -C $B tests/guest/boot.elf)"; exit 1; }
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "boot.sh: N must be a positive number"; exit 1; }

tmp=$(mktemp -d /tmp/ember-boot-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

guest=(-m 64 -smp 2 -nographic -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4
       -kernel "$G" -append "check=pvh-cmdline-ok mem=64")
qemu=$(command -v qemu-system-x86_64 || true)
kvm_ok=false
[ -r /dev/kvm ] && [ -w /dev/kvm ] && kvm_ok=true

names=() cmds=() notes=()
add_row() { # add_row NAME NOTE CMD...
  names+=("$1")
  notes+=("$2")
  shift 2
  local q=""
  printf -v q '%q ' "$@"
  cmds+=("$q")
}
$kvm_ok && add_row "ember kvm" "" "$E" -accel kvm -serial stdio "${guest[@]}"
add_row "ember tcg" "" "$E" -accel tcg -serial stdio "${guest[@]}"
if [ -n "$qemu" ] && $kvm_ok; then
  # QEMU's default CPU model: -cpu host stops on an MSR this host's KVM refuses.
  add_row "qemu q35 kvm" "SeaBIOS + PVH option ROM" "$qemu" -M q35 -accel kvm -nic none "${guest[@]}"
  add_row "qemu microvm kvm" "qboot" "$qemu" -M microvm -accel kvm -nodefaults -serial stdio "${guest[@]}"
fi
skipped=""
[ -z "$qemu" ] && skipped="QEMU rows skipped: qemu-system-x86_64 is not installed"
! $kvm_ok && skipped="kvm rows skipped: /dev/kvm is not usable by this user"

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print -1; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*\\b$1=\\([-0-9.]*\\).*/\\1/p"; }

declare -A med
echo "guest: tests/guest/boot ($G), $N runs each, medians"
for i in "${!names[@]}"; do
  name=${names[i]}
  # One untimed run first: does this VMM run the guest, and do its checks pass?
  eval "timeout 120 ${cmds[i]}" </dev/null >"$tmp/out" 2>"$tmp/err"
  st=$?
  tr -d '\r' <"$tmp/out" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' >"$tmp/clean"
  if ! grep -q '^1\.\.' "$tmp/clean"; then
    notes[i]="cannot run the guest (status $st: $(head -n1 "$tmp/err"))"
    med[$name,ok]=no
    continue
  fi
  if [ "$st" -ne 33 ]; then
    why=$(grep -m1 '^not ok' "$tmp/clean" | cut -c1-70)
    notes[i]="${notes[i]:+${notes[i]}; }guest ran to its end but failed: ${why:-status $st}"
  fi
  : >"$tmp/runs"
  for ((r = 0; r < N; r++)); do
    eval "timeout 120 $S -m 1.. ${cmds[i]}" </dev/null 2>/dev/null >>"$tmp/runs"
  done
  med[$name,ok]=yes
  for k in first_byte_ms marker_ms exit_ms max_rss_kib; do
    med[$name,$k]=$(field "$k" <"$tmp/runs" | median)
  done
done

base="qemu q35 kvm"
ratio() { # ratio NAME KEY
  if [ "${med[$base,ok]:-no}" = yes ] && [ "${med[$1,ok]}" = yes ]; then
    awk -v a="${med[$1,$2]}" -v b="${med[$base,$2]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }'
  else
    printf -- "-"
  fi
}
echo
printf '%-17s %11s %11s %10s %9s | %12s %9s %9s\n' "VMM" "first byte" "guest line" "exit" "peak RSS" \
  "line/q35" "exit/q35" "RSS/q35"
printf '%-17s %11s %11s %10s %9s | %12s %9s %9s\n' "" "ms" "ms" "ms" "MiB" "" "" ""
for i in "${!names[@]}"; do
  name=${names[i]}
  if [ "${med[$name,ok]}" != yes ]; then
    printf '%-17s %s\n' "$name" "${notes[i]}"
    continue
  fi
  printf '%-17s %11.1f %11.1f %10.1f %9.1f | %12s %9s %9s\n' "$name" "${med[$name,first_byte_ms]}" \
    "${med[$name,marker_ms]}" "${med[$name,exit_ms]}" \
    "$(awk -v k="${med[$name,max_rss_kib]}" 'BEGIN { print k / 1024 }')" \
    "$(ratio "$name" marker_ms)" "$(ratio "$name" exit_ms)" "$(ratio "$name" max_rss_kib)"
done
echo
for i in "${!names[@]}"; do
  [ "${med[${names[i]},ok]}" = yes ] && [ -n "${notes[i]}" ] && echo "${names[i]}: ${notes[i]}"
done
[ -n "$skipped" ] && echo "$skipped"
exit 0
