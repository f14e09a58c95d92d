/* 8254 PIT for the software CPU; see pit.h. */
#include "accel/emu/pit.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"
#include "hw/bus.h"

enum { RW_LATCH = 0, RW_LSB = 1, RW_MSB = 2, RW_WORD0 = 3, RW_WORD1 = 4 };

#define PIT_MIN_PERIOD_NS 100000ULL
#define PORT61_GATE2 0x01u
#define PORT61_SPEAKER 0x02u
#define PORT61_REFRESH 0x10u
#define PORT61_OUT2 0x20u

struct pit_channel {
    uint32_t count;     /* reload value, 1..0x10000 */
    uint64_t load_ns;   /* when counting (re)started */
    bool loaded;        /* a count was written since the last control word */
    uint8_t mode, rw_mode, bcd;
    uint8_t read_state, write_state, write_latch;
    uint16_t latched_count;
    uint8_t count_latched; /* RW_* state of a latched count, 0 if none */
    bool status_latched;
    uint8_t status;
    bool gate;
};

struct pit {
    pthread_mutex_t lock;
    struct pit_callbacks cb;
    struct pit_channel ch[3];
    bool speaker;
    bool irq_enabled;        /* channel 0 programmed at least once */
    uint64_t next_irq_ns;    /* channel 0 */
};

static uint64_t ticks_since(const struct pit_channel *c, uint64_t now)
{
    if (now <= c->load_ns)
        return 0;
    return (uint64_t)((unsigned __int128)(now - c->load_ns) * PIT_HZ / 1000000000u);
}

static uint64_t ticks_to_ns(uint64_t ticks)
{
    return (uint64_t)(((unsigned __int128)ticks * 1000000000u + PIT_HZ - 1) / PIT_HZ);
}

/* Modes 2 and 3 stop while the gate is low (channel 2 only; the others are
 * wired high). */
static bool gated_off(const struct pit_channel *c)
{
    return !c->gate && (c->mode == 2 || c->mode == 3);
}

static uint16_t channel_count(const struct pit_channel *c, uint64_t now)
{
    if (!c->loaded || gated_off(c))
        return (uint16_t)c->count;
    uint64_t d = ticks_since(c, now);
    switch (c->mode) {
    case 2:
        return (uint16_t)(c->count - d % c->count);
    case 3: /* counts down by two, twice per period */
        return (uint16_t)(c->count - (2 * d) % c->count);
    default: /* 0, 1, 4, 5: one pass, then wraps through 0xffff */
        return (uint16_t)((c->count - d) & 0xffff);
    }
}

static bool channel_out(const struct pit_channel *c, uint64_t now)
{
    if (!c->loaded)
        return c->mode != 0; /* mode 0 drives OUT low from the control word on */
    if (gated_off(c))
        return true;
    uint64_t d = ticks_since(c, now);
    switch (c->mode) {
    case 0:
        return d >= c->count;
    case 1:
        return d >= c->count; /* low from the trigger until terminal count */
    case 2:
        return d % c->count != c->count - 1; /* low for the tick at count 1 */
    case 3:
        return d % c->count < (c->count + 1) / 2;
    default: /* 4, 5: one low tick at terminal count */
        return d != c->count;
    }
}

/* Channel 0's next IRQ0 edge after (or at) the current period. */
static void schedule_irq_locked(struct pit *p, uint64_t now)
{
    struct pit_channel *c = &p->ch[0];
    p->next_irq_ns = PIT_NO_DEADLINE;
    if (!p->irq_enabled || !c->loaded)
        return;
    uint64_t period = ticks_to_ns(c->count);
    if (c->mode == 2 || c->mode == 3) {
        if (period < PIT_MIN_PERIOD_NS)
            period = PIT_MIN_PERIOD_NS;
        uint64_t elapsed = now > c->load_ns ? now - c->load_ns : 0;
        p->next_irq_ns = c->load_ns + (elapsed / period + 1) * period;
    } else {
        p->next_irq_ns = c->load_ns + period; /* one-shot modes fire once */
    }
}

static void changed(struct pit *p)
{
    if (p->cb.timer_changed)
        p->cb.timer_changed(p->cb.opaque);
}

static void load_count_locked(struct pit *p, unsigned idx, uint32_t val, uint64_t now)
{
    struct pit_channel *c = &p->ch[idx];
    c->count = val ? val : 0x10000;
    c->load_ns = now;
    c->loaded = true;
    if (idx == 0) {
        p->irq_enabled = true;
        schedule_irq_locked(p, now);
    }
}

