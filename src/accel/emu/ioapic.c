/* I/O APIC for the software CPU; see ioapic.h. */
#include "accel/emu/ioapic.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"

#define IOAPIC_VERSION (0x11u | ((IOAPIC_PINS - 1u) << 16))

/* Register indices behind IOREGSEL. */
enum { IOAPIC_REG_ID = 0x00, IOAPIC_REG_VER = 0x01, IOAPIC_REG_ARB = 0x02, IOAPIC_REG_REDIR = 0x10 };
/* MMIO offsets. */
enum { IOAPIC_IOREGSEL = 0x00, IOAPIC_IOWIN = 0x10 };

#define RTE_DELIVERY_STATUS (1ull << 12)
#define RTE_REMOTE_IRR (1ull << 14)
#define RTE_LEVEL (1ull << 15)
#define RTE_MASKED (1ull << 16)
#define RTE_READ_ONLY (RTE_DELIVERY_STATUS | RTE_REMOTE_IRR)

struct ioapic {
    pthread_mutex_t lock;
    unsigned (*deliver)(void *opaque, const struct apic_irq *irq);
    void *opaque;
    uint32_t ioregsel;
    uint32_t id;
    uint32_t line; /* input pin levels */
    uint64_t redir[IOAPIC_PINS];
};

void ioapic_reset(struct ioapic *io)
{
    pthread_mutex_lock(&io->lock);
    io->ioregsel = 0;
    io->id = 0;
    io->line = 0;
    for (unsigned i = 0; i < IOAPIC_PINS; i++)
        io->redir[i] = RTE_MASKED;
    pthread_mutex_unlock(&io->lock);
}

struct ioapic *ioapic_new(unsigned (*deliver)(void *opaque, const struct apic_irq *irq),
                          void *opaque)
{
    struct ioapic *io = xzalloc(sizeof(*io));
    pthread_mutex_init(&io->lock, NULL);
    io->deliver = deliver;
    io->opaque = opaque;
    ioapic_reset(io);
    return io;
}

void ioapic_free(struct ioapic *io)
{
    if (!io)
        return;
    pthread_mutex_destroy(&io->lock);
    free(io);
}

/* Send the pin's interrupt. Polarity is ignored, as in KVM: callers pass the
 * logical (asserted) level, whatever the wire's electrical polarity. */
static void service_locked(struct ioapic *io, unsigned pin)
{
    uint64_t e = io->redir[pin];
    struct apic_irq irq = {
        .vector = e & 0xff,
        .delivery = (e >> 8) & 7,
        .logical = e & (1ull << 11),
        .level = e & RTE_LEVEL,
        .assert = true,
        .dest = e >> 56,
        .shorthand = APIC_SH_NONE,
    };
    unsigned hits = io->deliver ? io->deliver(io->opaque, &irq) : 0;
    if ((e & RTE_LEVEL) && hits)
        io->redir[pin] |= RTE_REMOTE_IRR;
}

void ioapic_set_irq(struct ioapic *io, unsigned pin, bool level)
{
    if (pin >= IOAPIC_PINS)
        return;
    uint32_t bit = 1u << pin;
    pthread_mutex_lock(&io->lock);
    bool was = io->line & bit;
    io->line = level ? io->line | bit : io->line & ~bit;
    uint64_t e = io->redir[pin];
    if (level && !(e & RTE_MASKED)) {
        if (e & RTE_LEVEL) {
            if (!(e & RTE_REMOTE_IRR))
                service_locked(io, pin);
        } else if (!was) {
            service_locked(io, pin); /* rising edge */
        }
    }
    pthread_mutex_unlock(&io->lock);
}

