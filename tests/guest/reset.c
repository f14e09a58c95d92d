/* Reset: "method=kbd" (default) pulses the i8042 reset line (command 0xfe
 * to port 0x64), "method=cf9" writes 0x06 to the reset control register,
 * "method=acpi" writes the FADT's RESET_REG value. The harness runs with
 * -no-reboot, so a reset ends the VMM with status 0; still running after
 * two seconds is a failure. */
#include "guest.h"

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

void guest_main(void)
{
    char method[16] = "kbd";
    cmdline_get("method", method, sizeof(method));
    tap_plan(1);

    if (!strncmp(method, "kbd", sizeof(method))) {
        for (unsigned i = 0; i < 100000 && (inb(0x64) & 2); i++)
            cpu_relax(); /* input buffer full: controller busy */
        tap_check(!(inb(0x64) & 2), "i8042 ready; sending 0xfe (pulse reset) to port 0x64");
        outb(0x64, 0xfe);
    } else if (!strncmp(method, "cf9", sizeof(method))) {
        tap_check(true, "writing 0x06 (system reset) to port 0xcf9");
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
    } else if (!strncmp(method, "acpi", sizeof(method))) {
        uint16_t port = 0;
        uint8_t value = 0;
        bool ok = acpi_reset_reg(&port, &value);
        tap_check(ok, "FADT reset register: I/O port %x value %x", port, value);
        if (!ok)
            tap_finish();
        outb(port, value);
    } else {
        tap_check(false, "unknown method=%s", method);
        tap_finish();
    }
    time_delay_us(2000000);
    printf("not ok 2 - the machine is still running after the reset request\n");
    guest_exit(GUEST_EXIT_FAIL);
}
