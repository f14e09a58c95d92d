/* 8259A PIC pair for the software CPU; see pic.h. */
#include "accel/emu/pic.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"
#include "hw/bus.h"

struct pic_chip {
    uint8_t irr, imr, isr;
    uint8_t last_level; /* input levels, for edge detection */
    uint8_t elcr, elcr_mask;
    uint8_t irq_base;
    uint8_t priority_add; /* the lowest-priority IRQ is priority_add - 1 */
    uint8_t init_state;   /* 0: ready, 1: expect ICW2, 2: ICW3, 3: ICW4 */
    bool init4, single, auto_eoi, rotate_on_auto_eoi, special_fully_nested;
    bool special_mask, poll, read_isr;
};

struct pic {
    pthread_mutex_t lock;
    struct pic_chip chip[2]; /* master, slave */
    atomic_bool output;
    void (*notify)(void *opaque);
    void *opaque;
};

/* ---- priority logic (lock held) -------------------------------------------- */

/* Priority (0 = highest) of the best bit in mask, 8 if none. */
static unsigned priority_of(const struct pic_chip *c, uint8_t mask)
{
    if (!mask)
        return 8;
    unsigned prio = 0;
    while (!(mask & (1u << ((prio + c->priority_add) & 7))))
        prio++;
    return prio;
}

/* The IRQ this chip would raise now, or -1. */
static int chip_pending_irq(const struct pic_chip *c, bool master)
{
    unsigned prio = priority_of(c, c->irr & ~c->imr);
    if (prio == 8)
        return -1;
    uint8_t in_service = c->isr;
    if (c->special_mask)
        in_service &= ~c->imr;
    /* Special fully nested: the slave's own priorities decide, not the
     * master's cascade ISR bit. */
    if (c->special_fully_nested && master)
        in_service &= ~(1u << 2);
    if (prio < priority_of(c, in_service))
        return (int)((prio + c->priority_add) & 7);
    return -1;
}

static void chip_set_input(struct pic_chip *c, unsigned irq, bool level)
{
    uint8_t bit = 1u << irq;
    if (c->elcr & bit) { /* level-triggered: IRR follows the line */
        c->irr = level ? c->irr | bit : c->irr & ~bit;
    } else if (level && !(c->last_level & bit)) {
        c->irr |= bit;
    }
    c->last_level = level ? c->last_level | bit : c->last_level & ~bit;
}

/* Propagate the slave's request to master IRQ2 and recompute INT. Returns
 * true if the output changed. */
static bool update_locked(struct pic *p)
{
    /* Like KVM, a pending slave request re-latches master IRR2 on every
     * update (a pulse on the cascade line), so a second slave request after
     * an acknowledge is not lost. */
    if (chip_pending_irq(&p->chip[1], false) >= 0) {
        chip_set_input(&p->chip[0], 2, true);
        chip_set_input(&p->chip[0], 2, false);
    }
    bool out = chip_pending_irq(&p->chip[0], true) >= 0;
    return atomic_exchange(&p->output, out) != out;
}

static void notify(struct pic *p, bool changed)
{
    if (changed && p->notify)
        p->notify(p->opaque);
}

static void chip_ack(struct pic_chip *c, unsigned irq)
{
    uint8_t bit = 1u << irq;
    if (c->auto_eoi) {
        if (c->rotate_on_auto_eoi)
            c->priority_add = (irq + 1) & 7;
    } else {
        c->isr |= bit;
    }
    if (!(c->elcr & bit))
        c->irr &= ~bit; /* edge requests are consumed; level ones follow the line */
}

/* ---- public ---------------------------------------------------------------- */

static void chip_reset(struct pic_chip *c)
{
    uint8_t elcr = c->elcr, elcr_mask = c->elcr_mask;
    *c = (struct pic_chip){.elcr = elcr, .elcr_mask = elcr_mask};
}

void pic_reset(struct pic *p)
{
    pthread_mutex_lock(&p->lock);
    for (unsigned i = 0; i < 2; i++) {
        chip_reset(&p->chip[i]);
        p->chip[i].elcr = 0;
    }
    bool changed = update_locked(p);
    pthread_mutex_unlock(&p->lock);
    notify(p, changed);
}

