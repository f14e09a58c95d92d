/* Unit tests for the software CPU's IOAPIC: register access through
 * IOREGSEL/IOWIN, edge and level triggering, remote IRR and EOI, masking,
 * and the fields of the message it sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "accel/emu/ioapic.h"

static struct apic_irq sent[16];
static unsigned nr_sent;
static unsigned accept_hits = 1;

static unsigned record(void *opaque, const struct apic_irq *irq)
{
    if (nr_sent < 16)
        sent[nr_sent] = *irq;
    nr_sent++;
    return accept_hits;
}

static struct ioapic *io;

static int setup(void **state)
{
    nr_sent = 0;
    accept_hits = 1;
    memset(sent, 0, sizeof(sent));
    io = ioapic_new(record, NULL);
    return 0;
}

static int teardown(void **state)
{
    ioapic_free(io);
    return 0;
}

static uint32_t reg_read(uint32_t reg)
{
    ioapic_mmio_write(io, 0x00, reg, 4);
    return ioapic_mmio_read(io, 0x10, 4);
}

static void reg_write(uint32_t reg, uint32_t val)
{
    ioapic_mmio_write(io, 0x00, reg, 4);
    ioapic_mmio_write(io, 0x10, val, 4);
}

static void program(unsigned pin, uint64_t entry)
{
    reg_write(0x10 + 2 * pin + 1, (uint32_t)(entry >> 32));
    reg_write(0x10 + 2 * pin, (uint32_t)entry);
}

static void test_registers(void **state)
{
    assert_int_equal(reg_read(0x01), 0x00170011);
    reg_write(0x00, 0x0a000000);
    assert_int_equal(reg_read(0x00), 0x0a000000);
    assert_int_equal(reg_read(0x02), 0x0a000000);
    reg_write(0x01, 0); /* read-only */
    assert_int_equal(reg_read(0x01), 0x00170011);
    assert_int_equal(ioapic_mmio_read(io, 0x00, 4), 0x01);
    /* Every pin starts masked. */
    for (unsigned pin = 0; pin < IOAPIC_PINS; pin++)
        assert_int_equal(reg_read(0x10 + 2 * pin), 0x10000);
    assert_int_equal(reg_read(0x10 + 2 * IOAPIC_PINS), 0xffffffff); /* past the table */
    program(5, 0x0300000000000000ull | 0x935);
    assert_int_equal(reg_read(0x1b), 0x03000000);
    assert_int_equal(reg_read(0x1a), 0x935);
    /* Delivery status and remote IRR are read-only. */
    reg_write(0x1a, 0x5935);
    assert_int_equal(reg_read(0x1a), 0x935);
    /* Byte reads of the window. */
    ioapic_mmio_write(io, 0x00, 0x01, 1);
    assert_int_equal(ioapic_mmio_read(io, 0x12, 1), 0x17);
}

static void test_edge(void **state)
{
    program(4, (2ull << 56) | 0x34);
    ioapic_set_irq(io, 4, true);
    assert_int_equal(nr_sent, 1);
    assert_int_equal(sent[0].vector, 0x34);
    assert_int_equal(sent[0].dest, 2);
    assert_int_equal(sent[0].delivery, APIC_DM_FIXED);
    assert_false(sent[0].logical);
    assert_false(sent[0].level);
    ioapic_set_irq(io, 4, true); /* no new edge */
    assert_int_equal(nr_sent, 1);
    ioapic_set_irq(io, 4, false);
    ioapic_set_irq(io, 4, true);
    assert_int_equal(nr_sent, 2);
    /* EOI does nothing for edge pins. */
    ioapic_eoi(io, 0x34);
    assert_int_equal(nr_sent, 2);
    /* An edge while masked is lost. */
    ioapic_set_irq(io, 4, false);
    program(4, (1ull << 16) | 0x34);
    ioapic_set_irq(io, 4, true);
    program(4, 0x34);
    assert_int_equal(nr_sent, 2);
}

static void test_level_remote_irr(void **state)
{
    /* Level, logical, lowest priority, destination 0x0f. */
    program(10, (0x0full << 56) | (1ull << 15) | (1ull << 11) | (1ull << 8) | 0x3a);
    ioapic_set_irq(io, 10, true);
    assert_int_equal(nr_sent, 1);
    assert_true(sent[0].level);
    assert_true(sent[0].logical);
    assert_int_equal(sent[0].delivery, APIC_DM_LOWEST);
    assert_int_equal(sent[0].dest, 0x0f);
    assert_true(ioapic_get_redir(io, 10) & (1ull << 14)); /* remote IRR */
    assert_int_equal(reg_read(0x24) & (1u << 14), 1u << 14);
    ioapic_set_irq(io, 10, true); /* still in service: nothing */
    assert_int_equal(nr_sent, 1);
    ioapic_eoi(io, 0x3b); /* other vector */
    assert_int_equal(nr_sent, 1);
    ioapic_eoi(io, 0x3a); /* line still high: again */
    assert_int_equal(nr_sent, 2);
    ioapic_set_irq(io, 10, false);
    ioapic_eoi(io, 0x3a);
    assert_int_equal(nr_sent, 2);
    assert_false(ioapic_get_redir(io, 10) & (1ull << 14));
    /* Switching the pin to edge clears a stuck remote IRR. */
    ioapic_set_irq(io, 10, true);
    assert_true(ioapic_get_redir(io, 10) & (1ull << 14));
    program(10, 0x3a);
    assert_false(ioapic_get_redir(io, 10) & (1ull << 14));
}

static void test_level_masking(void **state)
{
    program(11, (1ull << 16) | (1ull << 15) | 0x3b);
    ioapic_set_irq(io, 11, true);
    assert_int_equal(nr_sent, 0);
    /* Unmasking with the line asserted delivers at once. */
    program(11, (1ull << 15) | 0x3b);
    assert_int_equal(nr_sent, 1);
    /* Nobody took it: no remote IRR, so the next assert retries. */
    accept_hits = 0;
    ioapic_eoi(io, 0x3b);
    assert_int_equal(nr_sent, 2);
    assert_false(ioapic_get_redir(io, 11) & (1ull << 14));
    /* Out-of-range pins are ignored. */
    ioapic_set_irq(io, 24, true);
    ioapic_set_irq(io, 1000, true);
    assert_int_equal(nr_sent, 2);
}

static void test_delivery_modes(void **state)
{
    program(3, (7ull << 8) | 0); /* ExtINT */
    ioapic_set_irq(io, 3, true);
    assert_int_equal(sent[0].delivery, APIC_DM_EXTINT);
    program(6, (4ull << 8) | 0); /* NMI */
    ioapic_set_irq(io, 6, true);
    assert_int_equal(sent[1].delivery, APIC_DM_NMI);
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* Hostile guest: random MMIO and pin traffic; messages carry what the
 * entries say and nothing crashes. */
static void test_random_programming(void **state)
{
    for (unsigned i = 0; i < 200000; i++) {
        uint32_t r = rng();
        switch (r % 4) {
        case 0: ioapic_mmio_write(io, rng() % 0x1000, rng(), 1u << (rng() % 4)); break;
        case 1: (void)ioapic_mmio_read(io, rng() % 0x1000, 1u << (rng() % 4)); break;
        case 2: ioapic_set_irq(io, rng() % 30, rng() & 1); break;
        default: ioapic_eoi(io, (uint8_t)rng()); break;
        }
    }
    assert_int_equal(reg_read(0x01), 0x00170011);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_remote_irr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_masking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_programming, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
