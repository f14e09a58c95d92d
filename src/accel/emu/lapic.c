/* Local APIC (xAPIC) and APIC-bus routing for the software CPU; see lapic.h. */
#include "accel/emu/lapic.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

/* Register offsets in the 4 KiB page. */
enum {
    REG_ID = 0x20,
    REG_VERSION = 0x30,
    REG_TPR = 0x80,
    REG_APR = 0x90,
    REG_PPR = 0xa0,
    REG_EOI = 0xb0,
    REG_LDR = 0xd0,
    REG_DFR = 0xe0,
    REG_SVR = 0xf0,
    REG_ISR = 0x100,
    REG_TMR = 0x180,
    REG_IRR = 0x200,
    REG_ESR = 0x280,
    REG_ICR_LO = 0x300,
    REG_ICR_HI = 0x310,
    REG_LVT_TIMER = 0x320,
    REG_LVT_ERROR = 0x370,
    REG_TIMER_INIT = 0x380,
    REG_TIMER_CUR = 0x390,
    REG_TIMER_DCR = 0x3e0,
};

enum { LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR, NR_LVT };

#define LAPIC_VERSION (0x14u | ((NR_LVT - 1u) << 16))
#define LVT_MASKED (1u << 16)
#define LVT_DM(v) (((v) >> 8) & 7u)
#define TIMER_MODE(v) (((v) >> 17) & 3u)
#define TIMER_ONESHOT 0u
#define TIMER_PERIODIC 1u
#define TIMER_TSC_DEADLINE 2u
#define SVR_ENABLED (1u << 8)
#define BASE_BSP (1ull << 8)
#define BASE_EXTD (1ull << 10)
#define BASE_ENABLE (1ull << 11)
#define BASE_ADDR_MASK 0x000ffffffffff000ull
#define ESR_RECV_ILLEGAL_VECTOR (1u << 6)
#define NO_DEADLINE UINT64_MAX
/* A periodic timer faster than this would keep the timer thread spinning;
 * KVM clamps in the same way. */
#define TIMER_MIN_PERIOD_NS 100000ull

/* Writable bits of each LVT entry (delivery status and remote IRR are read-only). */
static const uint32_t lvt_write_mask[NR_LVT] = {
    [LVT_TIMER] = 0x000700ff,   /* vector, mask, timer mode */
    [LVT_THERMAL] = 0x000107ff, /* vector, delivery mode, mask */
    [LVT_PERF] = 0x000107ff,
    [LVT_LINT0] = 0x0001a7ff,   /* + polarity, trigger mode */
    [LVT_LINT1] = 0x0001a7ff,
    [LVT_ERROR] = 0x000100ff,
};

struct lapic {
    struct apic_bus *bus;
    unsigned index;
    pthread_mutex_t lock;
    atomic_bool pending; /* see lapic_irq_pending() */
    _Atomic uint64_t base_msr; /* written by the own vCPU, read by routing */

    uint32_t id, tpr, ldr, dfr, svr, esr, esr_latch, icr_lo, icr_hi;
    uint32_t lvt[NR_LVT];
    uint32_t irr[8], isr[8], tmr[8];

    uint32_t timer_initial, timer_dcr, timer_divisor; /* divisor latched at start */
    uint64_t timer_start_ns, timer_period_ns, timer_deadline_ns;
    uint64_t tsc_deadline;

    bool nmi_pending, extint_pending, init_pending, sipi_pending;
    uint8_t sipi_vector;
    enum lapic_mp_state mp;
};

/* ---- bitmaps ------------------------------------------------------------- */

static void vec_set(uint32_t *map, uint8_t v) { map[v >> 5] |= 1u << (v & 31); }
static void vec_clear(uint32_t *map, uint8_t v) { map[v >> 5] &= ~(1u << (v & 31)); }
static bool vec_test(const uint32_t *map, uint8_t v) { return map[v >> 5] & (1u << (v & 31)); }

