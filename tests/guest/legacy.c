/* The PC's legacy devices a kernel touches at boot: the MC146818 RTC
 * (valid time, ticking, periodic and update interrupts, CMOS RAM) and the
 * i8042 controller's self-test;
 * also the baseline x86-64 fences every kernel executes. */
#include "guest.h"

static volatile unsigned ud_count;

/* #UD: note it and step over the 3-byte fence that raised it. */
static void ud_handler(struct isr_frame *f)
{
    ud_count++;
    f->rip += 3;
}

static bool fences_execute(void)
{
    isr_set_handler(6, ud_handler);
    ud_count = 0;
    __asm__ volatile("mfence" ::: "memory");
    unsigned m = ud_count;
    __asm__ volatile("lfence" ::: "memory");
    unsigned l = ud_count - m;
    __asm__ volatile("sfence" ::: "memory");
    unsigned s = ud_count - m - l;
    isr_set_handler(6, NULL);
    if (ud_count)
        tap_diag("#UD on:%s%s%s", m ? " mfence" : "", l ? " lfence" : "", s ? " sfence" : "");
    return ud_count == 0;
}

static uint8_t cmos_read(uint8_t idx)
{
    outb(0x70, idx); /* bit 7 clear: NMI stays enabled, as Linux leaves it */
    return inb(0x71);
}

static void cmos_write(uint8_t idx, uint8_t v)
{
    outb(0x70, idx);
    outb(0x71, v);
}

static unsigned rtc_field(uint8_t raw, bool binary, bool *valid)
{
    if (binary)
        return raw;
    if ((raw & 0x0f) > 9 || (raw >> 4) > 9)
        *valid = false;
    return (raw >> 4) * 10 + (raw & 0x0f);
}

/* Reads the clock outside an update cycle (UIP clear). */
static void rtc_read_time(unsigned t[6], bool *valid)
{
    for (unsigned i = 0; i < 10000 && (cmos_read(0x0a) & 0x80); i++)
        cpu_relax();
    uint8_t b = cmos_read(0x0b);
    bool binary = b & 4;
    static const uint8_t idx[6] = { 0x00, 0x02, 0x04, 0x07, 0x08, 0x09 };
    for (unsigned i = 0; i < 6; i++) {
        uint8_t raw = cmos_read(idx[i]);
        if (i == 2 && !(b & 2))
            raw &= 0x7f; /* 12-hour mode: bit 7 is PM */
        t[i] = rtc_field(raw, binary, valid);
    }
}

#define RTC_VECTOR 0x38
static volatile unsigned rtc_pf, rtc_uf;

/* Reading status C acknowledges the RTC interrupt and says which. */
static void rtc_isr(struct isr_frame *f)
{
    (void)f;
    uint8_t c = cmos_read(0x0c);
    if (c & 0x40)
        rtc_pf++;
    if (c & 0x10)
        rtc_uf++;
    lapic_eoi();
}

static unsigned rtc_wait(volatile unsigned *counter, unsigned n, uint64_t timeout_us)
{
    uint64_t end = time_now_us() + timeout_us;
    irq_enable();
    while (*counter < n && time_now_us() < end)
        cpu_relax();
    irq_disable();
    return *counter;
}

/* Periodic (PIE, 1024 Hz) and update-ended (UIE, 1 Hz) interrupts on ISA
 * IRQ 8 through the IOAPIC. */
static void check_rtc_irqs(void)
{
    struct acpi_madt_info madt;
    acpi_get_madt_info(&madt);
    ioapic_set_base(madt.ioapic_base);
    lapic_enable();
    unsigned gsi = madt.isa_gsi[8];
    uint16_t fl = madt.isa_flags[8];
    bool low = (fl & 3) == 3, level = ((fl >> 2) & 3) == 3;
    isr_set_handler(RTC_VECTOR, rtc_isr);
    ioapic_route(gsi, RTC_VECTOR, level, low, false, lapic_id());
    uint8_t a = cmos_read(0x0a), b = cmos_read(0x0b);
    (void)cmos_read(0x0c);
    cmos_write(0x0a, (uint8_t)((a & 0xf0) | 0x06)); /* 1024 Hz */
    cmos_write(0x0b, (uint8_t)((b & ~0x70) | 0x40)); /* PIE only */
    unsigned n = rtc_wait(&rtc_pf, 3, 2000000);
    tap_check(n >= 3, "RTC periodic interrupt on GSI %u (%u)", gsi, n);
    cmos_write(0x0b, (uint8_t)((b & ~0x70) | 0x10)); /* UIE only */
    n = rtc_wait(&rtc_uf, 1, 2500000);
    tap_check(n >= 1, "RTC update-ended interrupt (%u)", n);
    cmos_write(0x0b, (uint8_t)(b & ~0x70));
    cmos_write(0x0a, a);
    (void)cmos_read(0x0c);
    ioapic_route(gsi, RTC_VECTOR, level, low, true, lapic_id());
}

static int i8042_read_data(uint64_t timeout_us)
{
    uint64_t end = time_now_us() + timeout_us;
    do {
        if (inb(0x64) & 1)
            return inb(0x60);
        cpu_relax();
    } while (time_now_us() < end);
    return -1;
}

static bool i8042_send_cmd(uint8_t cmd)
{
    for (unsigned i = 0; i < 100000; i++) {
        if (!(inb(0x64) & 2)) {
            outb(0x64, cmd);
            return true;
        }
        cpu_relax();
    }
    return false;
}

void guest_main(void)
{
    tap_plan(9);

    tap_check(cmos_read(0x0d) & 0x80, "RTC status D reports valid RAM and time");
    bool valid = true;
    unsigned t[6];
    rtc_read_time(t, &valid);
    valid = valid && t[0] < 60 && t[1] < 60 && t[2] < 24 && t[3] >= 1 && t[3] <= 31 &&
            t[4] >= 1 && t[4] <= 12 && t[5] <= 99;
    tap_check(valid, "RTC time is valid: 20%02u-%02u-%02u %02u:%02u:%02u", t[5], t[4], t[3], t[2],
              t[1], t[0]);

    unsigned first = t[0], now = t[0];
    uint64_t end = time_now_us() + 3000000;
    while (now == first && time_now_us() < end) {
        time_delay_us(10000);
        bool v2 = true;
        rtc_read_time(t, &v2);
        now = t[0];
    }
    tap_check(now != first, "RTC seconds advance (%u -> %u)", first, now);

    check_rtc_irqs();

    uint8_t old = cmos_read(0x50);
    cmos_write(0x50, 0x5a);
    uint8_t a = cmos_read(0x50);
    cmos_write(0x50, 0xa5);
    uint8_t b = cmos_read(0x50);
    cmos_write(0x50, old);
    tap_check(a == 0x5a && b == 0xa5, "CMOS RAM byte 0x50 holds written values (%x, %x)", a, b);

    while (inb(0x64) & 1)
        (void)inb(0x60); /* stale output */
    int r = i8042_send_cmd(0xaa) ? i8042_read_data(1000000) : -2;
    tap_check(r == 0x55, "i8042 controller self-test answers 0x55 (%x)", r);
    r = i8042_send_cmd(0x20) ? i8042_read_data(1000000) : -2;
    tap_check(r >= 0, "i8042 returns its configuration byte (%x)", r);

    tap_check(fences_execute(), "mfence, lfence and sfence execute");
}
