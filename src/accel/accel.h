/* The accelerator seam: what the machine needs from "something that runs
 * x86-64 vCPUs over guest RAM". KVM (accel/kvm) and Ember's software CPU
 * (accel/emu) implement the same ops; nothing above accel/ includes
 * <linux/kvm.h>.
 *
 * Life cycle: create() -> map_ram() for every RAM region -> vcpu_create()
 * for each vCPU index (0 is the bootstrap processor; the others start in
 * wait-for-SIPI state and are woken by the guest's INIT/SIPI through the
 * accelerator's LAPIC) -> vcpu_set_state() on vCPU 0 with the boot loader's
 * entry state -> one host thread per vCPU calls vcpu_run() -> destroy().
 *
 * I/O: the accelerator dispatches port and MMIO accesses itself through the
 * buses in accel_config (bus_read/bus_write), from the vCPU thread.
 * Interrupts: irq_sink() returns the interface devices raise GSIs and MSIs
 * through; the accelerator owns PIC/IOAPIC/LAPIC/PIT. */
#ifndef EMBER_ACCEL_ACCEL_H
#define EMBER_ACCEL_ACCEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/guest_mem.h"
#include "hw/bus.h"
#include "hw/irq.h"

struct accel;
struct vcpu;

struct cpu_segment {
    uint64_t base;
    uint32_t limit; /* byte granular (already scaled when g=1) */
    uint16_t selector;
    uint8_t type; /* 4-bit descriptor type */
    uint8_t s, dpl, present, avl, l, db, g;
    uint8_t unusable;
};

struct cpu_dtable {
    uint64_t base;
    uint16_t limit;
};

/* Architectural register state, accelerator-neutral. */
struct cpu_state {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
    struct cpu_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct cpu_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer;
};

/* Why vcpu_run() returned. */
enum vcpu_exit {
    VCPU_EXIT_STOPPED,        /* *stop became true (machine request or kick) */
    VCPU_EXIT_SHUTDOWN,       /* triple fault */
    VCPU_EXIT_INTERNAL_ERROR, /* the accelerator could not run an instruction */
    VCPU_EXIT_FAILED,         /* host-side failure (message already printed) */
};

/* One CPUID feature bit forced on or off (-cpu host,+feat,-feat). */
struct cpuid_override {
    uint32_t leaf, subleaf;
    uint8_t reg; /* 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX */
    uint8_t bit;
    bool set;
};

struct accel_config {
    unsigned nr_vcpus;
    uint64_t ram_size;        /* total guest RAM, for CPUID/MSR models */
    struct guest_mem *mem;
    struct bus *pio, *mmio;
    /* Checked by every vCPU loop; set by the machine before kicking. */
    atomic_bool *stop;
    /* Required CPU model, "host" or NULL for the accelerator's default. */
    const char *cpu_model;
    /* -smp topology for CPUID (sockets * cores * threads >= nr_vcpus);
     * 0 = one socket of nr_vcpus single-thread cores. */
    unsigned sockets, cores, threads;
    /* Applied to the CPUID the accelerator would otherwise expose. */
    const struct cpuid_override *cpuid_overrides;
    unsigned nr_cpuid_overrides;
};

struct accel_ops {
    const char *name; /* "kvm", "tcg" */
    /* Can this accelerator run here? On false, *why says why in one line. */
    bool (*available)(const char **why);
    /* Optional (NULL = yes): can it run an unmodified OS kernel at a usable
     * speed? False on hosts whose accelerator runs small guests but not a
     * stock kernel (KVM on the PVM backend emulates guest ring 0); *why says
     * why. Consulted only when the user did not choose the accelerator. */
    bool (*runs_stock_kernels)(const char **why);
    /* Prints its own message on failure. */
    int (*create)(const struct accel_config *cfg, struct accel **out);
    void (*destroy)(struct accel *a);
    int (*map_ram)(struct accel *a, uint64_t gpa, uint64_t size, void *host);
    const struct irq_sink *(*irq_sink)(struct accel *a);

    int (*vcpu_create)(struct accel *a, unsigned index, struct vcpu **out);
    void (*vcpu_destroy)(struct vcpu *v);
    int (*vcpu_set_state)(struct vcpu *v, const struct cpu_state *s);
    int (*vcpu_get_state)(struct vcpu *v, struct cpu_state *s);
    /* Runs guest code on the calling thread until an exit listed above. */
    enum vcpu_exit (*vcpu_run)(struct vcpu *v);
    /* From any thread: make vcpu_run() return VCPU_EXIT_STOPPED soon if *stop. */
    void (*vcpu_kick)(struct vcpu *v);
    /* Human-readable register dump for crash reports. */
    void (*vcpu_dump)(struct vcpu *v, FILE *out);

    /* Optional (NULL if unsupported): signal fd when the guest writes to
     * [addr, addr+len) in PIO or MMIO space, without a trip through the bus.
     * Used for virtio queue notifications. */
    int (*add_ioeventfd)(struct accel *a, bool pio, uint64_t addr, unsigned len, int fd);
    int (*del_ioeventfd)(struct accel *a, bool pio, uint64_t addr, unsigned len, int fd);
};

extern const struct accel_ops accel_kvm_ops;
extern const struct accel_ops accel_emu_ops;

/* "kvm", "tcg" (alias "emu"); NULL if unknown. */
const struct accel_ops *accel_find(const char *name);

#endif
