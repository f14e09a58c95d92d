/* The one interrupt interface devices use. On KVM it maps to KVM_IRQ_LINE /
 * KVM_SIGNAL_MSI (in-kernel IOAPIC/LAPIC); on the software CPU to the
 * userspace IOAPIC/LAPIC model. Devices hold a const struct irq_sink * and
 * never know which. Safe to call from any thread. */
#ifndef EMBER_HW_IRQ_H
#define EMBER_HW_IRQ_H

#include <stdbool.h>
#include <stdint.h>

struct irq_sink {
    void *opaque;
    /* Level of an IOAPIC/PIC input (GSI). Edge devices pulse it. */
    void (*set_level)(void *opaque, unsigned gsi, bool level);
    /* Deliver a message-signalled interrupt (PCI MSI/MSI-X). */
    void (*send_msi)(void *opaque, uint64_t addr, uint32_t data);
};

static inline void irq_set_level(const struct irq_sink *s, unsigned gsi, bool level)
{
    s->set_level(s->opaque, gsi, level);
}

static inline void irq_pulse(const struct irq_sink *s, unsigned gsi)
{
    s->set_level(s->opaque, gsi, true);
    s->set_level(s->opaque, gsi, false);
}

static inline void irq_send_msi(const struct irq_sink *s, uint64_t addr, uint32_t data)
{
    s->send_msi(s->opaque, addr, data);
}

#endif