static int vec_highest(const uint32_t *map)
{
    for (int i = 7; i >= 0; i--)
        if (map[i])
            return i * 32 + 31 - __builtin_clz(map[i]);
    return -1;
}

/* ---- priority and pending state (lock held) -------------------------------- */

static bool hw_enabled(const struct lapic *l) { return atomic_load(&l->base_msr) & BASE_ENABLE; }
static bool sw_enabled(const struct lapic *l) { return l->svr & SVR_ENABLED; }

static uint32_t ppr_locked(const struct lapic *l)
{
    int isrv = vec_highest(l->isr);
    uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
    return (l->tpr & 0xf0) >= isr_class ? l->tpr & 0xff : isr_class;
}

/* The highest IRR vector if it beats the processor priority, else -1. */
static int deliverable_vector_locked(const struct lapic *l)
{
    int irrv = vec_highest(l->irr);
    if (irrv < 0 || ((uint32_t)irrv & 0xf0) <= (ppr_locked(l) & 0xf0))
        return -1;
    return irrv;
}

/* Does the 8259 reach this CPU directly (virtual-wire mode through LINT0)?
 * Like KVM: the BSP only, when its LAPIC is hardware-disabled or LINT0 is an
 * unmasked ExtINT entry. */
static bool accepts_pic_locked(const struct lapic *l)
{
    if (l->index != 0)
        return false;
    if (!hw_enabled(l))
        return true;
    uint32_t lint0 = l->lvt[LVT_LINT0];
    return !(lint0 & LVT_MASKED) && LVT_DM(lint0) == APIC_DM_EXTINT;
}

static bool pic_wants_cpu_locked(const struct lapic *l)
{
    return accepts_pic_locked(l) && l->bus->pic_output && l->bus->pic_output(l->bus->opaque);
}

static bool external_deliverable_locked(const struct lapic *l)
{
    return l->extint_pending || pic_wants_cpu_locked(l) || deliverable_vector_locked(l) >= 0;
}

/* Recompute the lock-free flag; returns it. */
static bool update_pending_locked(struct lapic *l)
{
    bool p = l->nmi_pending || l->init_pending || l->sipi_pending ||
             external_deliverable_locked(l);
    atomic_store(&l->pending, p);
    return p;
}

static void kick(struct lapic *l, bool force_exit)
{
    if (l->bus->kick)
        l->bus->kick(l->bus->opaque, l->index, force_exit);
}

static uint64_t now(const struct lapic *l) { return l->bus->now_ns(); }

/* ---- reset ----------------------------------------------------------------- */

/* Register state after power-on or INIT; the APIC id and base MSR survive INIT. */
static void reset_regs_locked(struct lapic *l)
{
    l->tpr = 0;
    l->ldr = 0;
    l->dfr = 0xffffffff;
    l->svr = 0xff;
    l->esr = l->esr_latch = 0;
    l->icr_lo = l->icr_hi = 0;
    for (unsigned i = 0; i < NR_LVT; i++)
        l->lvt[i] = LVT_MASKED;
    /* KVM's LINT0 re-enable quirk: the BSP comes out of reset in virtual-wire
     * mode so the 8259 works before the guest touches its LAPIC. */
    if (l->index == 0)
        l->lvt[LVT_LINT0] = APIC_DM_EXTINT << 8;
    memset(l->irr, 0, sizeof(l->irr));
    memset(l->isr, 0, sizeof(l->isr));
    memset(l->tmr, 0, sizeof(l->tmr));
    l->timer_initial = 0;
    l->timer_dcr = 0;
    l->timer_divisor = 2;
    l->timer_deadline_ns = NO_DEADLINE;
    l->timer_period_ns = 0;
    l->tsc_deadline = 0;
    l->nmi_pending = l->extint_pending = false;
}

