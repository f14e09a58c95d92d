/* Unit tests for the MP table and firmware_build_tables(): checksums,
 * entry counts and the routing the layout prescribes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "machine/boot.h"
#include "machine/mptable.h"
#include "test_boot_common.h"

static uint8_t sum8(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

struct mp_counts {
    unsigned cpus, bsps, buses, ioapics, ioints, lints, pci_ints;
    int irq0_pin, ioapic_id;
};

/* Walk the table the way an OS does: floating pointer -> header -> entries. */
static void parse_mptable(const uint8_t *base, uint64_t base_gpa, struct mp_counts *c)
{
    memset(c, 0, sizeof(*c));
    c->irq0_pin = -1;
    assert_memory_equal(base, "_MP_", 4);
    assert_int_equal(base[8], 1);
    assert_int_equal(base[9], 4);
    assert_int_equal(sum8(base, 16), 0);
    uint32_t phys = ld32(base + 4);
    assert_true(phys >= base_gpa && phys < base_gpa + 0x10000);
    const uint8_t *hdr = base + (phys - base_gpa);
    assert_memory_equal(hdr, "PCMP", 4);
    uint16_t len = ld16(hdr + 4), count = ld16(hdr + 34);
    assert_int_equal(hdr[6], 4);
    assert_int_equal(sum8(hdr, len), 0);
    assert_int_equal(ld32(hdr + 36), LAYOUT_LAPIC_BASE);

    const uint8_t *e = hdr + 44, *end = hdr + len;
    for (unsigned i = 0; i < count; i++) {
        assert_true(e < end);
        switch (e[0]) {
        case 0:
            assert_int_equal(e[1], c->cpus); /* APIC IDs 0..n-1 in order */
            c->cpus++;
            if (e[3] & 2)
                c->bsps++;
            assert_true(e[3] & 1);
            e += 20;
            continue;
        case 1:
            c->buses++;
            break;
        case 2:
            c->ioapics++;
            c->ioapic_id = e[1];
            assert_int_equal(ld32(e + 4), LAYOUT_IOAPIC_BASE);
            break;
        case 3:
            c->ioints++;
            assert_int_equal(e[6], c->ioapic_id);
            if (e[4] == MPTABLE_BUS_ISA && e[5] == 0)
                c->irq0_pin = e[7];
            if (e[4] == MPTABLE_BUS_PCI) {
                c->pci_ints++;
                unsigned slot = e[5] >> 2, pin = e[5] & 3;
                assert_int_equal(e[7], layout_pci_intx_gsi(slot, pin));
                assert_int_equal(ld16(e + 2), 0xf); /* level, active low */
            }
            break;
        case 4:
            c->lints++;
            break;
        default:
            fail_msg("unknown MP entry type %u", e[0]);
        }
        e += 8;
    }
    assert_ptr_equal(e, end);
}

static void test_mptable_counts(void **state)
{
    (void)state;
    static uint8_t buf[0x10000];
    const unsigned cpus[] = {1, 2, 8, 254};
    for (unsigned k = 0; k < ARRAY_SIZE(cpus); k++) {
        uint32_t mask = (1u << 1) | (1u << 2) | (1u << 31);
        int len = mptable_build(buf, sizeof(buf), cpus[k], mask);
        assert_true(len > 0);
        struct mp_counts c;
        parse_mptable(buf, LAYOUT_MPTABLE_BASE, &c);
        assert_int_equal(c.cpus, cpus[k]);
        assert_int_equal(c.bsps, 1);
        assert_int_equal(c.buses, 2);
        assert_int_equal(c.ioapics, 1);
        assert_int_equal(c.ioapic_id, cpus[k]);
        assert_int_equal(c.pci_ints, 3 * 4);
        assert_int_equal(c.ioints, 15 + 3 * 4);
        assert_int_equal(c.lints, 2);
        assert_int_equal(c.irq0_pin, 2);
    }
}

static void test_mptable_errors(void **state)
{
    (void)state;
    static uint8_t buf[0x10000];
    assert_int_equal(mptable_build(buf, sizeof(buf), 0, 0), -EINVAL);
    assert_int_equal(mptable_build(buf, sizeof(buf), 255, 0), -EINVAL);
    assert_int_equal(mptable_build(buf, 100, 4, 0xffffffff), -ENOSPC);
    assert_int_equal(mptable_build(buf, 10, 1, 0), -ENOSPC);
}

static void test_firmware_tables_in_ram(void **state)
{
    (void)state;
    struct test_vm vm;
    test_vm_init(&vm, 32 * 1024 * 1024);
    struct firmware_config fc = {.nr_cpus = 4, .ram_size = vm.ram_size, .pci_slot_mask = 0x6};
    assert_int_equal(firmware_build_tables(&fc, &vm.mem), 0);
    assert_memory_equal(vm.ram + LAYOUT_ACPI_BASE, "RSD PTR ", 8);
    struct mp_counts c;
    parse_mptable(vm.ram + LAYOUT_MPTABLE_BASE, LAYOUT_MPTABLE_BASE, &c);
    assert_int_equal(c.cpus, 4);

    fc.nr_cpus = 0;
    assert_true(firmware_build_tables(&fc, &vm.mem) < 0);
    test_vm_free(&vm);

    /* RAM that does not reach the BIOS area: refused, not written. */
    struct guest_mem small = {0};
    static uint8_t tiny[0x1000];
    assert_int_equal(guest_mem_add(&small, 0, sizeof(tiny), tiny), 0);
    fc.nr_cpus = 1;
    assert_true(firmware_build_tables(&fc, &small) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mptable_counts),
        cmocka_unit_test(test_mptable_errors),
        cmocka_unit_test(test_firmware_tables_in_ram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
