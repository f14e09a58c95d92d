/* The software CPU's local APICs (xAPIC mode) and the "APIC bus" that routes
 * interrupt messages between them: IOAPIC redirection entries, MSIs and
 * inter-processor interrupts (ICR writes) all become a struct apic_irq that
 * apic_bus_deliver() hands to the matching LAPICs.
 *
 * Semantics follow KVM's in-kernel LAPIC: version 0x14 with 6 LVT entries,
 * a 1 GHz APIC bus clock for the timer (one tick per nanosecond before the
 * divider), TSC-deadline mode against the guest TSC (1 GHz, see cpu.h),
 * flat and cluster logical destinations, INIT/SIPI driving the AP's
 * wait-for-SIPI state. x2APIC is not implemented (CPUID does not offer it).
 *
 * Threads: a LAPIC is read and written by its own vCPU thread (MMIO, MSRs,
 * interrupt acknowledge) and receives interrupts from any thread (devices,
 * the IOAPIC, other vCPUs, the timer thread). Each LAPIC has its own lock;
 * callbacks into the bus (kick, eoi, ipi) are made with that lock dropped.
 * lapic_irq_pending() is lock-free for the vCPU's hot path.
 *
 * Time comes from the bus's now_ns() so tests can drive it by hand; timer
 * expiry is polled (lapic_timer_poll()) by whoever owns the clock. */
#ifndef EMBER_ACCEL_EMU_LAPIC_H
#define EMBER_ACCEL_EMU_LAPIC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define LAPIC_DEFAULT_BASE 0xfee00000ULL
#define LAPIC_PAGE_SIZE 0x1000ULL
#define LAPIC_MAX_CPUS 255 /* xAPIC physical ids 0-254; 0xff is broadcast */

/* Delivery modes (ICR, IOAPIC redirection entry and MSI data bits 10:8). */
enum apic_delivery {
    APIC_DM_FIXED = 0,
    APIC_DM_LOWEST = 1,
    APIC_DM_SMI = 2,
    APIC_DM_NMI = 4,
    APIC_DM_INIT = 5,
    APIC_DM_SIPI = 6,
    APIC_DM_EXTINT = 7,
};

/* Destination shorthands (ICR bits 19:18). */
enum apic_shorthand {
    APIC_SH_NONE = 0,
    APIC_SH_SELF = 1,
    APIC_SH_ALL = 2,       /* all including self */
    APIC_SH_ALL_BUT_SELF = 3,
};

/* One interrupt message on the APIC bus. */
struct apic_irq {
    uint8_t vector;
    uint8_t delivery;   /* enum apic_delivery */
    uint8_t shorthand;  /* enum apic_shorthand; only IPIs use it */
    bool logical;       /* destination mode: logical (true) or physical */
    bool level;         /* trigger mode: level (true) or edge */
    bool assert;        /* level: assert (true) / de-assert; INIT de-assert is a no-op */
    uint8_t dest;       /* 8-bit xAPIC destination */
};

/* Multiprocessor state of a vCPU as its LAPIC sees it. */
enum lapic_mp_state {
    LAPIC_MP_RUNNING,   /* executing (or halted) */
    LAPIC_MP_WAIT_SIPI, /* after INIT (APs start here): sleeps until a SIPI */
};

struct lapic;

/* What the LAPICs need from the platform; all callbacks are optional except
 * now_ns. Called with no LAPIC lock held. */
struct apic_bus {
    struct lapic **cpus; /* index = vCPU index = APIC id */
    unsigned nr_cpus;
    void *opaque;
    uint64_t (*now_ns)(void); /* CLOCK_MONOTONIC in production, a fake in tests */
    /* Something became deliverable on cpus[index] (interrupt, NMI, INIT,
     * SIPI). force_exit: the vCPU must leave guest code (INIT). */
    void (*kick)(void *opaque, unsigned index, bool force_exit);
    /* EOI of a level-triggered vector: the IOAPIC clears its remote IRR. */
    void (*eoi_level)(void *opaque, uint8_t vector);
    /* The 8259's INT output and its acknowledge cycle (virtual-wire mode). */
    bool (*pic_output)(void *opaque);
    int (*pic_intack)(void *opaque);
    /* Guest TSC of a vCPU (for TSC-deadline mode); 1 GHz like now_ns. */
    uint64_t (*read_tsc)(void *opaque, unsigned index);
    /* A timer deadline moved earlier or was armed: whoever sleeps until the
     * next deadline must look again. */
    void (*timer_changed)(void *opaque);
};