void lapic_reset(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    l->id = l->index << 24;
    atomic_store(&l->base_msr, LAPIC_DEFAULT_BASE | BASE_ENABLE | (l->index == 0 ? BASE_BSP : 0));
    reset_regs_locked(l);
    l->init_pending = l->sipi_pending = false;
    l->mp = l->index == 0 ? LAPIC_MP_RUNNING : LAPIC_MP_WAIT_SIPI;
    update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
}

struct lapic *lapic_new(struct apic_bus *bus, unsigned index)
{
    struct lapic *l = xzalloc(sizeof(*l));
    l->bus = bus;
    l->index = index;
    pthread_mutex_init(&l->lock, NULL);
    lapic_reset(l);
    return l;
}

void lapic_free(struct lapic *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l);
}

unsigned lapic_index(const struct lapic *l) { return l->index; }

/* ---- timer ----------------------------------------------------------------- */

static unsigned timer_divisor(uint32_t dcr)
{
    unsigned v = (dcr & 3) | ((dcr >> 1) & 4);
    return v == 7 ? 1 : 2u << v;
}

static void timer_disarm_locked(struct lapic *l)
{
    l->timer_deadline_ns = NO_DEADLINE;
    l->timer_period_ns = 0;
}

/* One-shot or periodic start on an initial-count write. Returns true if armed. */
static bool timer_start_locked(struct lapic *l)
{
    timer_disarm_locked(l);
    if (l->timer_initial == 0)
        return false;
    l->timer_divisor = timer_divisor(l->timer_dcr);
    uint64_t period = (uint64_t)l->timer_initial * l->timer_divisor; /* 1 GHz bus */
    if (TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_PERIODIC && period < TIMER_MIN_PERIOD_NS)
        period = TIMER_MIN_PERIOD_NS;
    l->timer_period_ns = period;
    l->timer_start_ns = now(l);
    l->timer_deadline_ns = l->timer_start_ns + period;
    return true;
}

static uint32_t timer_current_count_locked(const struct lapic *l)
{
    if (TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE || !l->timer_period_ns)
        return 0;
    uint64_t t = now(l);
    uint64_t elapsed = t > l->timer_start_ns ? t - l->timer_start_ns : 0;
    uint64_t remaining;
    if (TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_PERIODIC)
        remaining = l->timer_period_ns - elapsed % l->timer_period_ns;
    else if (l->timer_deadline_ns == NO_DEADLINE || elapsed >= l->timer_period_ns)
        return 0;
    else
        remaining = l->timer_period_ns - elapsed;
    uint64_t count = remaining / l->timer_divisor;
    return count > l->timer_initial ? l->timer_initial : (uint32_t)count;
}

static void timer_changed(struct lapic *l)
{
    if (l->bus->timer_changed)
        l->bus->timer_changed(l->bus->opaque);
}

uint64_t lapic_timer_deadline(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t d = l->timer_deadline_ns;
    pthread_mutex_unlock(&l->lock);
    return d;
}

uint64_t lapic_timer_poll(struct lapic *l, uint64_t t)
{
    bool fired = false, deliverable = false;
    pthread_mutex_lock(&l->lock);
    if (l->timer_deadline_ns != NO_DEADLINE && t >= l->timer_deadline_ns) {
        uint32_t lvt = l->lvt[LVT_TIMER];
        if (TIMER_MODE(lvt) == TIMER_PERIODIC && l->timer_period_ns) {
            /* Missed periods coalesce into one interrupt, as when a host
             * timer fires late. */
            uint64_t n = (t - l->timer_start_ns) / l->timer_period_ns + 1;
            l->timer_deadline_ns = l->timer_start_ns + n * l->timer_period_ns;
        } else {
            l->timer_deadline_ns = NO_DEADLINE;
            if (TIMER_MODE(lvt) == TIMER_TSC_DEADLINE)
                l->tsc_deadline = 0;
        }
        uint8_t vector = lvt & 0xff;
        if (!(lvt & LVT_MASKED) && vector >= 16) {
            vec_set(l->irr, vector);
            vec_clear(l->tmr, vector);
            fired = true;
        }
        deliverable = update_pending_locked(l);
    }
    uint64_t next = l->timer_deadline_ns;
    pthread_mutex_unlock(&l->lock);
    if (fired && deliverable)
        kick(l, false);
    return next;
}

