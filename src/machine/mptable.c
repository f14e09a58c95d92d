/* MP table (Intel MP spec 1.4, chapter 4): floating pointer structure,
 * configuration table header, then entries in the order the spec asks:
 * processors, buses, I/O APICs, I/O interrupt assignments, local interrupt
 * assignments. Routing follows machine/layout.h, same as the ACPI tables. */
#include "machine/mptable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

#define MP_FLOAT_SIZE 16
#define MP_HEADER_SIZE 44
#define MP_SPEC_REV 4 /* 1.4 */

enum mp_entry_type { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINT = 3, MP_LINT = 4 };
enum mp_int_type { MP_INT = 0, MP_NMI = 1, MP_SMI = 2, MP_EXTINT = 3 };

/* I/O interrupt flags: polarity bits 0-1, trigger bits 2-3 (1 = high/edge, 3 = low/level). */
#define MP_FLAGS_CONFORMS 0x0
#define MP_FLAGS_HIGH_LEVEL 0xd
#define MP_FLAGS_LOW_LEVEL 0xf

#define MP_CPU_ENABLED 0x1
#define MP_CPU_BSP 0x2
#define MP_APIC_VERSION 0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_CPU_SIGNATURE 0x600 /* family 6 */
#define MP_CPU_FEATURES 0x201  /* FPU | APIC */

struct mp_writer {
    uint8_t *buf;
    size_t size, len;
    unsigned entries;
    bool overflow;
};

static uint8_t *mp_reserve(struct mp_writer *w, size_t n)
{
    if (w->overflow || n > w->size - w->len) {
        w->overflow = true;
        return NULL;
    }
    uint8_t *p = w->buf + w->len;
    memset(p, 0, n);
    w->len += n;
    return p;
}

static uint8_t mp_checksum(const uint8_t *p, size_t n)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += p[i];
    return (uint8_t)-sum;
}

static void mp_add_processor(struct mp_writer *w, unsigned apic_id, bool bsp)
{
    uint8_t *e = mp_reserve(w, 20);
    if (!e)
        return;
    e[0] = MP_PROCESSOR;
    e[1] = (uint8_t)apic_id;
    e[2] = MP_APIC_VERSION;
    e[3] = MP_CPU_ENABLED | (bsp ? MP_CPU_BSP : 0);
    st32(e + 4, MP_CPU_SIGNATURE);
    st32(e + 8, MP_CPU_FEATURES);
    w->entries++;
}

static void mp_add_bus(struct mp_writer *w, unsigned id, const char type[6])
{
    uint8_t *e = mp_reserve(w, 8);
    if (!e)
        return;
    e[0] = MP_BUS;
    e[1] = (uint8_t)id;
    memcpy(e + 2, type, 6);
    w->entries++;
}

static void mp_add_ioapic(struct mp_writer *w, unsigned id)
{
    uint8_t *e = mp_reserve(w, 8);
    if (!e)
        return;
    e[0] = MP_IOAPIC;
    e[1] = (uint8_t)id;
    e[2] = MP_IOAPIC_VERSION;
    e[3] = 1; /* enabled */
    st32(e + 4, (uint32_t)LAYOUT_IOAPIC_BASE);
    w->entries++;
}

/* I/O (type 3) and local (type 4) interrupt entries share one layout. */
static void mp_add_interrupt(struct mp_writer *w, enum mp_entry_type type, enum mp_int_type kind,
                             uint16_t flags, unsigned bus, unsigned bus_irq, unsigned dst_id,
                             unsigned dst_pin)
{
    uint8_t *e = mp_reserve(w, 8);
    if (!e)
        return;
    e[0] = type;
    e[1] = kind;
    st16(e + 2, flags);
    e[4] = (uint8_t)bus;
    e[5] = (uint8_t)bus_irq;
    e[6] = (uint8_t)dst_id;
    e[7] = (uint8_t)dst_pin;
    w->entries++;
}

