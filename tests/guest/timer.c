/* Timer interrupts arrive: the ACPI PM timer counts, the PIT's IRQ0 reaches
 * the CPU through the IOAPIC (GSI from the MADT's overrides), the LAPIC
 * timer fires once in one-shot mode and repeatedly in periodic mode.
 * Counts only, never rates: hosts differ in speed. */
#include "guest.h"

#define PIT_VECTOR 0x30
#define LAPIC_ONESHOT_VECTOR 0x31
#define LAPIC_PERIODIC_VECTOR 0x32
#define WAIT_US 5000000

/* Waits with interrupts on until vector has fired n times or time is up. */
static unsigned long wait_for(unsigned vector, unsigned long n)
{
    uint64_t end = time_now_us() + WAIT_US;
    irq_enable();
    while (isr_count(vector) < n && time_now_us() < end)
        cpu_relax();
    irq_disable();
    return isr_count(vector);
}

void guest_main(void)
{
    tap_plan(6);

    uint64_t t0 = time_now_us();
    time_delay_us(1000);
    tap_check(time_have_pmtimer() && time_now_us() > t0, "ACPI PM timer (from the FADT) counts");

    struct acpi_madt_info madt;
    acpi_get_madt_info(&madt);
    ioapic_set_base(madt.ioapic_base);
    pic_mask_all();
    lapic_enable();
    tap_check(madt.found && madt.have_ioapic && ioapic_pins() >= 16,
              "MADT lists an IOAPIC at %lx with %u pins", madt.ioapic_base, ioapic_pins());

    /* PIT channel 0 at ~100 Hz, ISA IRQ0 -> GSI (2 on PC-compatibles). */
    unsigned gsi = madt.isa_gsi[0];
    uint16_t fl = madt.isa_flags[0];
    bool low = (fl & 3) == 3, level = ((fl >> 2) & 3) == 3;
    ioapic_route(gsi, PIT_VECTOR, level, low, false, lapic_id());
    pit_start_periodic(11932);
    unsigned long n = wait_for(PIT_VECTOR, 5);
    ioapic_route(gsi, PIT_VECTOR, level, low, true, lapic_id());
    pit_stop();
    tap_check(n >= 5, "PIT IRQ0 via IOAPIC GSI %u: %lu interrupts", gsi, n);

    /* LAPIC one-shot: exactly one interrupt, then the counter rests at 0. */
    lapic_write(LAPIC_TIMER_DIV, 0x3); /* divide by 16 */
    lapic_write(LAPIC_LVT_TIMER, LAPIC_ONESHOT_VECTOR);
    lapic_write(LAPIC_TIMER_INIT, 200000);
    (void)wait_for(LAPIC_ONESHOT_VECTOR, 1);
    time_delay_us(20000);
    irq_enable();
    time_delay_us(20000);
    irq_disable();
    n = isr_count(LAPIC_ONESHOT_VECTOR);
    tap_check(n == 1 && lapic_read(LAPIC_TIMER_CUR) == 0,
              "LAPIC timer one-shot fired once (%lu), current count %u", n,
              lapic_read(LAPIC_TIMER_CUR));

    /* LAPIC periodic. */
    lapic_write(LAPIC_LVT_TIMER, LAPIC_PERIODIC_VECTOR | (1u << 17));
    lapic_write(LAPIC_TIMER_INIT, 200000);
    n = wait_for(LAPIC_PERIODIC_VECTOR, 5);
    lapic_write(LAPIC_LVT_TIMER, LAPIC_PERIODIC_VECTOR | (1u << 16)); /* masked */
    lapic_write(LAPIC_TIMER_INIT, 0);
    tap_check(n >= 5, "LAPIC timer periodic: %lu interrupts", n);

    /* A masked timer still counts down. */
    lapic_write(LAPIC_TIMER_INIT, 0x7fffffff);
    time_delay_us(2000);
    uint32_t cur = lapic_read(LAPIC_TIMER_CUR);
    lapic_write(LAPIC_TIMER_INIT, 0);
    tap_check(cur > 0 && cur < 0x7fffffff, "LAPIC current count decrements (%x)", cur);
}
