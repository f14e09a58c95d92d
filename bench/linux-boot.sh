#!/usr/bin/env bash
# Linux boot on the software CPU: ember -accel tcg against Debian's
# qemu-system-x86_64 -accel tcg, same kernel, initramfs, memory and command
# line, -smp 1 and 2, Ember's small kernel and Debian's stock kernel.
#
#   bench/linux-boot.sh [BUILD_DIR] [N]      default: build, 1
#
# BUILD_DIR holds src/tools/ember and bench/startup (use a release or
# debugoptimized build, not a sanitizer build). The small kernel comes from
# scripts/linux/build-kernel.sh (built once, cached); the stock kernel is the
# newest /boot/vmlinuz-*-amd64 (skipped when there is none). The initramfs's
# /init prints "EMBER-INIT: userspace started" as its first command and,
# with ember.test=bench, powers off at once. Columns (medians of N runs):
#   init:  process start -> init's first line on the serial console
#   exit:  process start -> the VMM's exit after the guest's power-off
# The ratio is ember / QEMU for "init": below 1.0 means ember is faster.
set -u
cd "$(dirname "$0")/.."
B=${1:-build}
N=${2:-1}
E=$B/src/tools/ember
S=$B/bench/startup
for f in "$E" "$S"; do
  [ -x "$f" ] || { echo "linux-boot.sh: $f is not built (ninja -C $B)"; exit 1; }
done
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "linux-boot.sh: N must be a positive number"; exit 1; }
QEMU=$(command -v qemu-system-x86_64) || { echo "linux-boot.sh: qemu-system-x86_64 missing (scripts/deps.sh)"; exit 1; }
MARKER="EMBER-INIT: userspace started"

tmp=$(mktemp -d /tmp/ember-linux-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
bash scripts/linux/build-initramfs.sh "$tmp/initramfs.gz" || exit 1

kernels=()
small=$(bash scripts/linux/build-kernel.sh) || { echo "linux-boot.sh: building the small kernel failed"; exit 1; }
kernels+=("small:$small")
stock=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1)
if [ -n "$stock" ] && [ -r "$stock" ]; then
  kernels+=("stock:$stock")
else
  echo "# no readable /boot/vmlinuz-*-amd64: the stock kernel is skipped"
fi

# run_one VMM KERNEL SMP -> "init_ms exit_ms status"
run_one() {
  local vmm=$1 kernel=$2 smp=$3
  local common=(-m 256 -smp "$smp" -kernel "$kernel" -initrd "$tmp/initramfs.gz"
                -append "console=ttyS0 ember.test=bench" -nographic -no-reboot)
  local cmd
  if [ "$vmm" = ember ]; then
    cmd=("$E" -accel tcg "${common[@]}")
  else
    cmd=("$QEMU" -accel tcg -M pc -nic none "${common[@]}")
  fi
  local line
  line=$("$S" -m "$MARKER" "${cmd[@]}" </dev/null 2>/dev/null | tail -1)
  local init exit_ms status
  init=$(sed -n 's/.*marker_ms=\([-0-9.]*\).*/\1/p' <<<"$line")
  exit_ms=$(sed -n 's/.*exit_ms=\([-0-9.]*\).*/\1/p' <<<"$line")
  status=$(sed -n 's/.*status=\([-0-9]*\).*/\1/p' <<<"$line")
  echo "${init:--1} ${exit_ms:--1} ${status:--1}"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print -1; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-6s %-4s %12s %12s %12s %12s %8s\n' kernel smp "ember init" "ember exit" "qemu init" "qemu exit" ratio
for k in "${kernels[@]}"; do
  name=${k%%:*}
  kernel=${k#*:}
  for smp in 1 2; do
    declare -A init=() ex=()
    for vmm in ember qemu; do
      : >"$tmp/$vmm.init"; : >"$tmp/$vmm.exit"
      for ((i = 0; i < N; i++)); do
        read -r ti te st < <(run_one "$vmm" "$kernel" "$smp")
        if [ "$ti" = -1 ] || [ "$st" != 0 ]; then
          echo "# $vmm $name smp$smp: init line not seen or status $st (init=$ti ms)"
        fi
        echo "$ti" >>"$tmp/$vmm.init"; echo "$te" >>"$tmp/$vmm.exit"
      done
      init[$vmm]=$(median <"$tmp/$vmm.init")
      ex[$vmm]=$(median <"$tmp/$vmm.exit")
    done
    ratio=$(awk -v a="${init[ember]}" -v b="${init[qemu]}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }')
    printf '%-6s %-4s %10.0fms %10.0fms %10.0fms %10.0fms %8s\n' "$name" "$smp" \
      "${init[ember]}" "${ex[ember]}" "${init[qemu]}" "${ex[qemu]}" "$ratio"
    unset init ex
  done
done
echo "ratio = ember init / QEMU init (process start -> init's first command); below 1.0: ember is faster"
