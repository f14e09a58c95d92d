/* MC146818 RTC. The time is never ticked: every read computes it from the
 * host clock plus the offset the guest set. Interrupt flags (register C)
 * are evaluated lazily whenever the guest touches the device, and by a
 * helper thread started only when the guest enables an RTC interrupt
 * (most guests never do, so most VMs never have the thread). */
#include "hw/rtc.h"

#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSEC_PER_SEC 1000000000ULL

enum {
    REG_SEC = 0x00, REG_SEC_ALARM = 0x01, REG_MIN = 0x02, REG_MIN_ALARM = 0x03,
    REG_HOUR = 0x04, REG_HOUR_ALARM = 0x05, REG_WDAY = 0x06, REG_MDAY = 0x07,
    REG_MONTH = 0x08, REG_YEAR = 0x09, REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c,
    REG_D = 0x0d, REG_CENTURY = 0x32,
};

#define A_UIP 0x80
#define A_DV_MASK 0x70
#define A_DV_32K 0x20 /* normal time base; other dividers stop the clock */
#define A_RS_MASK 0x0f

#define B_SET 0x80
#define B_PIE 0x40
#define B_AIE 0x20
#define B_UIE 0x10
#define B_DM_BINARY 0x04
#define B_24H 0x02

#define C_IRQF 0x80
#define C_PF 0x40
#define C_AF 0x20
#define C_UF 0x10

#define D_VRT 0x80

#define ALARM_DONT_CARE 0xc0 /* top two bits set in an alarm byte match anything */

#define UIP_WINDOW_NS 244000ULL /* UIP is set this long before each update */
#define CMOS_SIZE 128

struct rtc {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct bus *pio;
    const struct irq_sink *irq;
    uint64_t (*now_ns)(void *opaque);
    void *clock_opaque;

    uint8_t cmos[CMOS_SIZE];
    uint8_t index;
    int64_t offset_sec;     /* guest time - host time */
    uint64_t last_update;   /* guest second last seen by the flag evaluation */
    uint64_t next_periodic; /* host ns of the next periodic tick, 0 = off */
    bool irq_level;

    pthread_t thread;
    bool thread_started, stopping, fake_clock;
};

static uint64_t host_realtime_ns(void *opaque)
{
    (void)opaque;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Guest wall-clock time in ns since the epoch. */
static uint64_t guest_now_ns(const struct rtc *r)
{
    /* Unsigned arithmetic: a negative offset wraps to the right value. */
    return r->now_ns(r->clock_opaque) + (uint64_t)r->offset_sec * NSEC_PER_SEC;
}

static uint8_t to_bcd(unsigned v) { return (uint8_t)(((v / 10) % 10) << 4 | (v % 10)); }
static unsigned from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0x0f); }

static uint8_t encode(const struct rtc *r, unsigned v)
{
    return (r->cmos[REG_B] & B_DM_BINARY) ? (uint8_t)v : to_bcd(v);
}

static unsigned decode(const struct rtc *r, uint8_t v)
{
    return (r->cmos[REG_B] & B_DM_BINARY) ? v : from_bcd(v);
}

static uint8_t encode_hour(const struct rtc *r, unsigned hour)
{
    if (r->cmos[REG_B] & B_24H)
        return encode(r, hour);
    unsigned h12 = hour % 12 ? hour % 12 : 12;
    return (uint8_t)(encode(r, h12) | (hour >= 12 ? 0x80 : 0));
}