uint64_t lapic_get_tsc_deadline(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t v = TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE ? l->tsc_deadline : 0;
    pthread_mutex_unlock(&l->lock);
    return v;
}

void lapic_set_tsc_deadline(struct lapic *l, uint64_t tsc)
{
    uint64_t tsc_now = l->bus->read_tsc ? l->bus->read_tsc(l->bus->opaque, l->index) : now(l);
    bool armed = false;
    pthread_mutex_lock(&l->lock);
    if (TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE) {
        l->tsc_deadline = tsc;
        timer_disarm_locked(l);
        if (tsc) {
            /* Guest TSC and now_ns() both tick at 1 GHz. A deadline beyond
             * the end of time saturates instead of wrapping into the past. */
            uint64_t delta = tsc > tsc_now ? tsc - tsc_now : 0, t = now(l);
            l->timer_deadline_ns = delta >= NO_DEADLINE - t ? NO_DEADLINE - 1 : t + delta;
            armed = true;
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (armed)
        timer_changed(l);
}

/* ---- accepting interrupts -------------------------------------------------- */

void lapic_accept(struct lapic *l, const struct apic_irq *irq)
{
    bool force_exit = false, wake;
    pthread_mutex_lock(&l->lock);
    switch (irq->delivery) {
    case APIC_DM_FIXED:
    case APIC_DM_LOWEST:
        if (!sw_enabled(l))
            break; /* a software-disabled LAPIC drops fixed interrupts */
        if (irq->vector < 16) {
            l->esr_latch |= ESR_RECV_ILLEGAL_VECTOR;
            break;
        }
        vec_set(l->irr, irq->vector);
        if (irq->level)
            vec_set(l->tmr, irq->vector);
        else
            vec_clear(l->tmr, irq->vector);
        break;
    case APIC_DM_NMI:
        l->nmi_pending = true;
        break;
    case APIC_DM_INIT:
        if (irq->level && !irq->assert)
            break; /* INIT level de-assert: no effect on modern CPUs */
        l->init_pending = true;
        l->sipi_pending = false;
        l->mp = LAPIC_MP_WAIT_SIPI;
        force_exit = true;
        break;
    case APIC_DM_SIPI:
        /* Only a CPU waiting for start-up takes it; Linux sends two SIPIs and
         * the second must not restart a running AP. */
        if (l->mp == LAPIC_MP_WAIT_SIPI) {
            l->sipi_pending = true;
            l->sipi_vector = irq->vector;
            force_exit = true;
        }
        break;
    case APIC_DM_EXTINT:
        l->extint_pending = true;
        break;
    default: /* SMI and reserved modes: no SMM here */
        log_debug("lapic %u: ignoring delivery mode %u", l->index, irq->delivery);
        break;
    }
    wake = update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
    if (wake)
        kick(l, force_exit);
}

void lapic_pic_changed(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    bool wake = update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
    if (wake)
        kick(l, false);
}

bool lapic_irq_pending(struct lapic *l) { return atomic_load(&l->pending); }

bool lapic_has_deliverable(struct lapic *l)
{
    if (!atomic_load(&l->pending))
        return false;
    pthread_mutex_lock(&l->lock);
    bool d = external_deliverable_locked(l);
    pthread_mutex_unlock(&l->lock);
    return d;
}

int lapic_irq_ack(struct lapic *l)
{
    if (!atomic_load(&l->pending))
        return -1;
    int vector = -1;
    bool from_pic = false;
    pthread_mutex_lock(&l->lock);
    /* ExtINT bypasses the LAPIC's priority logic, as in KVM. */
    if (l->extint_pending) {
        l->extint_pending = false;
        from_pic = true;
    } else if (pic_wants_cpu_locked(l)) {
        from_pic = true;
    } else {
        vector = deliverable_vector_locked(l);
        if (vector >= 0) {
            vec_clear(l->irr, (uint8_t)vector);
            vec_set(l->isr, (uint8_t)vector);
        }
    }
    bool more = update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
    if (from_pic)
        vector = l->bus->pic_intack ? l->bus->pic_intack(l->bus->opaque) : -1;
    if (more)
        kick(l, false); /* the CPU cleared its check flag before asking */
    return vector;
}

bool lapic_nmi_ack(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    bool nmi = l->nmi_pending;
    l->nmi_pending = false;
    update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
    return nmi;
}

bool lapic_nmi_pending(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    bool nmi = l->nmi_pending;
    pthread_mutex_unlock(&l->lock);
    return nmi;
}

bool lapic_mp_event_pending(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    bool ev = l->init_pending || (l->sipi_pending && l->mp == LAPIC_MP_WAIT_SIPI);
    pthread_mutex_unlock(&l->lock);
    return ev;
}

/* ---- AP start-up ------------------------------------------------------------ */

enum lapic_mp_state lapic_mp_state(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    enum lapic_mp_state s = l->mp;
    pthread_mutex_unlock(&l->lock);
    return s;
}

bool lapic_take_init(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    bool init = l->init_pending;
    if (init) {
        /* A SIPI that raced ahead of us stays pending. */
        reset_regs_locked(l);
        l->init_pending = false;
        l->mp = LAPIC_MP_WAIT_SIPI;
        update_pending_locked(l);
    }
    pthread_mutex_unlock(&l->lock);
    return init;
}

bool lapic_take_sipi(struct lapic *l, uint8_t *vector)
{
    pthread_mutex_lock(&l->lock);
    bool sipi = l->mp == LAPIC_MP_WAIT_SIPI && !l->init_pending && l->sipi_pending;
    if (sipi) {
        *vector = l->sipi_vector;
        l->sipi_pending = false;
        l->mp = LAPIC_MP_RUNNING;
        update_pending_locked(l);
    }
    pthread_mutex_unlock(&l->lock);
    return sipi;
}

/* ---- routing ---------------------------------------------------------------- */

static bool match_dest(struct lapic *l, uint8_t dest, bool logical)
{
    if (!hw_enabled(l))
        return false;
    pthread_mutex_lock(&l->lock);
    bool hit;
    if (!logical) {
        hit = dest == 0xff || dest == (l->id >> 24);
    } else if ((l->dfr >> 28) == 0xf) { /* flat model: 8 bits, one per CPU */
        hit = (l->ldr >> 24) & dest;
    } else { /* cluster model: 4-bit cluster, 4-bit member mask */
        uint8_t cluster = l->ldr >> 28, members = (l->ldr >> 24) & 0xf;
        hit = ((dest >> 4) == 0xf || (dest >> 4) == cluster) && (members & dest & 0xf);
    }
    pthread_mutex_unlock(&l->lock);
    return hit;
}

static uint32_t arbitration_priority(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    uint32_t p = l->tpr & 0xf0;
    pthread_mutex_unlock(&l->lock);
    return p;
}

unsigned apic_bus_deliver(struct apic_bus *bus, struct lapic *src, const struct apic_irq *irq)
{
    if (irq->delivery == APIC_DM_INIT && irq->level && !irq->assert)
        return 0;
    if (irq->shorthand == APIC_SH_SELF) {
        if (!src)
            return 0;
        lapic_accept(src, irq);
        return 1;
    }
    struct lapic *lowest = NULL;
    unsigned hits = 0;
    for (unsigned i = 0; i < bus->nr_cpus; i++) {
        struct lapic *l = bus->cpus[i];
        if (!l)
            continue;
        bool target;
        switch (irq->shorthand) {
        case APIC_SH_ALL:
            target = true;
            break;
        case APIC_SH_ALL_BUT_SELF:
            target = l != src;
            break;
        default:
            target = match_dest(l, irq->dest, irq->logical);
            break;
        }
        if (!target)
            continue;
        /* Lowest priority: one CPU, the one with the lowest task priority. */
        if (irq->delivery == APIC_DM_LOWEST && irq->shorthand == APIC_SH_NONE) {
            if (!lowest || arbitration_priority(l) < arbitration_priority(lowest))
                lowest = l;
            continue;
        }
        lapic_accept(l, irq);
        hits++;
    }
    if (lowest) {
        lapic_accept(lowest, irq);
        hits++;
    }
    return hits;
}

bool apic_msi_decode(uint64_t addr, uint32_t data, struct apic_irq *out)
{
    if ((addr & 0xfff00000ull) != 0xfee00000ull || (addr >> 32))
        return false;
    *out = (struct apic_irq){
        .vector = data & 0xff,
        .delivery = (data >> 8) & 7,
        .logical = addr & (1u << 2),
        .level = data & (1u << 15),
        .assert = true, /* MSIs are edges; a level MSI's "assert" bit is ignored */
        .dest = (addr >> 12) & 0xff,
        .shorthand = APIC_SH_NONE,
    };
    if (out->level)
        out->assert = data & (1u << 14);
    return true;
}

/* ---- registers -------------------------------------------------------------- */

static void send_ipi(struct lapic *l)
{
    uint32_t lo, hi;
    pthread_mutex_lock(&l->lock);
    lo = l->icr_lo;
    hi = l->icr_hi;
    pthread_mutex_unlock(&l->lock);
    struct apic_irq irq = {
        .vector = lo & 0xff,
        .delivery = (lo >> 8) & 7,
        .logical = lo & (1u << 11),
        .assert = lo & (1u << 14),
        .level = lo & (1u << 15),
        .shorthand = (lo >> 18) & 3,
        .dest = hi >> 24,
    };
    apic_bus_deliver(l->bus, l, &irq);
}

static void eoi(struct lapic *l)
{
    pthread_mutex_lock(&l->lock);
    int v = vec_highest(l->isr);
    bool level = false;
    if (v >= 0) {
        vec_clear(l->isr, (uint8_t)v);
        level = vec_test(l->tmr, (uint8_t)v);
    }
    bool wake = update_pending_locked(l);
    pthread_mutex_unlock(&l->lock);
    if (level && l->bus->eoi_level)
        l->bus->eoi_level(l->bus->opaque, (uint8_t)v);
    if (wake)
        kick(l, false);
}

uint32_t lapic_read_reg(struct lapic *l, unsigned reg)
{
    uint32_t v = 0;
    pthread_mutex_lock(&l->lock);
    if (reg >= REG_ISR && reg < REG_ISR + 0x80) {
        v = l->isr[(reg - REG_ISR) >> 4];
    } else if (reg >= REG_TMR && reg < REG_TMR + 0x80) {
        v = l->tmr[(reg - REG_TMR) >> 4];
    } else if (reg >= REG_IRR && reg < REG_IRR + 0x80) {
        v = l->irr[(reg - REG_IRR) >> 4];
    } else if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR) {
        v = l->lvt[(reg - REG_LVT_TIMER) >> 4];
    } else {
        switch (reg) {
        case REG_ID: v = l->id; break;
        case REG_VERSION: v = LAPIC_VERSION; break;
        case REG_TPR: v = l->tpr; break;
        case REG_PPR: v = ppr_locked(l); break;
        case REG_LDR: v = l->ldr; break;
        case REG_DFR: v = l->dfr; break;
        case REG_SVR: v = l->svr; break;
        case REG_ESR: v = l->esr; break;
        case REG_ICR_LO: v = l->icr_lo; break;
        case REG_ICR_HI: v = l->icr_hi; break;
        case REG_TIMER_INIT: v = l->timer_initial; break;
        case REG_TIMER_CUR: v = timer_current_count_locked(l); break;
        case REG_TIMER_DCR: v = l->timer_dcr; break;
        default: v = 0; break; /* APR, RRD, EOI and reserved read as 0 */
        }
    }
    pthread_mutex_unlock(&l->lock);
    return v;
}

static void write_lvt_locked(struct lapic *l, unsigned idx, uint32_t val)
{
    val &= lvt_write_mask[idx];
    if (!sw_enabled(l))
        val |= LVT_MASKED; /* a software-disabled LAPIC keeps its LVTs masked */
    if (idx == LVT_TIMER) {
        if (TIMER_MODE(val) == 3)
            val &= ~(3u << 17); /* reserved mode: treat as one-shot */
        bool was_tsc = TIMER_MODE(l->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE;
        if (was_tsc != (TIMER_MODE(val) == TIMER_TSC_DEADLINE)) {
            /* Entering or leaving TSC-deadline mode stops the timer, as in
             * KVM; one-shot <-> periodic keeps it counting. */
            timer_disarm_locked(l);
            l->timer_initial = 0;
            l->tsc_deadline = 0;
        } else if (TIMER_MODE(val) == TIMER_PERIODIC && l->timer_period_ns &&
                   l->timer_period_ns < TIMER_MIN_PERIOD_NS) {
            l->timer_period_ns = TIMER_MIN_PERIOD_NS; /* one-shot turned periodic */
        }
    }
    l->lvt[idx] = val;
}

void lapic_write_reg(struct lapic *l, unsigned reg, uint32_t val)
{
    if (reg == REG_EOI) {
        eoi(l);
        return;
    }
    bool timer_armed = false, ipi = false;
    pthread_mutex_lock(&l->lock);
    if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR) {
        write_lvt_locked(l, (reg - REG_LVT_TIMER) >> 4, val);
    } else {
        switch (reg) {
        case REG_ID: l->id = val & 0xff000000; break;
        case REG_TPR: l->tpr = val & 0xff; break;
        case REG_LDR: l->ldr = val & 0xff000000; break;
        case REG_DFR: l->dfr = val | 0x0fffffff; break;
        case REG_SVR:
            l->svr = val & 0x3ff;
            if (!sw_enabled(l))
                for (unsigned i = 0; i < NR_LVT; i++)
                    l->lvt[i] |= LVT_MASKED;
            break;
        case REG_ESR: /* a write latches the errors seen since the last one */
            l->esr = l->esr_latch;
            l->esr_latch = 0;
            break;
        case REG_ICR_HI: l->icr_hi = val & 0xff000000; break;
        case REG_ICR_LO:
            l->icr_lo = val & ~(1u << 12); /* delivery is instant: never "send pending" */
            ipi = true;
            break;
        case REG_TIMER_INIT:
            if (TIMER_MODE(l->lvt[LVT_TIMER]) != TIMER_TSC_DEADLINE) {
                l->timer_initial = val;
                timer_armed = timer_start_locked(l);
            }
            break;
        case REG_TIMER_DCR:
            l->timer_dcr = val & 0xb;
            break;
        default:
            break; /* read-only or reserved */
        }
    }
    bool wake = update_pending_locked(l) && external_deliverable_locked(l);
    pthread_mutex_unlock(&l->lock);
    if (ipi)
        send_ipi(l);
    if (timer_armed)
        timer_changed(l);
    if (wake)
        kick(l, false); /* TPR lowered, LINT0 unmasked, ... */
}

uint32_t lapic_mmio_read(struct lapic *l, uint64_t offset, unsigned size)
{
    unsigned byte = offset & 0xf;
    if (offset >= LAPIC_PAGE_SIZE || size == 0 || size > 4 || byte + size > 4)
        return 0;
    uint32_t v = lapic_read_reg(l, (unsigned)offset & 0xff0);
    v >>= byte * 8;
    return size == 4 ? v : v & ((1u << (size * 8)) - 1);
}

void lapic_mmio_write(struct lapic *l, uint64_t offset, uint32_t val, unsigned size)
{
    if (offset >= LAPIC_PAGE_SIZE || size != 4 || (offset & 0xf)) {
        log_debug("lapic %u: ignoring %u-byte write at offset 0x%llx", l->index, size,
                  (unsigned long long)offset);
        return;
    }
    lapic_write_reg(l, (unsigned)offset, val);
}

uint8_t lapic_get_cr8(struct lapic *l) { return (lapic_read_reg(l, REG_TPR) >> 4) & 0xf; }

void lapic_set_cr8(struct lapic *l, uint8_t cr8) { lapic_write_reg(l, REG_TPR, (cr8 & 0xfu) << 4); }

/* ---- base MSR ----------------------------------------------------------------- */

uint64_t lapic_get_base_msr(struct lapic *l) { return atomic_load(&l->base_msr); }

bool lapic_set_base_msr(struct lapic *l, uint64_t val)
{
    const uint64_t writable = BASE_ADDR_MASK | BASE_ENABLE | BASE_EXTD | BASE_BSP;
    if ((val & ~writable) || (val & BASE_EXTD))
        return false; /* reserved bits, or x2APIC mode that CPUID does not offer */
    uint64_t old = atomic_load(&l->base_msr);
    /* The BSP flag is the platform's to decide. */
    val = (val & ~BASE_BSP) | (old & BASE_BSP);
    atomic_store(&l->base_msr, val);
    if ((old ^ val) & BASE_ENABLE)
        lapic_pic_changed(l); /* a hardware-disabled BSP LAPIC passes the 8259 through */
    return true;
}

bool lapic_mmio_hit(struct lapic *l, uint64_t gpa)
{
    uint64_t base = atomic_load(&l->base_msr);
    if (!(base & BASE_ENABLE))
        return false;
    base &= BASE_ADDR_MASK;
    return gpa >= base && gpa - base < LAPIC_PAGE_SIZE;
}

/* ---- debugging ------------------------------------------------------------------ */

static void dump_vectors(FILE *out, const char *name, const uint32_t *map)
{
    fprintf(out, " %s=", name);
    bool any = false;
    for (unsigned v = 0; v < 256; v++) {
        if (vec_test(map, (uint8_t)v)) {
            fprintf(out, "%s%02x", any ? "," : "", v);
            any = true;
        }
    }
    if (!any)
        fputs("-", out);
}

void lapic_dump(struct lapic *l, FILE *out)
{
    pthread_mutex_lock(&l->lock);
    fprintf(out, "lapic %u: id=%02x base=%llx svr=%03x tpr=%02x ppr=%02x mp=%s%s%s%s\n",
            l->index, l->id >> 24, (unsigned long long)atomic_load(&l->base_msr), l->svr, l->tpr,
            ppr_locked(l), l->mp == LAPIC_MP_RUNNING ? "running" : "wait-sipi",
            l->nmi_pending ? " nmi" : "", l->init_pending ? " init" : "",
            l->extint_pending ? " extint" : "");
    dump_vectors(out, "irr", l->irr);
    dump_vectors(out, "isr", l->isr);
    dump_vectors(out, "tmr", l->tmr);
    fprintf(out, "\n lvt: timer=%05x lint0=%05x lint1=%05x error=%05x tmict=%x tdcr=%x armed=%s\n",
            l->lvt[LVT_TIMER], l->lvt[LVT_LINT0], l->lvt[LVT_LINT1], l->lvt[LVT_ERROR],
            l->timer_initial, l->timer_dcr, l->timer_deadline_ns == NO_DEADLINE ? "no" : "yes");
    pthread_mutex_unlock(&l->lock);
}