int mptable_build(uint8_t *buf, size_t size, unsigned nr_cpus, uint32_t pci_slot_mask)
{
    if (nr_cpus == 0 || nr_cpus > MPTABLE_MAX_CPUS)
        return log_fail(-EINVAL, "mptable: %u CPUs is outside 1..%u", nr_cpus, MPTABLE_MAX_CPUS);
    struct mp_writer w = {.buf = buf, .size = size};
    uint8_t *fp = mp_reserve(&w, MP_FLOAT_SIZE);
    uint8_t *hdr = mp_reserve(&w, MP_HEADER_SIZE);
    if (!fp || !hdr)
        return -ENOSPC;
    size_t table_start = MP_FLOAT_SIZE;
    unsigned ioapic_id = nr_cpus;

    for (unsigned cpu = 0; cpu < nr_cpus; cpu++)
        mp_add_processor(&w, cpu, cpu == 0);
    mp_add_bus(&w, MPTABLE_BUS_PCI, "PCI   ");
    mp_add_bus(&w, MPTABLE_BUS_ISA, "ISA   ");
    mp_add_ioapic(&w, ioapic_id);

    /* ISA IRQs are identity-mapped to IOAPIC pins except IRQ0 (the PIT),
     * which every PC wires to pin 2; nothing else arrives on pin 2 (the
     * cascade). IRQ9 is the ACPI SCI, level-triggered active-high. */
    for (unsigned irq = 0; irq < 16; irq++) {
        if (irq == 2)
            continue;
        unsigned pin = irq == 0 ? 2 : irq;
        uint16_t flags = irq == LAYOUT_ACPI_SCI_GSI ? MP_FLAGS_HIGH_LEVEL : MP_FLAGS_CONFORMS;
        mp_add_interrupt(&w, MP_IOINT, MP_INT, flags, MPTABLE_BUS_ISA, irq, ioapic_id, pin);
    }
    /* PCI INTx: source IRQ = slot << 2 | pin (MP spec, D.3), level/active-low. */
    for (unsigned slot = 0; slot < 32; slot++) {
        if (!(pci_slot_mask & (1u << slot)))
            continue;
        for (unsigned pin = 0; pin < 4; pin++)
            mp_add_interrupt(&w, MP_IOINT, MP_INT, MP_FLAGS_LOW_LEVEL, MPTABLE_BUS_PCI,
                             slot << 2 | pin, ioapic_id, layout_pci_intx_gsi(slot, pin));
    }
    /* LINT0 is the 8259's ExtINT, LINT1 the NMI, on every local APIC. */
    mp_add_interrupt(&w, MP_LINT, MP_EXTINT, MP_FLAGS_CONFORMS, MPTABLE_BUS_ISA, 0, 0xff, 0);
    mp_add_interrupt(&w, MP_LINT, MP_NMI, MP_FLAGS_CONFORMS, MPTABLE_BUS_ISA, 0, 0xff, 1);
    if (w.overflow)
        return -ENOSPC;

    size_t table_len = w.len - table_start;
    memcpy(hdr, "PCMP", 4);
    st16(hdr + 4, (uint16_t)table_len);
    hdr[6] = MP_SPEC_REV;
    memcpy(hdr + 8, "EMBER   ", 8);
    memcpy(hdr + 16, "EMBER PC    ", 12);
    st16(hdr + 34, (uint16_t)w.entries);
    st32(hdr + 36, (uint32_t)LAYOUT_LAPIC_BASE);
    hdr[7] = mp_checksum(hdr, table_len);

    memcpy(fp, "_MP_", 4);
    st32(fp + 4, (uint32_t)(LAYOUT_MPTABLE_BASE + table_start));
    fp[8] = 1; /* length in 16-byte units */
    fp[9] = MP_SPEC_REV;
    /* feature bytes 0: a config table is present, no IMCR (virtual wire mode) */
    fp[10] = mp_checksum(fp, MP_FLOAT_SIZE);
    return (int)w.len;
}

int mptable_write(const struct guest_mem *mem, unsigned nr_cpus, uint32_t pci_slot_mask)
{
    size_t size = 64 * KiB;
    uint8_t *buf = xmalloc(size);
    int len = mptable_build(buf, size, nr_cpus, pci_slot_mask);
    if (len == -ENOSPC)
        log_error("mptable: %u CPUs do not fit in 64 KiB", nr_cpus);
    if (len >= 0 && guest_mem_write(mem, LAYOUT_MPTABLE_BASE, buf, (size_t)len))
        len = log_fail(-EFAULT, "mptable: guest RAM does not cover 0x%llx",
                       (unsigned long long)LAYOUT_MPTABLE_BASE);
    free(buf);
    return len < 0 ? len : 0;
}