static void channel_reset(struct pit_channel *c, unsigned idx, uint64_t now)
{
    *c = (struct pit_channel){
        .count = 0x10000,
        .load_ns = now,
        .loaded = true,
        .mode = 3,
        .rw_mode = RW_WORD0,
        .read_state = RW_WORD0,
        .write_state = RW_WORD0,
        .gate = idx != 2,
    };
}

void pit_reset(struct pit *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t now = p->cb.now_ns();
    for (unsigned i = 0; i < 3; i++)
        channel_reset(&p->ch[i], i, now);
    p->speaker = false;
    p->irq_enabled = false;
    p->next_irq_ns = PIT_NO_DEADLINE;
    pthread_mutex_unlock(&p->lock);
}

struct pit *pit_new(const struct pit_callbacks *cb)
{
    struct pit *p = xzalloc(sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->cb = *cb;
    pit_reset(p);
    return p;
}

void pit_free(struct pit *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p);
}

uint64_t pit_next_deadline(struct pit *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t d = p->next_irq_ns;
    pthread_mutex_unlock(&p->lock);
    return d;
}

uint64_t pit_poll(struct pit *p, uint64_t now)
{
    bool fire = false;
    pthread_mutex_lock(&p->lock);
    if (p->next_irq_ns != PIT_NO_DEADLINE && now >= p->next_irq_ns) {
        fire = true;
        struct pit_channel *c = &p->ch[0];
        if (c->mode == 2 || c->mode == 3)
            schedule_irq_locked(p, now); /* missed periods coalesce */
        else
            p->next_irq_ns = PIT_NO_DEADLINE;
    }
    uint64_t next = p->next_irq_ns;
    pthread_mutex_unlock(&p->lock);
    if (fire && p->cb.irq0)
        p->cb.irq0(p->cb.opaque);
    return next;
}

/* ---- ports ------------------------------------------------------------------ */

static void latch_count_locked(struct pit_channel *c, uint64_t now)
{
    if (c->count_latched)
        return; /* the first latch holds until read */
    c->latched_count = channel_count(c, now);
    c->count_latched = c->rw_mode;
}

static void latch_status_locked(struct pit_channel *c, uint64_t now)
{
    if (c->status_latched)
        return;
    c->status = (uint8_t)((channel_out(c, now) ? 0x80 : 0) | (c->loaded ? 0 : 0x40) |
                          (c->rw_mode << 4) | (c->mode << 1) | c->bcd);
    c->status_latched = true;
}

static void write_control_locked(struct pit *p, uint8_t val, uint64_t now)
{
    unsigned idx = val >> 6;
    if (idx == 3) { /* read-back */
        for (unsigned i = 0; i < 3; i++) {
            if (!(val & (2u << i)))
                continue;
            if (!(val & 0x20))
                latch_count_locked(&p->ch[i], now);
            if (!(val & 0x10))
                latch_status_locked(&p->ch[i], now);
        }
        return;
    }
    struct pit_channel *c = &p->ch[idx];
    unsigned access = (val >> 4) & 3;
    if (access == RW_LATCH) {
        latch_count_locked(c, now);
        return;
    }
    c->rw_mode = (uint8_t)access;
    c->read_state = c->write_state = (uint8_t)access;
    c->mode = (val >> 1) & 7;
    if (c->mode > 5)
        c->mode -= 4; /* 6 and 7 alias modes 2 and 3 */
    c->bcd = val & 1;
    /* Counting stops until the new count is written. */
    uint16_t frozen = channel_count(c, now);
    c->count = frozen ? frozen : 0x10000;
    c->loaded = false;
    if (idx == 0)
        schedule_irq_locked(p, now);
}

static void write_channel_locked(struct pit *p, unsigned idx, uint8_t val, uint64_t now)
{
    struct pit_channel *c = &p->ch[idx];
    switch (c->write_state) {
    case RW_LSB:
        load_count_locked(p, idx, val, now);
        break;
    case RW_MSB:
        load_count_locked(p, idx, (uint32_t)val << 8, now);
        break;
    case RW_WORD0:
        c->write_latch = val;
        c->write_state = RW_WORD1;
        break;
    default:
        load_count_locked(p, idx, c->write_latch | ((uint32_t)val << 8), now);
        c->write_state = RW_WORD0;
        break;
    }
}

