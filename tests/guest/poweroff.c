/* ACPI power-off: SLP_TYP from the DSDT's \_S5 (or "s5=N" on the command
 * line, else 5) with SLP_EN into the FADT's PM1a (and PM1b) control
 * register. The VMM must exit with status 0; still running after two
 * seconds is a failure. */
#include "guest.h"

#define SLP_EN (1u << 13)

void guest_main(void)
{
    struct acpi_pm_info pm;
    acpi_get_pm_info(&pm);
    tap_plan(2);
    uint16_t cnt = pm.found && pm.pm1a_cnt ? pm.pm1a_cnt : 0x604;
    tap_check(pm.found && pm.pm1a_cnt, "FADT gives PM1a_CNT (%x)", pm.pm1a_cnt);
    uint8_t typ = 5;
    if (pm.have_s5) {
        typ = pm.s5_typ_a;
        tap_check(true, "DSDT \\_S5 gives SLP_TYP %u", typ);
    } else {
        typ = (uint8_t)cmdline_u64("s5", 5);
        tap_skip("no \\_S5 in the DSDT", "SLP_TYP %u from the command line or default", typ);
    }
    uint16_t v = (uint16_t)(((typ & 7u) << 10) | SLP_EN);
    tap_diag("writing %x to port %x", v, cnt);
    outw(cnt, v);
    if (pm.pm1b_cnt)
        outw(pm.pm1b_cnt, v);
    time_delay_us(2000000);
    printf("not ok 3 - the machine is still running after the S5 request\n");
    guest_exit(GUEST_EXIT_FAIL);
}
