/* Fake interrupt sink and VM control for device tests: they record what
 * the devices drive so tests can assert on it. */
#ifndef EMBER_TESTS_HW_FAKES_H
#define EMBER_TESTS_HW_FAKES_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "hw/bus.h"
#include "hw/irq.h"
#include "hw/vmctl.h"

struct fake_irq {
    bool level[32];
    unsigned changes[32];
    unsigned nr_msi;
    uint64_t msi_addr;
    uint32_t msi_data;
    struct irq_sink sink;
};

static inline void fake_set_level(void *opaque, unsigned gsi, bool level)
{
    struct fake_irq *f = opaque;
    if (gsi < 32) {
        f->level[gsi] = level;
        f->changes[gsi]++;
    }
}

static inline void fake_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
    struct fake_irq *f = opaque;
    f->nr_msi++;
    f->msi_addr = addr;
    f->msi_data = data;
}

static inline void fake_irq_init(struct fake_irq *f)
{
    memset(f, 0, sizeof(*f));
    f->sink.opaque = f;
    f->sink.set_level = fake_set_level;
    f->sink.send_msi = fake_send_msi;
}

struct fake_vm {
    unsigned nr_events;
    enum vm_event last_event;
    int last_code;
    struct vm_control ctl;
};

static inline void fake_vm_request(void *opaque, enum vm_event event, int code)
{
    struct fake_vm *v = opaque;
    v->nr_events++;
    v->last_event = event;
    v->last_code = code;
}

static inline void fake_vm_init(struct fake_vm *v)
{
    memset(v, 0, sizeof(*v));
    v->ctl.opaque = v;
    v->ctl.request = fake_vm_request;
}

/* Port I/O helpers in the style of inb/outb. */
static inline uint32_t io_in(struct bus *b, uint64_t port, unsigned size)
{
    uint32_t v = 0;
    bus_read(b, port, &v, size);
    return v;
}

static inline void io_out(struct bus *b, uint64_t port, uint32_t v, unsigned size)
{
    bus_write(b, port, &v, size);
}

#endif
