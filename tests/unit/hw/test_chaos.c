/* Hostile-guest smoke test: every device of this module on one pair of
 * buses, then a deterministic stream of random accesses (any size, any
 * offset) at their ports, the PCI config mechanisms, ECAM and the BARs.
 * Passing means: no crash, no sanitizer report, state still sane. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "fakes.h"
#include "hw/acpi_pm.h"
#include "hw/debug_exit.h"
#include "hw/i8042.h"
#include "hw/pci.h"
#include "hw/rtc.h"
#include "hw/serial.h"
#include "machine/layout.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic across runs and hosts. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static uint64_t dummy_read(void *opaque, uint64_t offset, unsigned size) { return offset; }
static void dummy_write(void *opaque, uint64_t offset, uint64_t value, unsigned size) {}
static const struct bus_ops dummy_ops = {.read = dummy_read, .write = dummy_write};

static uint64_t fixed_clock(void *opaque) { return 1700000000ULL * 1000000000ULL; }

static void test_random_accesses(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR); /* random sleep types would warn */
    const char *seed = getenv("EMBER_CHAOS_SEED"); /* explore other streams by hand */
    if (seed)
        rng_state = strtoull(seed, NULL, 0) | 1;
    struct bus *pio = bus_new("pio"), *mmio = bus_new("mmio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct fake_vm vm;
    fake_vm_init(&vm);
    struct serial *s = serial_new(pio, LAYOUT_COM1_PORT, LAYOUT_COM1_GSI, &irq.sink, NULL);
    struct i8042 *k = i8042_new(pio, &irq.sink, &vm.ctl);
    struct rtc *r = rtc_new(pio, &irq.sink, 512 * MiB);
    rtc_set_clock(r, fixed_clock, NULL); /* no interrupt thread */
    struct acpi_pm *pm = acpi_pm_new(pio, &irq.sink, &vm.ctl);
    assert_int_equal(debug_exit_new(pio, 0xf4, 4, &vm.ctl), 0);
    struct pci_bus *pci = pci_bus_new(pio, mmio, &irq.sink);
    assert_true(s && k && r && pm && pci);
    static const struct pci_device_id id = {.vendor = 0x1af4, .device = 0x1041};
    for (int i = 0; i < 3; i++) {
        struct pci_device *d = pci_device_new(pci, "chaos", &id, NULL, NULL);
        assert_int_equal(pci_device_add_bar(d, 0, PCI_BAR_IO, 64, &dummy_ops, NULL), 0);
        assert_int_equal(pci_device_add_bar(d, 1, PCI_BAR_MEM32, 8192, &dummy_ops, NULL), 0);
        assert_int_equal(pci_device_add_bar(d, 2, PCI_BAR_MEM64, 16384, &dummy_ops, NULL), 0);
        assert_int_equal(pci_device_init_msix(d, 8, 1, 0, 4096), 0);
    }
    assert_int_equal(pci_bus_assign_bars(pci), 0);

    static const uint64_t ports[][2] = {
        {LAYOUT_COM1_PORT, 8}, {0x60, 8},   {0x70, 2},          {LAYOUT_ACPI_PM_BASE, 12},
        {0xcf8, 8},            {0xf4, 4},   {LAYOUT_PCI_PIO_BASE, 0x100},
    };
    for (unsigned i = 0; i < 200000; i++) {
        uint64_t x = rnd();
        unsigned size = 1u << (x & 3);
        uint64_t value = rnd();
        bool write = (x >> 2) & 1;
        uint64_t addr;
        struct bus *bus;
        if (((x >> 3) & 3) == 0) {
            bus = mmio;
            if ((x >> 5) & 1)
                addr = LAYOUT_PCI_ECAM_BASE + (rnd() % (4 * 32768)); /* slots 0-3 */
            else
                addr = LAYOUT_PCI_MMIO32_BASE + (rnd() % 0x20000);
        } else {
            bus = pio;
            const uint64_t *p = ports[(x >> 6) % ARRAY_SIZE(ports)];
            addr = p[0] + (rnd() % p[1]);
        }
        /* Keep the config address pointed at real devices most of the time. */
        if (bus == pio && addr == 0xcf8 && write && size == 4)
            value = 0x80000000u | (value & 0x1ffc);
        if (write)
            bus_write(bus, addr, &value, size);
        else
            bus_read(bus, addr, &value, size);
    }
    /* Still answering like the devices they are. */
    pci_bus_reset(pci);
    serial_reset(s);
    i8042_reset(k);
    io_out(pio, 0x64, 0xaa, 1);
    assert_int_equal(io_in(pio, 0x60, 1), 0x55);
    io_out(pio, 0xcf8, 0x80000000u, 4);
    assert_int_equal(io_in(pio, 0xcfc, 4), 0x29c08086);
    io_out(pio, LAYOUT_COM1_PORT + 7, 0x42, 1);
    assert_int_equal(io_in(pio, LAYOUT_COM1_PORT + 7, 1), 0x42);

    pci_bus_free(pci);
    debug_exit_free(pio, 0xf4, &vm.ctl);
    acpi_pm_free(pm);
    rtc_free(r);
    i8042_free(k);
    serial_free(s);
    bus_free(pio);
    bus_free(mmio);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_accesses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
