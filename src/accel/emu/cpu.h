/* Ember's software x86-64 CPU: the interface between the CPU core (owned by
 * "cpu": decode, execute, MMU, exceptions) and the emulated platform (owned by
 * "emu-platform": vCPU threads, LAPIC/IOAPIC/PIC/PIT, bus dispatch).
 *
 * One struct emu_cpu per vCPU. Everything except emu_cpu_raise_irq_check()
 * and emu_invalidate_code() is called from that vCPU's own thread.
 *
 * Guest RAM is reached directly through struct guest_mem; every other
 * physical access (MMIO, including the LAPIC page) and every port access goes
 * to the platform callbacks below, synchronously, from the vCPU thread.
 *
 * Time: the guest TSC ticks at 1 GHz (one tick per host CLOCK_MONOTONIC
 * nanosecond) plus a per-CPU offset that WRMSR IA32_TSC (0x10) adjusts. The
 * CPUID model does not advertise an invariant/known TSC frequency. */
#ifndef EMBER_ACCEL_EMU_CPU_H
#define EMBER_ACCEL_EMU_CPU_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "accel/accel.h"
#include "core/guest_mem.h"

struct emu_cpu; /* opaque architectural + decode state */

struct emu_platform_ops { /* the platform side, called from the vCPU thread */
    void *opaque;
    /* Physical accesses that are not RAM (guest_mem_ptr() returned NULL): MMIO
     * incl. LAPIC at 0xfee00000. size is 1, 2, 4 or 8; accesses are never split
     * below their natural size unless they cross a page. Unclaimed reads return
     * all ones by convention. */
    uint64_t (*mmio_read)(void *opaque, struct emu_cpu *cpu, uint64_t gpa, unsigned size);
    void (*mmio_write)(void *opaque, struct emu_cpu *cpu, uint64_t gpa, uint64_t val, unsigned size);
    uint32_t (*pio_read)(void *opaque, struct emu_cpu *cpu, uint16_t port, unsigned size);
    void (*pio_write)(void *opaque, struct emu_cpu *cpu, uint16_t port, uint32_t val, unsigned size);
    /* MSRs the platform owns (APIC base 0x1b, x2APIC 0x800-0x8ff, TSC deadline
     * 0x6e0); return false if not its MSR (the CPU then raises #GP). */
    bool (*rdmsr)(void *opaque, struct emu_cpu *cpu, uint32_t msr, uint64_t *val);
    bool (*wrmsr)(void *opaque, struct emu_cpu *cpu, uint32_t msr, uint64_t val);
    /* Highest-priority deliverable external interrupt vector, or -1 (the
     * platform then also accepts it: IRR -> ISR). Called at instruction
     * boundaries when RFLAGS.IF=1 and no interrupt shadow, and only after
     * emu_cpu_raise_irq_check() was called (the flag is cleared before the
     * call, so a platform that still has something pending but undeliverable,
     * e.g. masked by TPR, calls emu_cpu_raise_irq_check() again when that
     * changes). */
    int (*irq_ack)(void *opaque, struct emu_cpu *cpu);
    /* NMI pending? Consumes it. Optional, may be NULL. */
    bool (*nmi_ack)(void *opaque, struct emu_cpu *cpu);
    /* CR8 <-> LAPIC TPR (CR8 = TPR[7:4]). Optional, may be NULL: the CPU then
     * keeps CR8 to itself. */
    uint8_t (*get_cr8)(void *opaque, struct emu_cpu *cpu);
    void (*set_cr8)(void *opaque, struct emu_cpu *cpu, uint8_t cr8);
};

/* mem and ops must outlive the CPU. apic_id is reported in CPUID (leaf 1
 * EBX[31:24], leaf 0xB); nr_cpus sizes the CPUID topology leaves. Returns
 * NULL on allocation failure. The new CPU is in the power-on state. */
struct emu_cpu *emu_cpu_new(struct guest_mem *mem, const struct emu_platform_ops *ops,
                            unsigned apic_id, unsigned nr_cpus);
void emu_cpu_free(struct emu_cpu *cpu);
/* Power-on / INIT state: real mode, CS:IP f000:fff0 (CS base 0xffff0000). */
void emu_cpu_reset(struct emu_cpu *cpu);
void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *s);
void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *s);
/* Start-up IPI: real mode at CS=vector<<8, IP=0 (linear vector<<12). Also
 * resets the rest of the state as INIT would. */
void emu_cpu_sipi(struct emu_cpu *cpu, uint8_t vector);

enum emu_exit {
    EMU_EXIT_STOP,           /* *stop was seen true */
    EMU_EXIT_HLT,            /* HLT executed (or still halted) and no interrupt deliverable */
    EMU_EXIT_SHUTDOWN,       /* triple fault */
    EMU_EXIT_INTERNAL_ERROR, /* emulator bug / unsupported state; emu_cpu_dump() explains */
};

/* Runs guest code until *stop, HLT with nothing deliverable, triple fault, or
 * an internal error. Unimplemented instructions raise #UD in the guest.
 * After EMU_EXIT_HLT the CPU stays halted; the next emu_cpu_run() first checks
 * for a deliverable interrupt (if the irq-check flag is set) and returns
 * EMU_EXIT_HLT again at once if there is none. */
enum emu_exit emu_cpu_run(struct emu_cpu *cpu, atomic_bool *stop);

/* Any thread: an interrupt (or NMI) may be pending -> the run loop calls
 * irq_ack/nmi_ack at the next instruction boundary (and leaves HLT). Cheap:
 * an atomic flag store. Also makes a running emu_cpu_run() look at *stop soon. */
void emu_cpu_raise_irq_check(struct emu_cpu *cpu);

/* True while the CPU is halted (after HLT, until an interrupt is taken). */
bool emu_cpu_halted(const struct emu_cpu *cpu);
/* RFLAGS.IF: lets the platform decide whether a halted CPU can be woken by an
 * external interrupt at all. */
bool emu_cpu_interrupts_enabled(const struct emu_cpu *cpu);

void emu_cpu_dump(struct emu_cpu *cpu, FILE *out);
/* Guest TSC: 1 GHz (host CLOCK_MONOTONIC ns) + per-CPU offset. */
uint64_t emu_cpu_tsc(struct emu_cpu *cpu);
/* Guest instructions retired so far (for statistics and tests). */
uint64_t emu_cpu_insn_count(const struct emu_cpu *cpu);

/* Self-modifying code / DMA: invalidate decoded instructions for a
 * guest-physical range (virtio writes to RAM). Any thread. */
void emu_invalidate_code(struct guest_mem *mem, uint64_t gpa, uint64_t len);

#endif