/* index is the vCPU index and the initial APIC id; index 0 is the BSP and
 * starts running, the others start in LAPIC_MP_WAIT_SIPI. */
struct lapic *lapic_new(struct apic_bus *bus, unsigned index);
void lapic_free(struct lapic *l);
/* Power-on reset (INIT resets are handled internally). */
void lapic_reset(struct lapic *l);

/* The IA32_APIC_BASE MSR. Writes that set reserved bits or x2APIC mode
 * return false (the CPU raises #GP). */
uint64_t lapic_get_base_msr(struct lapic *l);
bool lapic_set_base_msr(struct lapic *l, uint64_t val);
/* Is gpa inside this LAPIC's enabled MMIO page? */
bool lapic_mmio_hit(struct lapic *l, uint64_t gpa);
/* offset within the 4 KiB page. Reads of 1, 2 or 4 bytes inside a register
 * return those bytes; writes must be 4-byte aligned dwords (others ignored). */
uint32_t lapic_mmio_read(struct lapic *l, uint64_t offset, unsigned size);
void lapic_mmio_write(struct lapic *l, uint64_t offset, uint32_t val, unsigned size);
/* Direct register access by offset (0x20 ID, 0x80 TPR, ...), for tests and CR8. */
uint32_t lapic_read_reg(struct lapic *l, unsigned reg);
void lapic_write_reg(struct lapic *l, unsigned reg, uint32_t val);
uint8_t lapic_get_cr8(struct lapic *l);
void lapic_set_cr8(struct lapic *l, uint8_t cr8);
uint64_t lapic_get_tsc_deadline(struct lapic *l);
void lapic_set_tsc_deadline(struct lapic *l, uint64_t tsc);

/* Accept one message addressed to this LAPIC (routing already done). */
void lapic_accept(struct lapic *l, const struct apic_irq *irq);
/* Route a message to every matching LAPIC; src is the sender for IPI
 * shorthands (NULL for IOAPIC/MSI). Returns how many LAPICs accepted it. */
unsigned apic_bus_deliver(struct apic_bus *bus, struct lapic *src, const struct apic_irq *irq);
/* Decode a PCI MSI (address 0xfeeXXXXX, data) into a message; false if the
 * address is not in the interrupt window. */
bool apic_msi_decode(uint64_t addr, uint32_t data, struct apic_irq *out);
/* The 8259's output changed: the BSP's LAPIC re-evaluates virtual wire. */
void lapic_pic_changed(struct lapic *l);

/* Lock-free: may an interrupt, NMI or MP event be waiting? (May be stale
 * true; never stale false after a kick.) */
bool lapic_irq_pending(struct lapic *l);
/* Can an external interrupt be delivered now (PIC virtual wire, ExtINT or an
 * IRR vector above the processor priority)? */
bool lapic_has_deliverable(struct lapic *l);
/* Interrupt acknowledge: the vector to deliver (IRR -> ISR, or the PIC's),
 * or -1. */
int lapic_irq_ack(struct lapic *l);
/* Consume a pending NMI. */
bool lapic_nmi_ack(struct lapic *l);

/* AP start-up. lapic_take_init() returns true once per INIT received (the
 * caller resets the CPU; the LAPIC is already reset and waiting for a SIPI).
 * lapic_take_sipi() returns true with the vector when a SIPI arrived while
 * waiting (the LAPIC is then running). */
enum lapic_mp_state lapic_mp_state(struct lapic *l);
bool lapic_take_init(struct lapic *l);
bool lapic_take_sipi(struct lapic *l, uint8_t *vector);
bool lapic_nmi_pending(struct lapic *l);
/* An INIT or SIPI waits to be taken. */
bool lapic_mp_event_pending(struct lapic *l);

/* Timer: the absolute now_ns() deadline of the next timer expiry, or
 * UINT64_MAX if none is armed. lapic_timer_poll() fires it if due (raising
 * the LVT timer vector, re-arming periodic mode) and returns the next one. */
uint64_t lapic_timer_deadline(struct lapic *l);
uint64_t lapic_timer_poll(struct lapic *l, uint64_t now);

unsigned lapic_index(const struct lapic *l);
/* One-paragraph human-readable state (for crash reports). */
void lapic_dump(struct lapic *l, FILE *out);

#endif
