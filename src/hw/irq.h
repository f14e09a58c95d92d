/* The one interrupt interface devices use. On KVM it maps to KVM_IRQ_LINE /
 * KVM_SIGNAL_MSI (in-kernel IOAPIC/LAPIC) and, for MSI-X vectors, to irqfds;
 * on the software CPU to the userspace IOAPIC/LAPIC model. Devices hold a
 * const struct irq_sink * and never know which. Safe to call from any
 * thread. */
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

    /* Optional MSI routes (KVM irqfd); NULL or -errno where there are none,
     * and callers then use send_msi. A route binds an eventfd to one
     * message: a write of 1 to fd delivers (addr, data) inside the kernel.
     * add returns a route id >= 0; update changes the message of a route;
     * del unbinds it (fd stays the caller's). Routes do not survive a
     * machine reset: devices delete theirs when they are reset. */
    int (*msi_route_add)(void *opaque, uint64_t addr, uint32_t data, int fd);
    int (*msi_route_update)(void *opaque, int route, uint64_t addr, uint32_t data);
    void (*msi_route_del)(void *opaque, int route);
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
