/* SMP: every CPU the MADT lists (and "cpus=N" expects) comes up through
 * INIT/SIPI/SIPI into the real-mode trampoline, reaches long mode and
 * reports in; the APs' locked increments of one counter all land; fixed
 * and broadcast IPIs reach them. */
#include "guest.h"

#define INCREMENTS_PER_AP 1000
#define ICR_INIT 0x00004500      /* INIT, level assert */
#define ICR_STARTUP 0x00004600   /* STARTUP, vector = page number */

extern uint8_t ap_trampoline_start[], ap_trampoline_end[];
extern volatile uint8_t ap_mode;

static volatile uint32_t ap_arrived;
static volatile uint64_t ap_seen_ids[4];          /* bitmap of APIC IDs 0-255 */
static volatile uint32_t ap_slot_seen[GUEST_MAX_CPUS];
static volatile uint64_t shared_counter;

#define IPI_VECTOR 0x50
static volatile uint32_t ipi_count[256]; /* by APIC ID */

static void ipi_handler(struct isr_frame *f)
{
    (void)f;
    unsigned id = lapic_id() & 0xff;
    __asm__ volatile("lock incl %0" : "+m"(ipi_count[id]) : : "memory");
    lapic_eoi();
}

static inline void atomic_add_u64(volatile uint64_t *p, uint64_t v)
{
    __asm__ volatile("lock xaddq %0, %1" : "+r"(v), "+m"(*p) : : "memory");
}

static volatile uint32_t cpuid_mismatch;

void ap_main(unsigned slot);
void ap_main(unsigned slot)
{
    unsigned id = lapic_id() & 0xff;
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    if ((b >> 24) != id)
        __asm__ volatile("lock incl %0" : "+m"(cpuid_mismatch) : : "memory");
    __asm__ volatile("lock orq %1, %0" : "+m"(ap_seen_ids[id / 64]) : "r"(1ULL << (id % 64))
                     : "memory");
    if (slot < GUEST_MAX_CPUS)
        __asm__ volatile("lock incl %0" : "+m"(ap_slot_seen[slot]) : : "memory");
    for (unsigned i = 0; i < INCREMENTS_PER_AP; i++)
        atomic_add_u64(&shared_counter, 1);
    /* Ready for IPIs before reporting in: same IDT, APIC enabled. */
    idt_load();
    lapic_enable();
    __asm__ volatile("lock incl %0" : "+m"(ap_arrived) : : "memory");
    for (;;)
        cpu_wait_irq();
}

/* Waits until every AP in the MADT has taken at least n IPIs. */
static bool ipis_arrived(const struct acpi_madt_info *madt, unsigned bsp, uint32_t n)
{
    uint64_t end = time_now_us() + 2000000;
    for (;;) {
        bool all = true;
        for (unsigned i = 0; i < madt->nr_cpus; i++)
            if (madt->apic_ids[i] != bsp && ipi_count[madt->apic_ids[i]] < n)
                all = false;
        if (all)
            return true;
        if (time_now_us() > end) {
            for (unsigned i = 0; i < madt->nr_cpus; i++)
                if (madt->apic_ids[i] != bsp)
                    tap_diag("APIC ID %u: %u IPIs", madt->apic_ids[i], ipi_count[madt->apic_ids[i]]);
            return false;
        }
        cpu_relax();
    }
}

static bool id_seen(unsigned id)
{
    return (ap_seen_ids[id / 64] >> (id % 64)) & 1;
}

void guest_main(void)
{
    struct acpi_madt_info madt;
    acpi_get_madt_info(&madt);
    unsigned expect = (unsigned)cmdline_u64("cpus", madt.nr_cpus);
    if (expect > GUEST_MAX_CPUS)
        expect = GUEST_MAX_CPUS;

    tap_plan(8);
    tap_check(madt.found && madt.nr_cpus == expect, "MADT lists %u enabled CPUs (expected %u)",
              madt.nr_cpus, expect);
    lapic_enable();
    unsigned bsp = lapic_id();
    bool bsp_listed = false;
    for (unsigned i = 0; i < madt.nr_cpus; i++)
        bsp_listed |= madt.apic_ids[i] == bsp;
    tap_check(bsp_listed, "the BSP's APIC ID %u is in the MADT", bsp);

    size_t tlen = (size_t)(ap_trampoline_end - ap_trampoline_start);
    memcpy((void *)(uintptr_t)GUEST_TRAMPOLINE, ap_trampoline_start, tlen);
    ap_mode = 1;
    mb();

    unsigned started = 0;
    bool ipi_ok = true;
    for (unsigned i = 0; i < madt.nr_cpus; i++) {
        unsigned id = madt.apic_ids[i];
        if (id == bsp)
            continue;
        started++;
        lapic_write(LAPIC_ESR, 0);
        ipi_ok &= lapic_send_ipi(id, ICR_INIT);
        time_delay_us(10000);
        for (unsigned s = 0; s < 2; s++) {
            ipi_ok &= lapic_send_ipi(id, ICR_STARTUP | (GUEST_TRAMPOLINE >> 12));
            time_delay_us(200);
        }
    }
    tap_check(ipi_ok, "INIT/SIPI/SIPI sent to %u APs (ICR delivery completed)", started);

    uint64_t end = time_now_us() + 10000000;
    while (ap_arrived < started && time_now_us() < end)
        cpu_relax();
    /* A second SIPI may start a CPU twice; give stragglers a moment. */
    time_delay_us(50000);
    bool ids_ok = ap_arrived == started && expect >= 1 && started == expect - 1;
    for (unsigned i = 0; i < madt.nr_cpus; i++) {
        unsigned id = madt.apic_ids[i];
        if (id != bsp && !id_seen(id)) {
            tap_diag("APIC ID %u never reported in", id);
            ids_ok = false;
        }
    }
    for (unsigned s = 1; s <= started && s < GUEST_MAX_CPUS; s++) {
        if (ap_slot_seen[s] != 1) {
            tap_diag("AP slot %u taken %u times", s, ap_slot_seen[s]);
            ids_ok = false;
        }
    }
    tap_check(ids_ok, "all %u APs reached long mode and reported their APIC IDs (%u arrived)",
              started, ap_arrived);
    tap_check(shared_counter == (uint64_t)ap_arrived * INCREMENTS_PER_AP,
              "locked increments from all APs add up (%lu)", shared_counter);
    tap_check(cpuid_mismatch == 0, "each AP's CPUID initial APIC ID matches its LAPIC ID (%u "
              "mismatches)", cpuid_mismatch);

    isr_set_handler(IPI_VECTOR, ipi_handler);
    for (unsigned i = 0; i < madt.nr_cpus; i++)
        if (madt.apic_ids[i] != bsp)
            lapic_send_ipi(madt.apic_ids[i], IPI_VECTOR); /* fixed, physical */
    tap_check(ipis_arrived(&madt, bsp, 1), "a fixed IPI reaches each AP by APIC ID");
    lapic_send_ipi(0, IPI_VECTOR | (3u << 18)); /* shorthand: all excluding self */
    tap_check(ipis_arrived(&madt, bsp, 2) && ipi_count[bsp] == 0,
              "an all-excluding-self IPI reaches every AP and not the sender");
}
