/* i8042, isa-debug-exit, ACPI PM and the CMOS RTC through a real pio bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "fakes.h"
#include "hw/acpi_pm.h"
#include "hw/debug_exit.h"
#include "hw/i8042.h"
#include "hw/pvpanic.h"
#include "hw/rtc.h"
#include "machine/layout.h"

/* --- i8042 ------------------------------------------------------------------ */

/* A macro so a failure names the caller's line. */
#define kbc_read_data(pio) (assert_true(io_in((pio), 0x64, 1) & 0x01), (uint8_t)io_in((pio), 0x60, 1))

static void test_i8042(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct fake_vm vm;
    fake_vm_init(&vm);
    struct i8042 *k = i8042_new(pio, &irq.sink, &vm.ctl);
    assert_non_null(k);
    assert_null(i8042_new(pio, &irq.sink, &vm.ctl)); /* ports taken */

    assert_false(io_in(pio, 0x64, 1) & 0x01);
    io_out(pio, 0x64, 0xaa, 1); /* self-test */
    assert_true(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0x55);
    assert_false(irq.level[1]);
    assert_true(io_in(pio, 0x64, 1) & 0x04); /* system flag */

    io_out(pio, 0x64, 0xab, 1);
    assert_int_equal(kbc_read_data(pio), 0x00);
    io_out(pio, 0x64, 0xa9, 1);
    assert_int_equal(kbc_read_data(pio), 0x00);

    /* Command byte round trip; with interrupts off, no IRQ for replies. */
    io_out(pio, 0x64, 0x60, 1);
    io_out(pio, 0x60, 0x44, 1);
    io_out(pio, 0x64, 0x20, 1);
    assert_false(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0x44);
    io_out(pio, 0x64, 0xad, 1);
    io_out(pio, 0x64, 0xa7, 1);
    io_out(pio, 0x64, 0x20, 1);
    assert_int_equal(kbc_read_data(pio), 0x74);
    io_out(pio, 0x64, 0xae, 1);
    io_out(pio, 0x64, 0xa8, 1);
    io_out(pio, 0x64, 0x60, 1);
    io_out(pio, 0x60, 0x47, 1);

    /* Keyboard reset and identify. */
    io_out(pio, 0x60, 0xff, 1);
    assert_true(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0xfa);
    assert_int_equal(kbc_read_data(pio), 0xaa);
    /* Every byte of a multi-byte reply gets its own rising edge: IRQ 1 is
     * edge-triggered, so a line that stays high delivers only the first. */
    unsigned edges_before = irq.changes[1];
    io_out(pio, 0x60, 0xf2, 1);
    assert_true(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0xfa);
    assert_true(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0xab);
    assert_true(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0x41); /* translated */
    assert_false(irq.level[1]);
    /* Rise, then fall+rise after each of the first two reads, then fall. */
    assert_int_equal(irq.changes[1] - edges_before, 6);
    io_out(pio, 0x60, 0xed, 1);
    io_out(pio, 0x60, 0x07, 1);
    assert_int_equal(kbc_read_data(pio), 0xfa);
    assert_int_equal(kbc_read_data(pio), 0xfa);

    /* Aux loopback: AUXDATA flag and IRQ 12. */
    io_out(pio, 0x64, 0xd3, 1);
    io_out(pio, 0x60, 0x5a, 1);
    assert_true(io_in(pio, 0x64, 1) & 0x20);
    assert_true(irq.level[12]);
    assert_false(irq.level[1]);
    assert_int_equal(kbc_read_data(pio), 0x5a);
    assert_false(irq.level[12]);
    io_out(pio, 0x64, 0xd4, 1);
    io_out(pio, 0x60, 0xf2, 1);
    assert_int_equal(kbc_read_data(pio), 0xfa);
    assert_int_equal(kbc_read_data(pio), 0x00);

    /* Output port: reading it keeps the reset line high. */
    io_out(pio, 0x64, 0xd0, 1);
    assert_int_equal(kbc_read_data(pio) & 1, 1);
    assert_int_equal(vm.nr_events, 0);

    /* Hostile: flood without reading, odd sizes. */
    for (int i = 0; i < 100; i++)
        io_out(pio, 0x64, 0x20, 1);
    uint64_t v = ~0ULL;
    bus_write(pio, 0x60, &v, 8);
    bus_read(pio, 0x64, &v, 4);
    i8042_reset(k);
    assert_false(io_in(pio, 0x64, 1) & 0x01);

    /* Reset line: 0xfe, or the output port with bit 0 clear. */
    io_out(pio, 0x64, 0xfe, 1);
    assert_int_equal(vm.nr_events, 1);
    assert_int_equal(vm.last_event, VM_EVENT_RESET);
    io_out(pio, 0x64, 0xd1, 1);
    io_out(pio, 0x60, 0x02, 1);
    assert_int_equal(vm.nr_events, 2);
    io_out(pio, 0x64, 0xff, 1); /* pulse nothing */
    assert_int_equal(vm.nr_events, 2);

    i8042_free(k);
    assert_int_equal(port61_new(pio), 0);
    uint8_t a = (uint8_t)io_in(pio, 0x61, 1), b = (uint8_t)io_in(pio, 0x61, 1);
    assert_int_equal((a ^ b) & 0x10, 0x10); /* refresh toggles */
    io_out(pio, 0x61, 0x03, 1);
    assert_int_equal(io_in(pio, 0x61, 1) & 0x0f, 0x03);
    bus_free(pio);
}

