/* Reset: "method=kbd" (default) pulses the i8042 reset line (command 0xfe
 * to port 0x64), "method=cf9" writes 0x06 to the reset control register,
 * "method=acpi" writes the FADT's RESET_REG value. The harness runs with
 * -no-reboot, so a reset ends the VMM with status 0; still running after
 * two seconds is a failure.
 *
 * "reboots=N" (run without -no-reboot): the machine must really reset and
 * boot the guest again. CMOS RAM survives a reset (it is battery-backed on
 * a PC) and counts the boots; boots 1..N print a diagnostic and reset, boot
 * N+1 prints the TAP result and exits through isa-debug-exit (33). */
#include "guest.h"

/* CMOS RAM bytes no firmware or VMM uses: a boot counter and a marker
 * saying the counter was initialized by this test. */
#define CMOS_BOOTS 0x6e
#define CMOS_MARK 0x6f
#define CMOS_MARK_VALUE 0xa5

static uint8_t cmos_read(uint8_t idx)
{
    outb(0x70, idx);
    return inb(0x71);
}

static void cmos_write(uint8_t idx, uint8_t v)
{
    outb(0x70, idx);
    outb(0x71, v);
}

/* Returns true when this boot should reset again (and counted it). */
static bool reboot_again(uint64_t reboots)
{
    if (cmos_read(CMOS_MARK) != CMOS_MARK_VALUE) {
        cmos_write(CMOS_BOOTS, 0);
        cmos_write(CMOS_MARK, CMOS_MARK_VALUE);
    }
    uint8_t done = cmos_read(CMOS_BOOTS);
    if (done >= reboots) {
        tap_plan(1);
        tap_check(done == reboots, "booted again after each of %u resets (CMOS kept the count)",
                  (unsigned)done);
        cmos_write(CMOS_MARK, 0);
        guest_exit(done == reboots ? GUEST_EXIT_PASS : GUEST_EXIT_FAIL);
    }
    tap_diag("boot %u of %u: resetting", done + 1u, (unsigned)reboots + 1u);
    cmos_write(CMOS_BOOTS, (uint8_t)(done + 1));
    return true;
}

static bool acpi_reset_reg(uint16_t *port, uint8_t *value)
{
    const struct acpi_header *f = acpi_find_table("FACP", 0);
    if (!f || f->length < 129)
        return false;
    const uint8_t *b = (const uint8_t *)f;
    uint32_t flags;
    uint64_t addr;
    memcpy(&flags, b + 112, 4);
    memcpy(&addr, b + 116 + 4, 8);
    /* RESET_REG_SUP, a system-I/O address, 8-bit register. */
    if (!(flags & (1u << 10)) || b[116] != 1 || !addr || addr > 0xffff)
        return false;
    *port = (uint16_t)addr;
    *value = b[128];
    return true;
}

/* A step before the reset: a TAP result normally; in reboot mode (only the
 * last boot prints TAP) a diagnostic, and a bail-out when it failed. */
static bool quiet;

static void step(bool ok, const char *what)
{
    if (!quiet)
        tap_check(ok, "%s", what);
    else if (ok)
        tap_diag("%s", what);
    else
        tap_bail("%s", what);
}

void guest_main(void)
{
    char method[16] = "kbd", what[96];
    cmdline_get("method", method, sizeof(method));
    uint64_t reboots = cmdline_u64("reboots", 0);
    if (reboots > 16) {
        tap_plan(1);
        tap_check(false, "reboots=%u: at most 16", (unsigned)reboots);
        tap_finish();
    }
    quiet = reboots && reboot_again(reboots);
    if (!quiet)
        tap_plan(1);

    if (!strncmp(method, "kbd", sizeof(method))) {
        for (unsigned i = 0; i < 100000 && (inb(0x64) & 2); i++)
            cpu_relax(); /* input buffer full: controller busy */
        step(!(inb(0x64) & 2), "i8042 ready; sending 0xfe (pulse reset) to port 0x64");
        outb(0x64, 0xfe);
    } else if (!strncmp(method, "cf9", sizeof(method))) {
        step(true, "writing 0x06 (system reset) to port 0xcf9");
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
    } else if (!strncmp(method, "acpi", sizeof(method))) {
        uint16_t port = 0;
        uint8_t value = 0;
        bool ok = acpi_reset_reg(&port, &value);
        snprintf(what, sizeof(what), "FADT reset register: I/O port %x value %x", port, value);
        step(ok, what);
        if (!ok)
            tap_finish();
        outb(port, value);
    } else {
        snprintf(what, sizeof(what), "unknown method=%s", method);
        step(false, what);
        tap_finish();
    }
    time_delay_us(2000000);
    if (quiet)
        tap_bail("the machine is still running after the reset request");
    printf("not ok 2 - the machine is still running after the reset request\n");
    guest_exit(GUEST_EXIT_FAIL);
}
