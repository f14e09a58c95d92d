#!/usr/bin/env python3
"""Boot a real Linux guest under ember and check it from both sides.

  run-linux.py --ember PATH --ember-img PATH --kernel small|stock
               --smp N --accel tcg|kvm SCENARIO

The guest runs Ember's busybox initramfs (scripts/linux/build-initramfs.sh);
`ember.test=NAME` on the kernel command line makes its /init run one group of
checks and print TAP on the serial console, so one boot runs many checks.
This script starts ember with the devices the scenario needs, feeds input,
and checks the TAP stream, ember's exit status and host-side files.

Scenarios:
  boot        /proc/cpuinfo and online CPUs match -smp; the guest clock keeps
              pace with the host's (a loose sanity bound, not a timing test)
  blk         ext4 image made by mke2fs: the guest mounts it, reads, writes,
              syncs and powers off; the host reads the files with debugfs
  blk-qcow2   the same through a qcow2 overlay on a raw backing file; the
              backing file must be left untouched
  rng         virtio-rng feeds /dev/hwrng
  console     virtio-console is hvc0 and carries data both ways
  shell       serial input reaches a shell; `poweroff` ends ember with 0
  quit        Ctrl-A x on the serial console ends ember with 0
  reboot      `reboot -f` with -no-reboot ends ember with 0
  reboot-again  `reboot -f` without -no-reboot boots the guest again
  panic       init exits; the panic is visible and ember's status is not 0

Exit status: 0 pass, 1 fail, 77 skip (reason printed).
"""

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SKIP = 77
INIT_MARKER = "EMBER-INIT: userspace started"
PROMPT = "root@ember:"
HOST_TEXT = "written by the host"


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------- kernels --