void ioapic_eoi(struct ioapic *io, uint8_t vector)
{
    pthread_mutex_lock(&io->lock);
    for (unsigned pin = 0; pin < IOAPIC_PINS; pin++) {
        uint64_t e = io->redir[pin];
        if ((e & 0xff) != vector || !(e & RTE_LEVEL) || !(e & RTE_REMOTE_IRR))
            continue;
        io->redir[pin] &= ~RTE_REMOTE_IRR;
        /* Still asserted: the device wants service again. */
        if ((io->line & (1u << pin)) && !(e & RTE_MASKED))
            service_locked(io, pin);
    }
    pthread_mutex_unlock(&io->lock);
}

static uint32_t read_indirect_locked(const struct ioapic *io)
{
    uint32_t reg = io->ioregsel & 0xff;
    switch (reg) {
    case IOAPIC_REG_ID:
    case IOAPIC_REG_ARB:
        return io->id;
    case IOAPIC_REG_VER:
        return IOAPIC_VERSION;
    default:
        if (reg >= IOAPIC_REG_REDIR && reg < IOAPIC_REG_REDIR + 2 * IOAPIC_PINS) {
            uint64_t e = io->redir[(reg - IOAPIC_REG_REDIR) / 2];
            return (reg & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
        }
        return ~0u; /* reserved */
    }
}

static void write_indirect_locked(struct ioapic *io, uint32_t val)
{
    uint32_t reg = io->ioregsel & 0xff;
    if (reg == IOAPIC_REG_ID) {
        io->id = val & 0x0f000000;
        return;
    }
    if (reg < IOAPIC_REG_REDIR || reg >= IOAPIC_REG_REDIR + 2 * IOAPIC_PINS)
        return; /* version, arbitration and reserved are read-only */
    unsigned pin = (reg - IOAPIC_REG_REDIR) / 2;
    uint64_t old = io->redir[pin], e;
    if (reg & 1) {
        e = (old & 0xffffffffull) | ((uint64_t)val << 32);
    } else {
        e = (old & 0xffffffff00000000ull) | (val & ~(uint32_t)RTE_READ_ONLY);
        e |= old & RTE_READ_ONLY;
        if (!(e & RTE_LEVEL))
            e &= ~RTE_REMOTE_IRR; /* switched to edge: nothing left to EOI */
    }
    io->redir[pin] = e;
    /* Unmasking a level-triggered pin whose line is still asserted. */
    if ((e & RTE_LEVEL) && !(e & RTE_MASKED) && !(e & RTE_REMOTE_IRR) &&
        (io->line & (1u << pin)))
        service_locked(io, pin);
}

uint32_t ioapic_mmio_read(struct ioapic *io, uint64_t offset, unsigned size)
{
    uint32_t v;
    pthread_mutex_lock(&io->lock);
    switch (offset & ~3ull) {
    case IOAPIC_IOREGSEL: v = io->ioregsel; break;
    case IOAPIC_IOWIN: v = read_indirect_locked(io); break;
    default: v = 0; break;
    }
    pthread_mutex_unlock(&io->lock);
    v >>= (offset & 3) * 8;
    return size >= 4 ? v : v & ((1u << (size * 8)) - 1);
}

void ioapic_mmio_write(struct ioapic *io, uint64_t offset, uint32_t val, unsigned size)
{
    pthread_mutex_lock(&io->lock);
    switch (offset & ~3ull) {
    case IOAPIC_IOREGSEL:
        io->ioregsel = val & 0xff;
        break;
    case IOAPIC_IOWIN:
        if (size < 4 || (offset & 3))
            log_debug("ioapic: ignoring %u-byte IOWIN write", size);
        else
            write_indirect_locked(io, val);
        break;
    default:
        break; /* no EOI register before version 0x20 */
    }
    pthread_mutex_unlock(&io->lock);
}

uint64_t ioapic_get_redir(struct ioapic *io, unsigned pin)
{
    if (pin >= IOAPIC_PINS)
        return 0;
    pthread_mutex_lock(&io->lock);
    uint64_t e = io->redir[pin];
    pthread_mutex_unlock(&io->lock);
    return e;
}