static uint8_t read_channel_locked(struct pit_channel *c, uint64_t now)
{
    if (c->status_latched) {
        c->status_latched = false;
        return c->status;
    }
    if (c->count_latched) {
        uint8_t v;
        switch (c->count_latched) {
        case RW_LSB:
            v = c->latched_count & 0xff;
            c->count_latched = 0;
            break;
        case RW_MSB:
            v = c->latched_count >> 8;
            c->count_latched = 0;
            break;
        case RW_WORD0:
            v = c->latched_count & 0xff;
            c->count_latched = RW_MSB;
            break;
        default:
            v = c->latched_count >> 8;
            c->count_latched = 0;
            break;
        }
        return v;
    }
    uint16_t count = channel_count(c, now);
    switch (c->read_state) {
    case RW_LSB:
        return count & 0xff;
    case RW_MSB:
        return count >> 8;
    case RW_WORD0:
        c->read_state = RW_WORD1;
        return count & 0xff;
    default:
        c->read_state = RW_WORD0;
        return count >> 8;
    }
}

static void set_gate2_locked(struct pit *p, bool gate, uint64_t now)
{
    struct pit_channel *c = &p->ch[2];
    /* A rising gate restarts counting in modes 1, 2, 3 and 5. */
    if (gate && !c->gate && c->loaded && c->mode != 0 && c->mode != 4)
        c->load_ns = now;
    c->gate = gate;
}

uint8_t pit_port_read(struct pit *p, uint16_t port)
{
    uint8_t v = 0xff;
    pthread_mutex_lock(&p->lock);
    uint64_t now = p->cb.now_ns();
    if (port >= 0x40 && port <= 0x42) {
        v = read_channel_locked(&p->ch[port - 0x40], now);
    } else if (port == 0x43) {
        v = 0xff; /* the control word register is write-only */
    } else if (port == 0x61) {
        /* Refresh request toggles every 15.085 us; firmware delay loops watch it. */
        bool refresh = (now / 15085) & 1;
        v = (uint8_t)((p->ch[2].gate ? PORT61_GATE2 : 0) | (p->speaker ? PORT61_SPEAKER : 0) |
                      (refresh ? PORT61_REFRESH : 0) |
                      (channel_out(&p->ch[2], now) ? PORT61_OUT2 : 0));
    }
    pthread_mutex_unlock(&p->lock);
    return v;
}

void pit_port_write(struct pit *p, uint16_t port, uint8_t val)
{
    bool timer_moved = false;
    pthread_mutex_lock(&p->lock);
    uint64_t now = p->cb.now_ns();
    uint64_t before = p->next_irq_ns;
    if (port >= 0x40 && port <= 0x42) {
        write_channel_locked(p, port - 0x40, val, now);
    } else if (port == 0x43) {
        write_control_locked(p, val, now);
    } else if (port == 0x61) {
        set_gate2_locked(p, val & PORT61_GATE2, now);
        p->speaker = val & PORT61_SPEAKER;
    }
    timer_moved = p->next_irq_ns != before;
    pthread_mutex_unlock(&p->lock);
    if (timer_moved)
        changed(p);
}

/* ---- bus glue --------------------------------------------------------------- */

static uint64_t pit_bus_read(void *opaque, uint16_t base, uint64_t offset, unsigned size)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)pit_port_read(opaque, (uint16_t)(base + offset + i)) << (8 * i);
    return v;
}

static void pit_bus_write(void *opaque, uint16_t base, uint64_t offset, uint64_t val, unsigned size)
{
    for (unsigned i = 0; i < size; i++)
        pit_port_write(opaque, (uint16_t)(base + offset + i), (uint8_t)(val >> (8 * i)));
}

static uint64_t pit_read(void *o, uint64_t off, unsigned size) { return pit_bus_read(o, 0x40, off, size); }
static void pit_write(void *o, uint64_t off, uint64_t v, unsigned size) { pit_bus_write(o, 0x40, off, v, size); }
static uint64_t port61_read(void *o, uint64_t off, unsigned size) { return pit_bus_read(o, 0x61, off, size); }
static void port61_write(void *o, uint64_t off, uint64_t v, unsigned size) { pit_bus_write(o, 0x61, off, v, size); }

static const struct bus_ops pit_ops = {.read = pit_read, .write = pit_write};
static const struct bus_ops port61_ops = {.read = port61_read, .write = port61_write};

int pit_register(struct pit *p, struct bus *pio)
{
    int r = bus_register(pio, 0x40, 4, &pit_ops, p, "pit");
    if (r < 0)
        return r;
    r = bus_register(pio, 0x61, 1, &port61_ops, p, "pit-port61");
    if (r < 0)
        bus_unregister(pio, 0x40, p);
    return r;
}

void pit_unregister(struct pit *p, struct bus *pio)
{
    bus_unregister(pio, 0x40, p);
    bus_unregister(pio, 0x61, p);
}