/* --- pvpanic ------------------------------------------------------------------- */

static void test_pvpanic(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_vm vm;
    fake_vm_init(&vm);
    assert_int_equal(pvpanic_new(pio, PVPANIC_PORT, &vm.ctl), 0);
    assert_int_equal(pvpanic_new(pio, PVPANIC_PORT, &vm.ctl), -EEXIST);
    /* Linux reads the supported events and only sends those. */
    assert_int_equal(io_in(pio, PVPANIC_PORT, 1), PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
    io_out(pio, PVPANIC_PORT, PVPANIC_CRASH_LOADED, 1); /* kdump takes over: keep running */
    assert_int_equal(vm.nr_events, 0);
    io_out(pio, PVPANIC_PORT, 0, 1);
    assert_int_equal(vm.nr_events, 0);
    io_out(pio, PVPANIC_PORT, PVPANIC_PANICKED, 1);
    assert_int_equal(vm.nr_events, 1);
    assert_int_equal(vm.last_event, VM_EVENT_EXIT);
    assert_int_equal(vm.last_code, PVPANIC_EXIT_STATUS);
    pvpanic_free(pio, PVPANIC_PORT, &vm.ctl);
    assert_int_equal(pvpanic_new(pio, PVPANIC_PORT, &vm.ctl), 0);
    pvpanic_free(pio, PVPANIC_PORT, &vm.ctl);
    bus_free(pio);
}

/* --- isa-debug-exit ------------------------------------------------------------ */

static void test_debug_exit(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_vm vm;
    fake_vm_init(&vm);
    assert_int_equal(debug_exit_new(pio, 0xf4, 3, &vm.ctl), -EINVAL);
    assert_int_equal(debug_exit_new(pio, 0xfffe, 4, &vm.ctl), -EINVAL);
    assert_int_equal(debug_exit_new(pio, 0xf4, 4, &vm.ctl), 0);
    assert_int_equal(debug_exit_new(pio, 0xf4, 1, &vm.ctl), -EEXIST);
    io_out(pio, 0xf4, 0x10, 4);
    assert_int_equal(vm.last_event, VM_EVENT_EXIT);
    assert_int_equal(vm.last_code, 0x21);
    io_out(pio, 0xf4, 0x00, 1);
    assert_int_equal(vm.last_code, 1);
    io_out(pio, 0xf6, 0x31, 2); /* inside the 4-byte port */
    assert_int_equal(vm.last_code, 0x63);
    assert_int_equal(vm.nr_events, 3);
    debug_exit_free(pio, 0xf4, &vm.ctl);
    assert_int_equal(debug_exit_new(pio, 0x501, 2, &vm.ctl), 0);
    io_out(pio, 0x501, 0x1234, 2);
    assert_int_equal(vm.last_code, 0x2469);
    io_out(pio, 0x501, 0xff, 1);
    assert_int_equal(vm.last_code, 0x1ff);
    debug_exit_free(pio, 0x501, &vm.ctl);
    bus_free(pio);
}

/* --- ACPI PM --------------------------------------------------------------------- */

static void test_acpi_pm(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct fake_vm vm;
    fake_vm_init(&vm);
    struct acpi_pm *pm = acpi_pm_new(pio, &irq.sink, &vm.ctl);
    assert_non_null(pm);

    assert_int_equal(io_in(pio, LAYOUT_ACPI_PM1_CNT, 2) & 1, 1); /* SCI_EN */
    /* S1 (not supported) does nothing; S5 powers off. */
    io_out(pio, LAYOUT_ACPI_PM1_CNT, (1 << 10) | (1 << 13), 2);
    assert_int_equal(vm.nr_events, 0);
    io_out(pio, LAYOUT_ACPI_PM1_CNT, (5 << 10), 2); /* type without SLP_EN */
    assert_int_equal(vm.nr_events, 0);
    assert_false(io_in(pio, LAYOUT_ACPI_PM1_CNT, 2) & (1 << 13));
    io_out(pio, LAYOUT_ACPI_PM1_CNT, (5 << 10) | (1 << 13), 2);
    assert_int_equal(vm.nr_events, 1);
    assert_int_equal(vm.last_event, VM_EVENT_POWEROFF);
    /* Byte write of the high half (SLP_EN | SLP_TYP=5 = 0x34). */
    io_out(pio, LAYOUT_ACPI_PM1_CNT + 1, 0x34, 1);
    assert_int_equal(vm.nr_events, 2);

    /* Power button: status, then SCI once enabled; W1C. */
    acpi_pm_press_power_button(pm);
    assert_true(io_in(pio, LAYOUT_ACPI_PM1_EVT, 2) & 0x100);
    assert_false(irq.level[LAYOUT_ACPI_SCI_GSI]);
    io_out(pio, LAYOUT_ACPI_PM1_EVT + 2, 0x100, 2);
    assert_int_equal(io_in(pio, LAYOUT_ACPI_PM1_EVT + 2, 2), 0x100);
    assert_true(irq.level[LAYOUT_ACPI_SCI_GSI]);
    io_out(pio, LAYOUT_ACPI_PM1_EVT, 0x100, 2);
    assert_false(io_in(pio, LAYOUT_ACPI_PM1_EVT, 2) & 0x100);
    assert_false(irq.level[LAYOUT_ACPI_SCI_GSI]);
    assert_int_equal(io_in(pio, LAYOUT_ACPI_PM1_EVT, 4) >> 16, 0x100); /* dword: both */

    /* PM timer: 24 bits, never runs backwards within one wrap. */
    uint32_t t1 = io_in(pio, LAYOUT_ACPI_PM_TMR, 4);
    uint32_t t2 = io_in(pio, LAYOUT_ACPI_PM_TMR, 4);
    assert_int_equal(t1 >> 24, 0);
    assert_true(((t2 - t1) & 0xffffff) < 0x800000);

    /* Hostile sizes. */
    uint64_t v = ~0ULL;
    for (unsigned p = LAYOUT_ACPI_PM_BASE; p < LAYOUT_ACPI_PM_BASE + 12; p++) {
        bus_read(pio, p, &v, 8);
        bus_read(pio, p, &v, 1);
    }
    io_out(pio, LAYOUT_ACPI_PM_TMR, 0, 4); /* read-only */
    acpi_pm_reset(pm);
    assert_int_equal(io_in(pio, LAYOUT_ACPI_PM1_EVT + 2, 2), 0);
    acpi_pm_free(pm);
    bus_free(pio);
}

/* --- RTC --------------------------------------------------------------------------- */

struct fake_clock {
    uint64_t ns;
};

static uint64_t fake_now(void *opaque) { return ((struct fake_clock *)opaque)->ns; }

/* 2024-02-29 13:45:56 UTC, a Thursday. */
#define T0 1709214356ULL

static uint8_t cmos(struct bus *pio, uint8_t idx)
{
    io_out(pio, 0x70, idx, 1);
    return (uint8_t)io_in(pio, 0x71, 1);
}

static void cmos_set(struct bus *pio, uint8_t idx, uint8_t v)
{
    io_out(pio, 0x70, idx, 1);
    io_out(pio, 0x71, v, 1);
}

static void test_rtc_time(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct rtc *r = rtc_new(pio, &irq.sink, 128 * MiB);
    assert_non_null(r);
    struct fake_clock clk = {T0 * 1000000000ULL + 1000};
    rtc_set_clock(r, fake_now, &clk);

    /* BCD, 24 h. */
    assert_int_equal(cmos(pio, 0x0b), 0x02);
    assert_int_equal(cmos(pio, 0x00), 0x56);
    assert_int_equal(cmos(pio, 0x02), 0x45);
    assert_int_equal(cmos(pio, 0x04), 0x13);
    assert_int_equal(cmos(pio, 0x06), 0x05);
    assert_int_equal(cmos(pio, 0x07), 0x29);
    assert_int_equal(cmos(pio, 0x08), 0x02);
    assert_int_equal(cmos(pio, 0x09), 0x24);
    assert_int_equal(cmos(pio, 0x32), 0x20);
    assert_int_equal(cmos(pio, 0x0d), 0x80);
    assert_int_equal(cmos(pio, 0x0a) & 0x7f, 0x26);
    assert_false(cmos(pio, 0x0a) & 0x80);
    clk.ns = T0 * 1000000000ULL + 999900000ULL; /* inside the UIP window */
    assert_true(cmos(pio, 0x0a) & 0x80);

    /* Binary, 12 h: 13:45 is 1 PM. */
    cmos_set(pio, 0x0b, 0x04);
    assert_int_equal(cmos(pio, 0x04), 0x81);
    assert_int_equal(cmos(pio, 0x00), 56);
    assert_int_equal(cmos(pio, 0x09), 24);
    assert_int_equal(cmos(pio, 0x32), 20);
    cmos_set(pio, 0x0b, 0x06);
    assert_int_equal(cmos(pio, 0x04), 13);

    /* Setting the time with SET: frozen while set, then running from it. */
    cmos_set(pio, 0x0b, 0x86);
    cmos_set(pio, 0x04, 7);
    cmos_set(pio, 0x09, 30);
    clk.ns += 5000000000ULL;
    assert_int_equal(cmos(pio, 0x00), 56); /* frozen */
    cmos_set(pio, 0x0b, 0x06);
    assert_int_equal(cmos(pio, 0x04), 7);
    assert_int_equal(cmos(pio, 0x09), 30);
    clk.ns += 2000000000ULL;
    assert_int_equal(cmos(pio, 0x00), 58);

    /* Memory size bytes for 128 MiB. */
    assert_int_equal(cmos(pio, 0x15) | cmos(pio, 0x16) << 8, 640);
    assert_int_equal(cmos(pio, 0x17) | cmos(pio, 0x18) << 8, 0xffff); /* capped */
    assert_int_equal(cmos(pio, 0x30) | cmos(pio, 0x31) << 8, 0xffff);
    assert_int_equal(cmos(pio, 0x34) | cmos(pio, 0x35) << 8, (128 - 16) * 16);
    assert_int_equal(cmos(pio, 0x5b) | cmos(pio, 0x5c) << 8 | cmos(pio, 0x5d) << 16, 0);

    /* CMOS RAM is plain storage; NMI bit in the index is ignored. */
    io_out(pio, 0x70, 0x80 | 0x40, 1);
    io_out(pio, 0x71, 0xa5, 1);
    assert_int_equal(cmos(pio, 0x40), 0xa5);
    assert_int_equal(io_in(pio, 0x70, 1), 0xff);
    rtc_free(r);

    /* 6 GiB: 3 GiB low, 3 GiB high; 8 MiB: small extended memory. */
    r = rtc_new(pio, &irq.sink, 6 * GiB);
    assert_int_equal(cmos(pio, 0x34) | cmos(pio, 0x35) << 8, (3 * GiB - 16 * MiB) / (64 * KiB));
    assert_int_equal(cmos(pio, 0x5b) | cmos(pio, 0x5c) << 8 | cmos(pio, 0x5d) << 16,
                     (3 * GiB) / (64 * KiB));
    rtc_free(r);
    r = rtc_new(pio, &irq.sink, 8 * MiB);
    assert_int_equal(cmos(pio, 0x17) | cmos(pio, 0x18) << 8, 7 * 1024);
    assert_int_equal(cmos(pio, 0x34) | cmos(pio, 0x35) << 8, 0);
    rtc_free(r);
    bus_free(pio);
}

static void test_rtc_interrupts(void **state)
{
    (void)state;
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct rtc *r = rtc_new(pio, &irq.sink, 64 * MiB);
    struct fake_clock clk = {T0 * 1000000000ULL};
    rtc_set_clock(r, fake_now, &clk);
    assert_int_equal(cmos(pio, 0x0c), 0);

    /* Update-ended: flag always, interrupt only when enabled. */
    clk.ns += 1000000000ULL;
    rtc_poll(r);
    assert_false(irq.level[8]);
    assert_int_equal(cmos(pio, 0x0c) & 0xb0, 0x10); /* PF may be set too */
    assert_int_equal(cmos(pio, 0x0c), 0); /* read clears */
    cmos_set(pio, 0x0b, 0x12);
    clk.ns += 1000000000ULL;
    rtc_poll(r);
    assert_true(irq.level[8]);
    assert_int_equal(cmos(pio, 0x0c) & 0xb0, 0x90);
    assert_false(irq.level[8]);

    /* Periodic at 1024 Hz (rate 6). */
    cmos_set(pio, 0x0b, 0x42);
    rtc_poll(r);
    clk.ns += 976563;
    rtc_poll(r);
    assert_true(irq.level[8]);
    assert_int_equal(cmos(pio, 0x0c) & 0xc0, 0xc0);
    assert_false(irq.level[8]);
    /* Rate 0 stops it. */
    cmos_set(pio, 0x0a, 0x20);
    clk.ns += 100000000ULL;
    rtc_poll(r);
    assert_false(cmos(pio, 0x0c) & 0x40);

    /* Alarm with "don't care" hours/minutes at second 30. */
    cmos_set(pio, 0x01, 0x30);
    cmos_set(pio, 0x03, 0xc0);
    cmos_set(pio, 0x05, 0xc0);
    cmos_set(pio, 0x0b, 0x22);
    cmos(pio, 0x0c);
    uint64_t now_s = clk.ns / 1000000000ULL;
    uint64_t sec = now_s % 60;
    clk.ns = (now_s + (30 + 60 - sec) % 60) * 1000000000ULL;
    rtc_poll(r);
    assert_true(irq.level[8]);
    assert_true(cmos(pio, 0x0c) & 0x20);

    rtc_reset(r);
    assert_false(irq.level[8]);
    assert_int_equal(cmos(pio, 0x0b), 0x02);
    rtc_free(r);
    bus_free(pio);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i8042),
        cmocka_unit_test(test_debug_exit),
        cmocka_unit_test(test_pvpanic),
        cmocka_unit_test(test_acpi_pm),
        cmocka_unit_test(test_rtc_time),
        cmocka_unit_test(test_rtc_interrupts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
