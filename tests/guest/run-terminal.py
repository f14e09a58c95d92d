#!/usr/bin/env python3
"""ember puts a terminal on stdin into raw mode; every way out must give the
shell its terminal back. Runs the serial test guest (it waits for a line on
COM1) on a pseudo-terminal and ends ember by: Ctrl-A x (exit 0), SIGTERM,
SIGABRT (what a failed assertion raises), and the guest's own end after the
reader of stdout went away (writes fail with EPIPE; ember must not die of
SIGPIPE).
After each, the terminal's attributes must equal those before the run.

Usage: run-terminal.py EMBER SERIAL_GUEST.elf
Exit 0 pass, 1 fail, 77 skip."""
import os
import resource
import select
import signal
import subprocess
import sys
import termios
import time

STARTUP_LIMIT_S = 60  # a hang guard, not a timing assertion


def read_until(fd, marker, limit_s):
    """Read fd until marker shows up; returns what was read."""
    data = b""
    end = time.monotonic() + limit_s
    while marker not in data:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the slave side closed
            break
        if not chunk:
            break
        data += chunk
    return data


def no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_case(ember, guest, name, end_it, stdout_pipe=False):
    master, slave = os.openpty()
    cooked = termios.tcgetattr(slave)
    stdout_r = None
    if stdout_pipe:
        stdout_r, stdout_w = os.pipe()
        out = stdout_w
    else:
        out = slave
    proc = subprocess.Popen(
        [ember, "-accel", "tcg", "-m", "64", "-nographic", "-no-reboot", "-serial", "stdio",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", guest],
        stdin=slave, stdout=out, stderr=subprocess.PIPE, close_fds=True,
        preexec_fn=no_core_dumps)
    if stdout_pipe:
        os.close(stdout_w)
    watch = stdout_r if stdout_pipe else master
    seen = read_until(watch, b"# send-line", STARTUP_LIMIT_S)
    problems = []
    if b"# send-line" not in seen:
        problems.append("the guest never asked for input")
    raw_now = termios.tcgetattr(slave)
    if raw_now[3] & (termios.ICANON | termios.ECHO):
        problems.append("ember did not put the terminal in raw mode")
    want = end_it(proc, master, stdout_r)
    try:
        proc.wait(timeout=STARTUP_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        problems.append("ember did not exit")
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != want:
        problems.append(f"exit status {proc.returncode}, expected {want}")
    after = termios.tcgetattr(slave)
    if after != cooked:
        problems.append("terminal attributes not restored "
                        f"(lflag {after[3]:#x}, was {cooked[3]:#x})")
    os.close(master)
    os.close(slave)  # stdout_r: closed by close_reader_then_finish
    if problems:
        print(f"not ok - {name}: " + "; ".join(problems))
        for line in err.splitlines():
            print(f"#   {line}")
        return False
    print(f"ok - {name}")
    return True


def quit_with_escape(proc, master, stdout_r):
    os.write(master, b"\x01x")
    return 0


def send_signal(sig):
    def end_it(proc, master, stdout_r):
        proc.send_signal(sig)
        return -sig
    return end_it


def close_reader_then_finish(proc, master, stdout_r):
    # Answer the polled read, wait for the guest's second request, then take
    # the reader away: everything the guest prints from here on (its results
    # after the interrupt-driven read) meets a pipe without a reader.
    os.write(master, b"hello\n")
    read_until(stdout_r, b"# send-line", STARTUP_LIMIT_S)
    os.close(stdout_r)
    os.write(master, b"again\n")
    return 33  # the guest runs to its end and passes


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    ember, guest = sys.argv[1], sys.argv[2]
    cases = [
        ("Ctrl-A x", quit_with_escape, False),
        ("SIGTERM", send_signal(signal.SIGTERM), False),
        ("SIGABRT", send_signal(signal.SIGABRT), False),
        ("stdout reader gone mid-run", close_reader_then_finish, True),
    ]
    failed = 0
    for name, end_it, pipe in cases:
        if not run_case(ember, guest, name, end_it, stdout_pipe=pipe):
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
