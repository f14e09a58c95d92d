/* Private to accel/kvm: the VM and vCPU objects shared by kvm.c (VM,
 * memory, interrupts) and kvm_vcpu.c (vCPU creation, CPUID, run loop). */
#ifndef EMBER_ACCEL_KVM_INTERNAL_H
#define EMBER_ACCEL_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "accel/accel.h"

#define KVM_TSS_ADDR 0xfffbd000UL
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ULL

/* MSI routes (irqfds) take the GSIs after the IOAPIC's pins. */
#define KVM_MAX_MSI_ROUTES 512

struct kvm_msi_route {
    bool used;
    int fd;
    uint64_t addr;
    uint32_t data;
};

struct accel {
    int kvm_fd;
    int vm_fd;
    int run_size;              /* size of the kvm_run mapping */
    struct accel_config cfg;   /* copy; pointers inside are the machine's */
    struct irq_sink irq;
    unsigned nr_slots;         /* memory slots used */
    struct kvm_cpuid2 *cpuid;  /* KVM_GET_SUPPORTED_CPUID, fetched once */
    /* GSI routing: the PC's fixed irqchip entries plus the MSI routes. */
    bool has_irqfd;
    unsigned max_routes;       /* KVM_CAP_IRQ_ROUTING */
    pthread_mutex_t route_lock;
    struct kvm_irq_routing *routing; /* scratch for KVM_SET_GSI_ROUTING */
    unsigned nr_chip_routes;   /* entries [0, n) of routing are the irqchip's */
    struct kvm_msi_route msi[KVM_MAX_MSI_ROUTES];
};

struct vcpu {
    struct accel *acc;
    unsigned index;
    int fd;
    struct kvm_run *run;
    /* The thread inside vcpu_run(), for kicks; valid while running. */
    pthread_t thread;
    atomic_bool running;
    pthread_mutex_t kick_lock; /* orders kicks against the thread leaving vcpu_run */
};

/* kvm_vcpu.c */
int kvm_vcpu_create(struct accel *a, unsigned index, struct vcpu **out);
void kvm_vcpu_destroy(struct vcpu *v);
int kvm_vcpu_set_state(struct vcpu *v, const struct cpu_state *s);
int kvm_vcpu_get_state(struct vcpu *v, struct cpu_state *s);
enum vcpu_exit kvm_vcpu_run(struct vcpu *v);
void kvm_vcpu_kick(struct vcpu *v);
void kvm_vcpu_dump(struct vcpu *v, FILE *out);

#endif