static unsigned decode_hour(const struct rtc *r, uint8_t v)
{
    if (r->cmos[REG_B] & B_24H)
        return decode(r, v);
    unsigned h = decode(r, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

/* Fill the time registers from the clock. */
static void store_time(struct rtc *r, uint64_t guest_ns)
{
    time_t t = (time_t)(guest_ns / NSEC_PER_SEC);
    struct tm tm;
    gmtime_r(&t, &tm);
    r->cmos[REG_SEC] = encode(r, (unsigned)tm.tm_sec);
    r->cmos[REG_MIN] = encode(r, (unsigned)tm.tm_min);
    r->cmos[REG_HOUR] = encode_hour(r, (unsigned)tm.tm_hour);
    r->cmos[REG_WDAY] = encode(r, (unsigned)tm.tm_wday + 1);
    r->cmos[REG_MDAY] = encode(r, (unsigned)tm.tm_mday);
    r->cmos[REG_MONTH] = encode(r, (unsigned)tm.tm_mon + 1);
    unsigned year = (unsigned)tm.tm_year + 1900;
    r->cmos[REG_YEAR] = encode(r, year % 100);
    r->cmos[REG_CENTURY] = encode(r, year / 100);
}

/* The guest finished setting the time (SET cleared): adopt the registers. */
static void adopt_guest_time(struct rtc *r)
{
    struct tm tm = {0};
    tm.tm_sec = (int)MIN(decode(r, r->cmos[REG_SEC]), 59u);
    tm.tm_min = (int)MIN(decode(r, r->cmos[REG_MIN]), 59u);
    tm.tm_hour = (int)MIN(decode_hour(r, r->cmos[REG_HOUR]), 23u);
    tm.tm_mday = (int)MAX(MIN(decode(r, r->cmos[REG_MDAY]), 31u), 1u);
    tm.tm_mon = (int)MAX(MIN(decode(r, r->cmos[REG_MONTH]), 12u), 1u) - 1;
    /* Years 1900-2199 keep nanoseconds since the epoch well inside 64 bits. */
    unsigned century = decode(r, r->cmos[REG_CENTURY]);
    if (century < 19 || century > 21)
        century = 20;
    tm.tm_year = (int)(century * 100 + MIN(decode(r, r->cmos[REG_YEAR]), 99u)) - 1900;
    time_t t = timegm(&tm);
    if (t < 0)
        t = 0; /* before 1970: the clock runs from the epoch instead */
    r->offset_sec = (int64_t)t - (int64_t)(r->now_ns(r->clock_opaque) / NSEC_PER_SEC);
    r->last_update = (uint64_t)t;
}

static bool clock_running(const struct rtc *r)
{
    return !(r->cmos[REG_B] & B_SET) && (r->cmos[REG_A] & A_DV_MASK) == A_DV_32K;
}

/* Periodic interrupt period from register A's rate select (0 = off). */
static uint64_t periodic_ns(const struct rtc *r)
{
    unsigned rs = r->cmos[REG_A] & A_RS_MASK;
    if (!rs || (r->cmos[REG_A] & A_DV_MASK) != A_DV_32K)
        return 0;
    if (rs <= 2)
        rs += 7; /* rates 1 and 2 alias 8 and 9 at the 32.768 kHz time base */
    return (NSEC_PER_SEC << (rs - 1)) / 32768;
}

static bool alarm_field_matches(uint8_t alarm, uint8_t now)
{
    return (alarm & ALARM_DONT_CARE) == ALARM_DONT_CARE || alarm == now;
}

static void update_irq(struct rtc *r)
{
    uint8_t c = r->cmos[REG_C] & (C_PF | C_AF | C_UF);
    uint8_t enabled = r->cmos[REG_B] & (B_PIE | B_AIE | B_UIE); /* same bit positions as C */
    bool level = (c & enabled) != 0;
    r->cmos[REG_C] = (uint8_t)(c | (level ? C_IRQF : 0));
    if (level != r->irq_level) {
        r->irq_level = level;
        irq_set_level(r->irq, LAYOUT_RTC_GSI, level);
    }
}

/* Bring register C up to date with the time that passed. */
static void evaluate_flags(struct rtc *r)
{
    uint64_t host = r->now_ns(r->clock_opaque);
    if (clock_running(r)) {
        uint64_t sec = guest_now_ns(r) / NSEC_PER_SEC;
        if (sec != r->last_update) {
            r->last_update = sec;
            r->cmos[REG_C] |= C_UF;
            store_time(r, sec * NSEC_PER_SEC);
            if (alarm_field_matches(r->cmos[REG_SEC_ALARM], r->cmos[REG_SEC]) &&
                alarm_field_matches(r->cmos[REG_MIN_ALARM], r->cmos[REG_MIN]) &&
                alarm_field_matches(r->cmos[REG_HOUR_ALARM], r->cmos[REG_HOUR]))
                r->cmos[REG_C] |= C_AF;
        }
    }
    uint64_t period = periodic_ns(r);
    if (!period) {
        r->next_periodic = 0;
    } else if (!r->next_periodic) {
        r->next_periodic = host + period;
    } else if (host >= r->next_periodic) {
        r->cmos[REG_C] |= C_PF;
        /* Skip missed ticks rather than replaying them. */
        r->next_periodic += ((host - r->next_periodic) / period + 1) * period;
    }
    update_irq(r);
}

/* --- interrupt thread ---------------------------------------------------------- */

static bool wants_thread(const struct rtc *r)
{
    return (r->cmos[REG_B] & (B_PIE | B_AIE | B_UIE)) != 0;
}

static void *rtc_thread(void *opaque)
{
    struct rtc *r = opaque;
    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        if (!wants_thread(r)) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        evaluate_flags(r);
        uint64_t host = r->now_ns(r->clock_opaque);
        uint64_t guest = guest_now_ns(r);
        uint64_t wait = NSEC_PER_SEC - guest % NSEC_PER_SEC; /* next second boundary */
        if ((r->cmos[REG_B] & B_PIE) && r->next_periodic > host)
            wait = MIN(wait, r->next_periodic - host);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t deadline = (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec + wait;
        ts.tv_sec = (time_t)(deadline / NSEC_PER_SEC);
        ts.tv_nsec = (long)(deadline % NSEC_PER_SEC);
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void kick_thread(struct rtc *r)
{
    if (r->fake_clock || !wants_thread(r))
        return;
    if (!r->thread_started) {
        if (pthread_create(&r->thread, NULL, rtc_thread, r) != 0) {
            log_warn("rtc: cannot start the interrupt thread; RTC interrupts are polled only");
            r->fake_clock = true; /* don't retry on every access */
            return;
        }
        r->thread_started = true;
    }
    pthread_cond_signal(&r->cond);
}

/* --- registers -------------------------------------------------------------------- */

static bool is_time_reg(unsigned idx)
{
    return idx <= REG_YEAR || idx == REG_CENTURY;
}

static uint8_t read_reg(struct rtc *r, unsigned idx)
{
    evaluate_flags(r);
    if (is_time_reg(idx) && clock_running(r))
        store_time(r, guest_now_ns(r));
    switch (idx) {
    case REG_A: {
        uint8_t a = r->cmos[REG_A] & ~A_UIP;
        if (clock_running(r) && NSEC_PER_SEC - guest_now_ns(r) % NSEC_PER_SEC <= UIP_WINDOW_NS)
            a |= A_UIP;
        return a;
    }
    case REG_C: {
        uint8_t c = r->cmos[REG_C];
        r->cmos[REG_C] = 0; /* reading C acknowledges everything */
        update_irq(r);
        return c;
    }
    case REG_D:
        return D_VRT;
    default:
        return r->cmos[idx];
    }
}

static void write_reg(struct rtc *r, unsigned idx, uint8_t val)
{
    evaluate_flags(r);
    switch (idx) {
    case REG_A:
        r->cmos[REG_A] = val & ~A_UIP;
        r->next_periodic = 0; /* restart the periodic timer at the new rate */
        break;
    case REG_B: {
        uint8_t old = r->cmos[REG_B];
        if ((val & B_SET) && !(old & B_SET) && clock_running(r))
            store_time(r, guest_now_ns(r)); /* freeze the time being set */
        /* Data mode and 12/24 h only change how values are encoded: re-encode. */
        r->cmos[REG_B] = val;
        if (!(val & B_SET) && (old & B_SET))
            adopt_guest_time(r);
        if (((old ^ val) & (B_DM_BINARY | B_24H)) && clock_running(r))
            store_time(r, guest_now_ns(r));
        break;
    }
    case REG_C:
    case REG_D:
        break; /* read-only */
    default:
        if (is_time_reg(idx) && clock_running(r)) {
            /* A write without SET changes that one field of the running time. */
            store_time(r, guest_now_ns(r));
            r->cmos[idx] = val;
            adopt_guest_time(r);
        } else {
            r->cmos[idx] = val;
        }
        break;
    }
    update_irq(r);
    kick_thread(r);
}

static uint64_t rtc_bus_read(void *opaque, uint64_t offset, unsigned size)
{
    struct rtc *r = opaque;
    if (offset == 0)
        return 0xff; /* the index register is write-only */
    pthread_mutex_lock(&r->lock);
    uint8_t val = read_reg(r, r->index);
    pthread_mutex_unlock(&r->lock);
    return val;
}

static void rtc_bus_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct rtc *r = opaque;
    pthread_mutex_lock(&r->lock);
    if (offset == 0)
        r->index = value & 0x7f; /* bit 7 masks NMIs; there are none to mask */
    else
        write_reg(r, r->index, (uint8_t)value);
    pthread_mutex_unlock(&r->lock);
}

static const struct bus_ops rtc_bus_ops = {
    .read = rtc_bus_read,
    .write = rtc_bus_write,
};

/* Memory size bytes as a PC BIOS leaves them. */
static void store_memory_size(struct rtc *r, uint64_t ram_size)
{
    uint64_t ext_kb = ram_size > 1 * MiB ? (ram_size - 1 * MiB) / KiB : 0;
    ext_kb = MIN(ext_kb, 0xffffULL);
    r->cmos[0x15] = 640 & 0xff; /* base memory in KiB */
    r->cmos[0x16] = 640 >> 8;
    r->cmos[0x17] = r->cmos[0x30] = ext_kb & 0xff;
    r->cmos[0x18] = r->cmos[0x31] = (ext_kb >> 8) & 0xff;

    uint64_t low = MIN(ram_size, LAYOUT_LOW_RAM_MAX);
    uint64_t above16 = low > 16 * MiB ? (low - 16 * MiB) / (64 * KiB) : 0;
    above16 = MIN(above16, 0xffffULL);
    r->cmos[0x34] = above16 & 0xff;
    r->cmos[0x35] = (above16 >> 8) & 0xff;

    uint64_t above4g = ram_size > low ? (ram_size - low) / (64 * KiB) : 0;
    above4g = MIN(above4g, 0xffffffULL);
    r->cmos[0x5b] = above4g & 0xff;
    r->cmos[0x5c] = (above4g >> 8) & 0xff;
    r->cmos[0x5d] = (above4g >> 16) & 0xff;
}

static void reset_locked(struct rtc *r)
{
    r->cmos[REG_A] = A_DV_32K | 0x06; /* 1024 Hz periodic rate, not enabled */
    r->cmos[REG_B] = B_24H;           /* BCD, 24 h, no interrupts */
    r->cmos[REG_C] = 0;
    r->cmos[REG_D] = D_VRT;
    r->index = 0;
    r->next_periodic = 0;
    r->last_update = guest_now_ns(r) / NSEC_PER_SEC;
    store_time(r, guest_now_ns(r));
    r->irq_level = false;
    irq_set_level(r->irq, LAYOUT_RTC_GSI, false);
}

void rtc_reset(struct rtc *r)
{
    pthread_mutex_lock(&r->lock);
    reset_locked(r);
    pthread_mutex_unlock(&r->lock);
}

struct rtc *rtc_new(struct bus *pio, const struct irq_sink *irq, uint64_t ram_size)
{
    struct rtc *r = xzalloc(sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the thread's deadlines */
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    r->pio = pio;
    r->irq = irq;
    r->now_ns = host_realtime_ns;
    store_memory_size(r, ram_size);
    reset_locked(r);
    if (bus_register(pio, LAYOUT_RTC_PORT, 2, &rtc_bus_ops, r, "rtc") < 0) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    return r;
}

void rtc_free(struct rtc *r)
{
    if (!r)
        return;
    bus_unregister(r->pio, LAYOUT_RTC_PORT, r);
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void rtc_set_clock(struct rtc *r, uint64_t (*now_ns)(void *opaque), void *opaque)
{
    pthread_mutex_lock(&r->lock);
    r->now_ns = now_ns;
    r->clock_opaque = opaque;
    r->fake_clock = true;
    r->last_update = guest_now_ns(r) / NSEC_PER_SEC;
    r->next_periodic = 0;
    store_time(r, guest_now_ns(r));
    pthread_mutex_unlock(&r->lock);
}

void rtc_poll(struct rtc *r)
{
    pthread_mutex_lock(&r->lock);
    evaluate_flags(r);
    pthread_mutex_unlock(&r->lock);
}
