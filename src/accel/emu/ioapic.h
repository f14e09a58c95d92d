/* The software CPU's I/O APIC (82093AA-style, 24 pins, version 0x11 as KVM
 * reports): IOREGSEL/IOWIN at offsets 0x00/0x10 of its MMIO page, ID,
 * version and arbitration registers, 24 redirection entries with edge and
 * level triggering, remote IRR cleared by the LAPIC's EOI broadcast,
 * masking, physical and logical destinations.
 *
 * Delivery goes out through deliver() as an APIC-bus message (lapic.h); the
 * IOAPIC's lock is held while it runs, so deliver() must not call back into
 * the IOAPIC. Safe to call from any thread. */
#ifndef EMBER_ACCEL_EMU_IOAPIC_H
#define EMBER_ACCEL_EMU_IOAPIC_H

#include <stdbool.h>
#include <stdint.h>

#include "accel/emu/lapic.h"

#define IOAPIC_PINS 24
#define IOAPIC_MMIO_SIZE 0x1000ULL

struct ioapic;

/* deliver() returns how many LAPICs took the message; a level-triggered
 * entry only sets remote IRR when at least one did. */
struct ioapic *ioapic_new(unsigned (*deliver)(void *opaque, const struct apic_irq *irq),
                         void *opaque);
void ioapic_free(struct ioapic *io);
void ioapic_reset(struct ioapic *io);

/* Input pin level (devices' GSIs after the ISA override). */
void ioapic_set_irq(struct ioapic *io, unsigned pin, bool level);
/* EOI broadcast for a level-triggered vector from a LAPIC. */
void ioapic_eoi(struct ioapic *io, uint8_t vector);

/* MMIO at offset in the page: 32-bit registers; other sizes access the low
 * bytes of the addressed dword. */
uint32_t ioapic_mmio_read(struct ioapic *io, uint64_t offset, unsigned size);
void ioapic_mmio_write(struct ioapic *io, uint64_t offset, uint32_t val, unsigned size);

/* Raw redirection entry, for tests and debugging. */
uint64_t ioapic_get_redir(struct ioapic *io, unsigned pin);

#endif
