#!/bin/bash
# Ember's software CPU (-accel tcg) against Debian's QEMU TCG on the same
# guests, in one run, printing ember/qemu ratios (above 1.0: ember is slower):
#   1. guest instructions per second on a register-only compute loop and on a
#      memory-bound loop (bench/guest/loops.c): each VMM runs the loop at N and
#      2N iterations and the extra instructions are divided by the extra time,
#      so boot and exit cost cancel out;
#   2. wall time of the tests/guest suite (every guest, run-guest.sh);
#   3. the stock Debian kernel (linux-image-amd64) booted to an initramfs
#      whose init powers off (start -> VMM exit), -smp 1 and -smp 2.
# Times are wall-clock and CPU (user + system, all threads). On a busy host
# the wall column swings; the CPU column much less.
#
#   bench/tcg.sh [BUILD_DIR] [--quick]   default: build
#   --quick: one kernel boot each, fewer loop iterations, no guest suite.
set -u
B=build
QUICK=false
for a in "$@"; do
    case $a in
        --quick) QUICK=true ;;
        *) B=$a ;;
    esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
E=$(realpath "$B/src/tools/ember" 2>/dev/null) || E=""
[ -x "$E" ] || { echo "no ember binary in $B/src/tools (build first)"; exit 1; }
Q=$(command -v qemu-system-x86_64) || { echo "qemu-system-x86_64 is not installed"; exit 77; }
T=$(mktemp -d /tmp/ember-tcg-bench-XXXXXX)
trap 'rm -rf "$T"' EXIT

# t CMD...: "wall cpu status" of one run
t() {
    /usr/bin/time -f "%e %U %S %x" -o "$T/time" "$@" >"$T/out" 2>&1
    tail -1 "$T/time" | awk '{ printf "%s %.2f %s", $1, $2 + $3, $4 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.1f", a / b; else print "-" }'; }

# ---- 1. instruction rate ---------------------------------------------------
bash "$root/tests/guest/build-guest.sh" "$T/loops.elf" "$root/tests/guest/boot.S" \
    "$root/tests/guest/lib.c" "$here/guest/loops.c" || { echo "building the loop guest failed"; exit 1; }
INSNS_PER_ITER=8
run_loop() { # run_loop ember|qemu LOOP ITERS: "wall cpu status"
    local common=(-nographic -no-reboot -m 256 -device isa-debug-exit,iobase=0xf4,iosize=0x04
                  -kernel "$T/loops.elf" -append "loop=$2 iters=$3")
    if [ "$1" = ember ]; then
        t "$E" -accel tcg "${common[@]}"
    else
        t "$Q" -M q35 -accel tcg -nic none "${common[@]}"
    fi
}
# mips VMM LOOP N: "wall_mips cpu_mips" from runs at N and 2N iterations
mips() {
    local w1 c1 s1 w2 c2 s2
    read -r w1 c1 s1 <<<"$(run_loop "$1" "$2" "$3")"
    read -r w2 c2 s2 <<<"$(run_loop "$1" "$2" $(($3 * 2)))"
    if [ "$s1" != 33 ] || [ "$s2" != 33 ]; then
        echo "0 0"
        echo "  $1 $2 loop failed (exit $s1/$s2): $(tail -3 "$T/out" | tr '\n' ' ')" >&2
        return
    fi
    awk -v n="$3" -v k=$INSNS_PER_ITER -v w1="$w1" -v w2="$w2" -v c1="$c1" -v c2="$c2" 'BEGIN {
        dw = w2 - w1; dc = c2 - c1
        # a difference under 0.2 s is noise: report "-" rather than a wild rate
        if (dw < 0.2) printf "- "; else printf "%.0f ", n * k / dw / 1e6
        if (dc < 0.2) printf "-"; else printf "%.0f", n * k / dc / 1e6 }'
}
# Iterations per VMM and loop: QEMU's translated code runs 10-30x faster.
declare -A N=([ember-compute]=25000000 [ember-memory]=25000000
              [qemu-compute]=1000000000 [qemu-memory]=250000000)
if $QUICK; then for k in "${!N[@]}"; do N[$k]=$((N[$k] / 2)); done; fi
echo "== guest instructions per second (MIPS, from wall time / CPU time) =="
printf "%-10s %14s %14s %16s\n" loop ember qemu-tcg "qemu/ember"
for loop in compute memory; do
    read -r ew ec <<<"$(mips ember $loop ${N[ember-$loop]})"
    read -r qw qc <<<"$(mips qemu $loop ${N[qemu-$loop]})"
    printf "%-10s %6s / %-6s %6s / %-6s %7s / %-7s\n" $loop "$ew" "$ec" "$qw" "$qc" \
        "$(ratio "$qw" "$ew")" "$(ratio "$qc" "$ec")"