struct pic *pic_new(void (*notify_fn)(void *opaque), void *opaque)
{
    struct pic *p = xzalloc(sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->notify = notify_fn;
    p->opaque = opaque;
    /* IRQ0-2 (timer, keyboard, cascade) and IRQ8/13 (RTC, FPU) are edge-only. */
    p->chip[0].elcr_mask = 0xf8;
    p->chip[1].elcr_mask = 0xde;
    pic_reset(p);
    return p;
}

void pic_free(struct pic *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void pic_set_irq(struct pic *p, unsigned irq, bool level)
{
    if (irq >= 16)
        return;
    pthread_mutex_lock(&p->lock);
    chip_set_input(&p->chip[irq >> 3], irq & 7, level);
    bool changed = update_locked(p);
    pthread_mutex_unlock(&p->lock);
    notify(p, changed);
}

bool pic_output(struct pic *p) { return atomic_load(&p->output); }

int pic_intack(struct pic *p)
{
    struct pic_chip *m = &p->chip[0], *s = &p->chip[1];
    int vector;
    pthread_mutex_lock(&p->lock);
    int irq = chip_pending_irq(m, true);
    if (irq < 0) {
        vector = m->irq_base + 7; /* spurious IRQ7: the request went away */
    } else {
        chip_ack(m, (unsigned)irq);
        if (irq == 2) {
            int irq2 = chip_pending_irq(s, false);
            if (irq2 >= 0)
                chip_ack(s, (unsigned)irq2);
            else
                irq2 = 7; /* spurious IRQ15 */
            vector = s->irq_base + irq2;
        } else {
            vector = m->irq_base + irq;
        }
    }
    bool changed = update_locked(p);
    pthread_mutex_unlock(&p->lock);
    notify(p, changed);
    return vector;
}

/* ---- ports ------------------------------------------------------------------ */

static void write_command_locked(struct pic_chip *c, uint8_t val)
{
    if (val & 0x10) { /* ICW1 */
        chip_reset(c);
        c->init_state = 1;
        c->init4 = val & 1;
        c->single = val & 2;
        if (val & 0x08)
            log_debug("pic: ICW1 level-triggered mode ignored (ELCR decides)");
        return;
    }
    if (val & 0x08) { /* OCW3 */
        if (val & 0x04)
            c->poll = true;
        if (val & 0x02)
            c->read_isr = val & 1;
        if (val & 0x40)
            c->special_mask = (val >> 5) & 1;
        return;
    }
    /* OCW2 */
    unsigned cmd = val >> 5, irq;
    switch (cmd) {
    case 0: /* clear rotate in auto-EOI mode */
    case 4: /* set rotate in auto-EOI mode */
        c->rotate_on_auto_eoi = cmd == 4;
        break;
    case 1: /* non-specific EOI */
    case 5: /* rotate on non-specific EOI */
        if (priority_of(c, c->isr) == 8)
            break;
        irq = (priority_of(c, c->isr) + c->priority_add) & 7;
        c->isr &= ~(1u << irq);
        if (cmd == 5)
            c->priority_add = (irq + 1) & 7;
        break;
    case 3: /* specific EOI */
    case 7: /* rotate on specific EOI */
        irq = val & 7;
        c->isr &= ~(1u << irq);
        if (cmd == 7)
            c->priority_add = (irq + 1) & 7;
        break;
    case 6: /* set priority: val & 7 becomes the lowest */
        c->priority_add = (val + 1) & 7;
        break;
    default: /* 2: no operation */
        break;
    }
}

static void write_data_locked(struct pic_chip *c, uint8_t val)
{
    switch (c->init_state) {
    case 0: /* OCW1 */
        c->imr = val;
        break;
    case 1: /* ICW2 */
        c->irq_base = val & 0xf8;
        c->init_state = c->single ? (c->init4 ? 3 : 0) : 2;
        break;
    case 2: /* ICW3: the cascade wiring is fixed (slave on IRQ2) */
        c->init_state = c->init4 ? 3 : 0;
        break;
    default: /* ICW4 */
        c->special_fully_nested = (val >> 4) & 1;
        c->auto_eoi = (val >> 1) & 1;
        c->init_state = 0;
        break;
    }
}

/* OCW3 poll: acknowledge the best request by reading, without INTA. */
static uint8_t poll_locked(struct pic *p, unsigned chip)
{
    struct pic_chip *c = &p->chip[chip];
    c->poll = false;
    int irq = chip_pending_irq(c, chip == 0);
    if (irq < 0)
        return 0;
    chip_ack(c, (unsigned)irq);
    return 0x80 | (uint8_t)irq;
}

uint8_t pic_port_read(struct pic *p, uint16_t port)
{
    uint8_t v = 0xff;
    pthread_mutex_lock(&p->lock);
    bool changed = false;
    if (port == 0x4d0 || port == 0x4d1) {
        v = p->chip[port & 1].elcr;
    } else if ((port & ~1u) == 0x20 || (port & ~1u) == 0xa0) {
        unsigned chip = port >= 0xa0;
        struct pic_chip *c = &p->chip[chip];
        if (c->poll) {
            v = poll_locked(p, chip);
            changed = update_locked(p);
        } else if (port & 1) {
            v = c->imr;
        } else {
            v = c->read_isr ? c->isr : c->irr;
        }
    }
    pthread_mutex_unlock(&p->lock);
    notify(p, changed);
    return v;
}

void pic_port_write(struct pic *p, uint16_t port, uint8_t val)
{
    pthread_mutex_lock(&p->lock);
    if (port == 0x4d0 || port == 0x4d1) {
        struct pic_chip *c = &p->chip[port & 1];
        c->elcr = val & c->elcr_mask;
    } else if ((port & ~1u) == 0x20 || (port & ~1u) == 0xa0) {
        struct pic_chip *c = &p->chip[port >= 0xa0];
        if (port & 1)
            write_data_locked(c, val);
        else
            write_command_locked(c, val);
    }
    bool changed = update_locked(p);
    pthread_mutex_unlock(&p->lock);
    notify(p, changed);
}

/* ---- bus glue --------------------------------------------------------------- */

struct pic_port_range {
    uint16_t base;
    const char *name;
};

static const struct pic_port_range pic_ranges[] = {
    {0x20, "pic-master"},
    {0xa0, "pic-slave"},
    {0x4d0, "pic-elcr"},
};

static uint64_t pic_bus_read(void *opaque, uint16_t base, uint64_t offset, unsigned size)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size && offset + i < 2; i++)
        v |= (uint64_t)pic_port_read(opaque, (uint16_t)(base + offset + i)) << (8 * i);
    return v;
}