def find_small_kernel():
    """Ember's small kernel: built once from linux-source-6.1, then cached.
    $EMBER_SMALL_KERNEL names another bzImage to use instead."""
    if os.environ.get("EMBER_SMALL_KERNEL"):
        return os.environ["EMBER_SMALL_KERNEL"]
    script = os.path.join(REPO, "scripts", "linux", "build-kernel.sh")
    if not os.path.exists("/usr/src/linux-source-6.1.tar.xz"):
        raise Skip("linux-source-6.1 is not installed (scripts/deps.sh installs it)")
    log(f"# building or reusing the small kernel: {script}")
    res = subprocess.run(["bash", script], stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise Fail("scripts/linux/build-kernel.sh failed")
    return res.stdout.strip().splitlines()[-1]


def find_stock_kernel():
    """Debian's linux-image-amd64: the newest /boot/vmlinuz-*-amd64."""
    def version_key(path):
        return [int(x) if x.isdigit() else x
                for x in re.split(r"(\d+)", os.path.basename(path))]
    kernels = sorted(glob.glob("/boot/vmlinuz-*-amd64"), key=version_key)
    if not kernels:
        raise Skip("no /boot/vmlinuz-*-amd64 (apt-get install linux-image-amd64)")
    if not os.access(kernels[-1], os.R_OK):
        raise Skip(f"{kernels[-1]} is not readable by this user")
    return kernels[-1]


def kvm_can_run_linux():
    """None when KVM can run a Linux guest here, else the reason it cannot."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible to this user"
    if os.path.exists("/sys/module/kvm_pvm"):
        return ("KVM runs on the PVM backend here (/sys/module/kvm_pvm), "
                "which cannot run a stock Linux kernel")
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return "the host CPU has no vmx/svm flag (no hardware virtualization)"
    return None


# ------------------------------------------------------------- the VM --

class Guest:
    """One ember process: its stdout collected by a thread, stdin writable."""

    def __init__(self, argv, serial_file=None):
        self.argv = argv
        self.serial_file = serial_file
        self.out = ""
        self.arrivals = []  # (offset just past a chunk, host time it arrived)
        self.lock = threading.Condition()
        self.started = time.monotonic()
        log("# " + " ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            with self.lock:
                self.out += text
                self.arrivals.append((len(self.out), time.monotonic()))
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def serial(self):
        """Text of the serial console (stdout, or the -serial file)."""
        if self.serial_file:
            try:
                with open(self.serial_file, encoding="utf-8", errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return ""
        with self.lock:
            return self.out

    def wait_for(self, what, timeout, start=0, where=None):
        """Wait until `what` appears at or after offset `start` of the
        serial text (or `where()`); return the offset just past it."""
        where = where or self.serial
        deadline = time.monotonic() + timeout
        while True:
            text = where()
            pos = text.find(what, start)
            if pos >= 0:
                return pos + len(what)
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                text = where()
                pos = text.find(what, start)
                if pos >= 0:
                    return pos + len(what)
                raise Fail(f"ember exited ({self.proc.returncode}) before {what!r} appeared")
            if time.monotonic() > deadline:
                raise Fail(f"{what!r} did not appear within {timeout} s")
            if self.serial_file:
                time.sleep(0.1)
            else:
                with self.lock:
                    self.lock.wait(0.5)

    def arrival_time(self, offset):
        """Host time at which stdout byte `offset` arrived."""
        with self.lock:
            for end, t in self.arrivals:
                if offset < end:
                    return t
        raise Fail(f"no output at offset {offset}")

    def stdout(self):
        with self.lock:
            return self.out

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"ember still running after {timeout} s")
        self.reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def elapsed(self):
        return time.monotonic() - self.started


def check_tap(text, what):
    """All TAP lines in `text` are ok and the plan is complete."""
    results = re.findall(r"^(ok|not ok) (\d+) - (.*?)\r?$", text, re.M)
    plan = re.search(r"^1\.\.(\d+)\r?$", text, re.M)
    for status, num, desc in results:
        log(f"#   {status} {num} - {desc}")
    if not plan:
        raise Fail(f"{what}: no TAP plan (the guest's checks did not finish)")
    if len(results) != int(plan.group(1)):
        raise Fail(f"{what}: plan says {plan.group(1)} checks, saw {len(results)}")
    bad = [r for r in results if r[0] != "ok"]
    if bad:
        raise Fail(f"{what}: {len(bad)} guest check(s) failed: "
                   + "; ".join(f"{n} - {d}" for _, n, d in bad))
    if not results:
        raise Fail(f"{what}: the guest ran no checks")


# ----------------------------------------------------------- scenarios --

class Run:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.kernel = (find_small_kernel() if args.kernel == "small"
                       else find_stock_kernel())
        self.initrd = os.path.join(tmp, "initramfs.gz")
        subprocess.run(["bash", os.path.join(REPO, "scripts", "linux", "build-initramfs.sh"),
                        self.initrd], check=True)
        # Boots on the software CPU are slow (a stock kernel: a minute or
        # two); the limits are generous so a loaded host does not fail them.
        self.boot_timeout = args.timeout

    def ember(self, append_words, extra=(), serial_file=None, no_reboot=True):
        argv = [self.args.ember, "-accel", self.args.accel, "-m", "256",
                "-smp", str(self.args.smp), "-kernel", self.kernel,
                "-initrd", self.initrd, "-nographic",
                "-append", " ".join(["console=ttyS0"] + list(append_words))]
        if no_reboot:
            argv.append("-no-reboot")
        if serial_file:
            argv += ["-serial", f"file:{serial_file}"]
        argv += list(extra)
        return Guest(argv, serial_file)

    def run_tests(self, name, extra=(), serial_file=None):
        """Boot with ember.test=NAME, wait for the TAP stream and power-off."""
        g = self.ember([f"ember.test={name}", f"ember.cpus={self.args.smp}"],
                       extra, serial_file)
        try:
            g.wait_for(INIT_MARKER, self.boot_timeout)
            log(f"# init started after {g.elapsed():.1f} s")
            g.wait_for("EMBER-TESTS-DONE", self.boot_timeout)
            rc = g.wait_exit(120)
        finally:
            g.kill()
        log(f"# ember exited with {rc} after {g.elapsed():.1f} s")
        check_tap(g.serial(), f"ember.test={name}")
        if rc != 0:
            raise Fail(f"ember exited with {rc} after the guest's power-off, expected 0")
        return g

    # -- boot --
    def scenario_boot(self):
        g = self.run_tests("boot")
        text = g.serial()
        a = re.search(r"EMBER-CLOCK-A ([\d.]+)", text)
        b = re.search(r"EMBER-CLOCK-B ([\d.]+)", text)
        if not a or not b:
            raise Fail("clock lines missing")
        guest_dt = float(b.group(1)) - float(a.group(1))
        host_dt = g.arrival_time(b.start()) - g.arrival_time(a.start())
        log(f"# across 'sleep 2': guest uptime advanced {guest_dt:.2f} s, "
            f"host time between the two lines {host_dt:.2f} s")
        # A clock check, not a speed check: the guest's clock must advance
        # at the host's rate. A wrong TSC/APIC timer rate shows up as guest
        # and host intervals that disagree; the tolerance absorbs the time
        # a loaded host takes to deliver each line.
        if guest_dt < 1.9:
            raise Fail(f"guest clock: sleep 2 took only {guest_dt:.2f} s of guest uptime")
        if abs(host_dt - guest_dt) > 1.0 + 0.25 * guest_dt:
            raise Fail(f"guest and host clocks disagree: {guest_dt:.2f} s vs {host_dt:.2f} s")
        # The guest's uptime cannot run ahead of the host's clock: the whole
        # process ran for at least as long as the guest has been up.
        uptime = float(b.group(1))
        host = g.elapsed()
        log(f"# guest uptime {uptime:.2f} s at the second clock line, host run {host:.2f} s")
        if uptime > host + 1.0:
            raise Fail(f"guest clock runs fast: {uptime:.2f} s of uptime within {host:.2f} s of host time")

    # -- blk --
    def make_ext4(self, path, size_mb=64):
        if not shutil.which("mke2fs") and not os.path.exists("/sbin/mke2fs"):
            raise Skip("mke2fs is not installed (e2fsprogs)")
        src = os.path.join(self.tmp, "ext4-src")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(src, "host.txt"), "w") as f:
            f.write(HOST_TEXT + "\n")
        subprocess.run([mke2fs(), "-q", "-F", "-t", "ext4", "-d", src, path, f"{size_mb}M"],
                       check=True)

    def check_ext4_files(self, image):
        def cat(path):
            res = subprocess.run([debugfs(), "-R", f"cat {path}", image],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            return res.stdout.decode(errors="replace")
        if cat("/guest.txt") != "written by the guest\n":
            raise Fail(f"debugfs: /guest.txt is {cat('/guest.txt')[:80]!r}")
        expected = "".join(f"{i}\n" for i in range(1, 50001))
        if cat("/seq.txt") != expected:
            raise Fail("debugfs: /seq.txt does not hold seq 1 50000")
        if cat("/dir/nested.txt") != "nested\n":
            raise Fail("debugfs: /dir/nested.txt is wrong")
        fsck = subprocess.run(["/sbin/e2fsck", "-fn", image],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if fsck.returncode != 0:
            log(fsck.stdout.decode(errors="replace"))
            raise Fail(f"e2fsck -fn reports problems (status {fsck.returncode})")
        log("# host: debugfs reads guest.txt, seq.txt, dir/nested.txt; e2fsck clean")

    def scenario_blk(self):
        image = os.path.join(self.tmp, "disk.ext4")
        self.make_ext4(image)
        self.run_tests("blk", ["-drive", f"file={image},if=virtio,format=raw"])
        self.check_ext4_files(image)

    def scenario_blk_qcow2(self):
        base = os.path.join(self.tmp, "base.ext4")
        overlay = os.path.join(self.tmp, "overlay.qcow2")
        self.make_ext4(base)
        before = sha256(base)
        subprocess.run([self.args.ember_img, "create", "-q", "-f", "qcow2", "-b", base,
                        "-F", "raw", overlay], check=True)
        self.run_tests("blk", ["-drive", f"file={overlay},if=virtio,format=qcow2"])
        if sha256(base) != before:
            raise Fail("the raw backing file changed")
        log("# host: backing file unchanged")
        flat = os.path.join(self.tmp, "flat.raw")
        subprocess.run([self.args.ember_img, "convert", "-q", "-f", "qcow2", "-O", "raw",
                        overlay, flat], check=True)
        self.check_ext4_files(flat)

    # -- rng --
    def scenario_rng(self):
        self.run_tests("rng", ["-device", "virtio-rng-pci"])

    # -- console --
    def scenario_console(self):
        serial = os.path.join(self.tmp, "serial.log")
        g = self.ember(["ember.test=console", f"ember.cpus={self.args.smp}"],
                       ["-chardev", "stdio,id=con0", "-device", "virtio-serial-pci",
                        "-device", "virtconsole,chardev=con0"], serial)
        try:
            g.wait_for(INIT_MARKER, self.boot_timeout)
            g.wait_for("EMBER-HVC guest-to-host", self.boot_timeout, where=g.stdout)
            log("# host: read the guest's line from hvc0 on ember's stdout")
            g.send("host-to-guest\n")
            g.wait_for("EMBER-HVC echo:host-to-guest", 120, where=g.stdout)
            log("# host: the guest echoed our line back on hvc0")
            g.wait_for("EMBER-TESTS-DONE", 120)
            rc = g.wait_exit(120)
        finally:
            g.kill()
        check_tap(g.serial(), "ember.test=console")
        if rc != 0:
            raise Fail(f"ember exited with {rc}, expected 0")

    # -- interactive shell on the serial console --
    def boot_to_shell(self, no_reboot=True):
        g = self.ember([], no_reboot=no_reboot)
        g.wait_for(INIT_MARKER, self.boot_timeout)
        end = g.wait_for(PROMPT, self.boot_timeout)
        log(f"# shell prompt after {g.elapsed():.1f} s")
        return g, end

    def shell_command(self, g, start, command, expect, timeout=120):
        g.send(command + "\n")
        return g.wait_for(expect, timeout, start)

    def scenario_shell(self):
        g, pos = self.boot_to_shell()
        try:
            # The shell computes the answer, so the echo of our own
            # keystrokes cannot satisfy the check.
            pos = self.shell_command(g, pos, "echo EMBER-SUM-$((6*7))", "EMBER-SUM-42")
            pos = self.shell_command(g, pos, "grep -c ^processor /proc/cpuinfo",
                                     f"\n{self.args.smp}")
            log("# serial input reached the shell")
            g.send("poweroff\n")
            rc = g.wait_exit(120)
        finally:
            g.kill()
        if rc != 0:
            raise Fail(f"ember exited with {rc} after poweroff, expected 0")
        log("# poweroff ended ember with 0")

    def scenario_quit(self):
        g, pos = self.boot_to_shell()
        try:
            g.send("\x01x")
            rc = g.wait_exit(60)
        finally:
            g.kill()
        if rc != 0:
            raise Fail(f"ember exited with {rc} after Ctrl-A x, expected 0")
        log("# Ctrl-A x ended ember with 0")

    def scenario_reboot(self):
        g, pos = self.boot_to_shell(no_reboot=True)
        try:
            g.send("reboot -f\n")
            rc = g.wait_exit(120)
        finally:
            g.kill()
        if rc != 0:
            raise Fail(f"ember exited with {rc} after reboot -f with -no-reboot, expected 0")
        log("# reboot -f with -no-reboot ended ember with 0")

    def scenario_reboot_again(self):
        g, pos = self.boot_to_shell(no_reboot=False)
        try:
            g.send("reboot -f\n")
            pos = g.wait_for(INIT_MARKER, self.boot_timeout, pos)
            pos = g.wait_for(PROMPT, self.boot_timeout, pos)
            log(f"# the guest booted again to a shell after {g.elapsed():.1f} s")
            pos = self.shell_command(g, pos, "echo EMBER-SUM-$((7*8))", "EMBER-SUM-56")
            g.send("poweroff\n")
            rc = g.wait_exit(120)
        finally:
            g.kill()
        if rc != 0:
            raise Fail(f"ember exited with {rc} after poweroff, expected 0")

    def scenario_panic(self):
        g = self.ember(["ember.test=panic"])
        try:
            g.wait_for("Kernel panic", self.boot_timeout)
            rc = g.wait_exit(120)
        finally:
            g.kill()
        if rc == 0:
            raise Fail("ember exited with 0 after a kernel panic")
        log(f"# the panic is on the console and ember exited with {rc}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sbin_tool(name):
    path = shutil.which(name) or (f"/sbin/{name}" if os.path.exists(f"/sbin/{name}") else None)
    if not path:
        raise Skip(f"{name} is not installed (e2fsprogs)")
    return path


def mke2fs():
    return sbin_tool("mke2fs")


def debugfs():
    return sbin_tool("debugfs")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ember", required=True)
    p.add_argument("--ember-img", required=True)
    p.add_argument("--kernel", choices=["small", "stock"], default="small")
    p.add_argument("--smp", type=int, default=1)
    p.add_argument("--accel", choices=["tcg", "kvm"], default="tcg")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds to wait for each boot stage")
    p.add_argument("scenario")
    args = p.parse_args()

    method = "scenario_" + args.scenario.replace("-", "_")
    if not hasattr(Run, method):
        print(f"run-linux.py: unknown scenario {args.scenario}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix=f"ember-e2e-{args.scenario}.")
    try:
        if args.accel == "kvm":
            why = kvm_can_run_linux()
            if why:
                raise Skip(why)
        run = Run(args, tmp)
        getattr(run, method)()
        log(f"PASS: {args.scenario} ({args.kernel} kernel, -smp {args.smp}, -accel {args.accel})")
        return 0
    except Skip as e:
        log(f"SKIP: {e}")
        return SKIP
    except Fail as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