done

# ---- 2. the test-guest suite -------------------------------------------------
if ! $QUICK; then
    echo
    echo "== tests/guest suite (run-guest.sh, every guest), seconds =="
    # guest;run-guest.sh options (as in tests/guest/meson.build), ';'-separated
    runs=("boot" "memory" "serial" "pci" "virtio-blk" "virtio-blk;--disk-format;qcow2"
          "virtio-hostile" "virtio-rng" "virtio-console" "hostile-io" "timer" "legacy" "smp"
          "reset;--append;method=kbd" "reset;--append;method=cf9" "reset;--append;method=acpi"
          "reset;--append;method=kbd reboots=2" "poweroff" "crash")
    [ -d "$B/tests/guest" ] || { echo "no guests in $B/tests/guest (ninja -C $B first)"; exit 1; }
    # suite.sh ember|qemu: runs every guest once, names the ones that fail
    {
        echo "set -u"
        declare -p runs E Q B root
        cat <<'EOF'
for r in "${runs[@]}"; do
    IFS=';' read -r -a w <<<"$r"
    g=${w[0]}
    opts=("${w[@]:1}")
    if [ "$1" = ember ]; then
        bash "$root/tests/guest/run-guest.sh" "${opts[@]}" "$E" "$B/tests/guest/$g.elf" -accel tcg \
            >/dev/null 2>&1 || echo "  ember: $r failed"
    else
        QEMU_ACCEL=tcg bash "$root/tests/guest/run-guest.sh" "${opts[@]}" qemu "$B/tests/guest/$g.elf" \
            >/dev/null 2>&1 || echo "  qemu: $r failed"
    fi
done
EOF
    } >"$T/suite.sh"
    read -r ew ec _ <<<"$(t bash "$T/suite.sh" ember)"
    cat "$T/out" >&2
    read -r qw qc _ <<<"$(t bash "$T/suite.sh" qemu)"
    cat "$T/out" >&2
    printf "%-10s %8s %8s %8s   (CPU: %s / %s = %s)\n" suite "ember" "qemu" "ratio" "$ec" "$qc" \
        "$(ratio "$ec" "$qc")"
    printf "%-10s %8s %8s %8s\n" wall "$ew" "$qw" "$(ratio "$ew" "$qw")"
fi

# ---- 3. stock kernel boot ------------------------------------------------------
echo
echo "== Debian kernel boot to an initramfs that powers off, seconds =="
K=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
BB=$(command -v busybox)
if [ -z "$K" ] || [ -z "$BB" ] || ! file -L "$BB" | grep -q static; then
    echo "SKIP: needs linux-image-amd64 and busybox-static (scripts/deps.sh)"
    exit 0
fi
mkdir -p "$T/initrd/bin" "$T/initrd/proc"
cp "$BB" "$T/initrd/bin/busybox"
cat >"$T/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox echo EMBER-BENCH-USERSPACE
/bin/busybox poweroff -f
EOF
chmod +x "$T/initrd/init"
(cd "$T/initrd" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$T/initrd.gz"
boot() { # boot ember|qemu SMP: "wall cpu ok"
    local cmd=(-m 256 -smp "$2" -kernel "$K" -initrd "$T/initrd.gz" -nographic -no-reboot
               -append "console=ttyS0 panic=-1 quiet")
    local w c s
    if [ "$1" = ember ]; then
        read -r w c s <<<"$(t timeout 900 "$E" -accel tcg "${cmd[@]}")"
    else
        read -r w c s <<<"$(t timeout 900 "$Q" -accel tcg -nic none "${cmd[@]}")"
    fi
    grep -q EMBER-BENCH-USERSPACE "$T/out" && echo "$w $c ok" || echo "$w $c FAILED"
}
printf "%-8s %16s %16s %14s\n" "" "ember wall/cpu" "qemu wall/cpu" "ratio wall/cpu"
for smp in 1 2; do
    read -r ew ec eok <<<"$(boot ember $smp)"
    read -r qw qc qok <<<"$(boot qemu $smp)"
    [ "$eok" = ok ] || echo "  ember -smp $smp did not reach userspace" >&2
    [ "$qok" = ok ] || echo "  qemu -smp $smp did not reach userspace" >&2
    printf "%-8s %7s / %-7s %7s / %-7s %6s / %-6s\n" "smp $smp" "$ew" "$ec" "$qw" "$qc" \
        "$(ratio "$ew" "$qw")" "$(ratio "$ec" "$qc")"
done