static void pic_bus_write(void *opaque, uint16_t base, uint64_t offset, uint64_t val, unsigned size)
{
    for (unsigned i = 0; i < size && offset + i < 2; i++)
        pic_port_write(opaque, (uint16_t)(base + offset + i), (uint8_t)(val >> (8 * i)));
}

static uint64_t master_read(void *o, uint64_t off, unsigned size) { return pic_bus_read(o, 0x20, off, size); }
static uint64_t slave_read(void *o, uint64_t off, unsigned size) { return pic_bus_read(o, 0xa0, off, size); }
static uint64_t elcr_read(void *o, uint64_t off, unsigned size) { return pic_bus_read(o, 0x4d0, off, size); }
static void master_write(void *o, uint64_t off, uint64_t v, unsigned size) { pic_bus_write(o, 0x20, off, v, size); }
static void slave_write(void *o, uint64_t off, uint64_t v, unsigned size) { pic_bus_write(o, 0xa0, off, v, size); }
static void elcr_write(void *o, uint64_t off, uint64_t v, unsigned size) { pic_bus_write(o, 0x4d0, off, v, size); }

static const struct bus_ops pic_bus_ops[] = {
    {.read = master_read, .write = master_write},
    {.read = slave_read, .write = slave_write},
    {.read = elcr_read, .write = elcr_write},
};

int pic_register(struct pic *p, struct bus *pio)
{
    for (unsigned i = 0; i < ARRAY_SIZE(pic_ranges); i++) {
        int r = bus_register(pio, pic_ranges[i].base, 2, &pic_bus_ops[i], p, pic_ranges[i].name);
        if (r < 0) {
            while (i--)
                bus_unregister(pio, pic_ranges[i].base, p);
            return r;
        }
    }
    return 0;
}

void pic_unregister(struct pic *p, struct bus *pio)
{
    for (unsigned i = 0; i < ARRAY_SIZE(pic_ranges); i++)
        bus_unregister(pio, pic_ranges[i].base, p);
}
