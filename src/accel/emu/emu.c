/* The software-CPU accelerator ("tcg"): vCPU threads around emu_cpu_run()
 * and the userspace platform KVM would otherwise provide in the kernel: one
 * LAPIC per vCPU, the IOAPIC, the 8259 pair and the 8254 PIT.
 *
 * Threads: each vCPU thread runs vcpu_run(); when its CPU halts it sleeps on
 * its own condition variable until something is deliverable. Timers (LAPIC
 * timers, PIT channel 0) are driven by one timer thread per VM that sleeps
 * until the nearest deadline: a running CPU only looks at interrupts when
 * emu_cpu_raise_irq_check() is called, so someone has to call it on time.
 *
 * Interrupt routing (same as QEMU's KVM routing): GSI 0-15 go to the 8259
 * (except 2, the cascade) and to the IOAPIC, where ISA IRQ0 (the PIT) lands
 * on pin 2 per the MADT interrupt source override; GSI 16-23 reach the
 * IOAPIC only. MSIs are decoded onto the APIC bus. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accel/accel.h"
#include "accel/emu/cpu.h"
#include "accel/emu/ioapic.h"
#include "accel/emu/lapic.h"
#include "accel/emu/pic.h"
#include "accel/emu/pit.h"
#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

#define MSR_IA32_APIC_BASE 0x1b
#define MSR_IA32_TSC_DEADLINE 0x6e0
/* A halted vCPU re-checks its wake-up condition this often even without a
 * kick: cheap insurance against a lost wake-up. */
#define HALT_RECHECK_NS 100000000ull

struct accel {
    struct accel_config cfg;
    atomic_bool own_stop; /* used if cfg.stop is NULL */
    atomic_bool *stop;

    struct pic *pic;
    struct ioapic *ioapic;
    struct pit *pit;
    struct apic_bus apic_bus;
    struct irq_sink sink;
    bool pic_registered, pit_registered, ioapic_registered;

    /* Kicks come from any thread; vcpu_destroy() takes the write side. */
    pthread_rwlock_t vcpus_lock;
    struct vcpu **vcpus;

    pthread_t timer_thread;
    bool timer_started;
    pthread_mutex_t timer_lock;
    pthread_cond_t timer_cond;
    bool timer_quit, timer_rearm;
};

struct vcpu {
    struct accel *a;
    unsigned index;
    struct emu_cpu *cpu;
    struct lapic *lapic;
    struct emu_platform_ops ops;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_bool run_stop; /* makes emu_cpu_run() return: kicks and INIT */
};

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec ns_to_timespec(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000ull),
                             .tv_nsec = (long)(ns % 1000000000ull)};
}

static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

/* ---- waking vCPUs ----------------------------------------------------------- */

static void vcpu_wake(struct vcpu *v, bool force_exit)
{
    if (force_exit)
        atomic_store(&v->run_stop, true);
    emu_cpu_raise_irq_check(v->cpu);
    pthread_mutex_lock(&v->lock);
    pthread_cond_signal(&v->cond);
    pthread_mutex_unlock(&v->lock);
}

static void platform_kick(void *opaque, unsigned index, bool force_exit)
{
    struct accel *a = opaque;
    pthread_rwlock_rdlock(&a->vcpus_lock);
    struct vcpu *v = index < a->cfg.nr_vcpus ? a->vcpus[index] : NULL;
    if (v)
        vcpu_wake(v, force_exit);
    pthread_rwlock_unlock(&a->vcpus_lock);
}

/* ---- the timer thread ------------------------------------------------------- */

static void timer_rearm(void *opaque)
{
    struct accel *a = opaque;
    pthread_mutex_lock(&a->timer_lock);
    a->timer_rearm = true;
    pthread_cond_signal(&a->timer_cond);
    pthread_mutex_unlock(&a->timer_lock);
}

/* Fire what is due; the nearest remaining deadline. */
static uint64_t timers_poll(struct accel *a)
{
    uint64_t now = monotonic_ns();
    uint64_t next = pit_poll(a->pit, now);
    for (unsigned i = 0; i < a->cfg.nr_vcpus; i++)
        next = MIN(next, lapic_timer_poll(a->apic_bus.cpus[i], now));
    return next;
}

static void *timer_thread_main(void *arg)
{
    struct accel *a = arg;
    pthread_mutex_lock(&a->timer_lock);
    while (!a->timer_quit) {
        a->timer_rearm = false;
        pthread_mutex_unlock(&a->timer_lock);
        uint64_t next = timers_poll(a);
        pthread_mutex_lock(&a->timer_lock);
        if (a->timer_quit || a->timer_rearm)
            continue;
        if (next == UINT64_MAX) {
            pthread_cond_wait(&a->timer_cond, &a->timer_lock);
        } else if (next > monotonic_ns()) {
            struct timespec ts = ns_to_timespec(next);
            pthread_cond_timedwait(&a->timer_cond, &a->timer_lock, &ts);
        }
    }
    pthread_mutex_unlock(&a->timer_lock);
    return NULL;
}

/* ---- interrupt routing -------------------------------------------------------- */

static void sink_set_level(void *opaque, unsigned gsi, bool level)
{
    struct accel *a = opaque;
    if (gsi >= LAYOUT_IOAPIC_PINS) {
        log_debug("tcg: ignoring GSI %u (the IOAPIC has %u pins)", gsi, LAYOUT_IOAPIC_PINS);
        return;
    }
    if (gsi < 16 && gsi != 2)
        pic_set_irq(a->pic, gsi, level);
    if (gsi == 0)
        ioapic_set_irq(a->ioapic, 2, level); /* ISA IRQ0 -> GSI 2 override */
    else if (gsi != 2)
        ioapic_set_irq(a->ioapic, gsi, level);
}

static void sink_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
    struct accel *a = opaque;
    struct apic_irq irq;
    if (!apic_msi_decode(addr, data, &irq)) {
        log_debug("tcg: dropping MSI to 0x%llx (not the interrupt window)",
                  (unsigned long long)addr);
        return;
    }
    apic_bus_deliver(&a->apic_bus, NULL, &irq);
}

static void pit_irq0(void *opaque)
{
    sink_set_level(opaque, 0, true);
    sink_set_level(opaque, 0, false);
}

static unsigned ioapic_deliver(void *opaque, const struct apic_irq *irq)
{
    struct accel *a = opaque;
    return apic_bus_deliver(&a->apic_bus, NULL, irq);
}

static void pic_notify(void *opaque)
{
    struct accel *a = opaque;
    if (a->apic_bus.cpus[0])
        lapic_pic_changed(a->apic_bus.cpus[0]);
}

static void apic_eoi_level(void *opaque, uint8_t vector)
{
    struct accel *a = opaque;
    ioapic_eoi(a->ioapic, vector);
}

static bool apic_pic_output(void *opaque)
{
    struct accel *a = opaque;
    return pic_output(a->pic);
}

static int apic_pic_intack(void *opaque)
{
    struct accel *a = opaque;
    return pic_intack(a->pic);
}

/* Only called from the vCPU's own thread (TSC-deadline MSR write). */
static uint64_t apic_read_tsc(void *opaque, unsigned index)
{
    struct accel *a = opaque;
    struct vcpu *v = index < a->cfg.nr_vcpus ? a->vcpus[index] : NULL;
    return v ? emu_cpu_tsc(v->cpu) : monotonic_ns();
}

/* ---- IOAPIC on the MMIO bus ----------------------------------------------------- */

static uint64_t ioapic_bus_read(void *opaque, uint64_t offset, unsigned size)
{
    return ioapic_mmio_read(opaque, offset, size);
}

static void ioapic_bus_write(void *opaque, uint64_t offset, uint64_t val, unsigned size)
{
    ioapic_mmio_write(opaque, offset, (uint32_t)val, size);
}

static const struct bus_ops ioapic_bus_ops = {.read = ioapic_bus_read, .write = ioapic_bus_write};

/* ---- platform side of the CPU --------------------------------------------------- */

static uint64_t plat_mmio_read(void *opaque, struct emu_cpu *cpu, uint64_t gpa, unsigned size)
{
    struct vcpu *v = opaque;
    if (lapic_mmio_hit(v->lapic, gpa))
        return lapic_mmio_read(v->lapic, gpa & (LAPIC_PAGE_SIZE - 1), MIN(size, 4u));
    uint64_t val = 0;
    bus_read(v->a->cfg.mmio, gpa, &val, size);
    return val;
}

static void plat_mmio_write(void *opaque, struct emu_cpu *cpu, uint64_t gpa, uint64_t val,
                            unsigned size)
{
    struct vcpu *v = opaque;
    if (lapic_mmio_hit(v->lapic, gpa)) {
        lapic_mmio_write(v->lapic, gpa & (LAPIC_PAGE_SIZE - 1), (uint32_t)val, MIN(size, 4u));
        return;
    }
    bus_write(v->a->cfg.mmio, gpa, &val, size);
}

static uint32_t plat_pio_read(void *opaque, struct emu_cpu *cpu, uint16_t port, unsigned size)
{
    struct vcpu *v = opaque;
    uint32_t val = 0;
    bus_read(v->a->cfg.pio, port, &val, MIN(size, 4u));
    return val;
}

static void plat_pio_write(void *opaque, struct emu_cpu *cpu, uint16_t port, uint32_t val,
                           unsigned size)
{
    struct vcpu *v = opaque;
    bus_write(v->a->cfg.pio, port, &val, MIN(size, 4u));
}

static bool plat_rdmsr(void *opaque, struct emu_cpu *cpu, uint32_t msr, uint64_t *val)
{
    struct vcpu *v = opaque;
    switch (msr) {
    case MSR_IA32_APIC_BASE:
        *val = lapic_get_base_msr(v->lapic);
        return true;
    case MSR_IA32_TSC_DEADLINE:
        *val = lapic_get_tsc_deadline(v->lapic);
        return true;
    default:
        return false; /* x2APIC MSRs included: CPUID does not offer x2APIC */
    }
}

static bool plat_wrmsr(void *opaque, struct emu_cpu *cpu, uint32_t msr, uint64_t val)
{
    struct vcpu *v = opaque;
    switch (msr) {
    case MSR_IA32_APIC_BASE:
        return lapic_set_base_msr(v->lapic, val);
    case MSR_IA32_TSC_DEADLINE:
        lapic_set_tsc_deadline(v->lapic, val);
        return true;
    default:
        return false;
    }
}

static int plat_irq_ack(void *opaque, struct emu_cpu *cpu)
{
    struct vcpu *v = opaque;
    return lapic_irq_ack(v->lapic);
}

static bool plat_nmi_ack(void *opaque, struct emu_cpu *cpu)
{
    struct vcpu *v = opaque;
    return lapic_nmi_ack(v->lapic);
}

static uint8_t plat_get_cr8(void *opaque, struct emu_cpu *cpu)
{
    struct vcpu *v = opaque;
    return lapic_get_cr8(v->lapic);
}

static void plat_set_cr8(void *opaque, struct emu_cpu *cpu, uint8_t cr8)
{
    struct vcpu *v = opaque;
    lapic_set_cr8(v->lapic, cr8);
}

/* ---- accelerator ops ------------------------------------------------------------ */

static bool emu_available(const char **why)
{
    (void)why;
    return true; /* pure software: runs anywhere */
}

static void emu_dma_written(void *opaque, uint64_t gpa, uint64_t len)
{
    emu_invalidate_code(opaque, gpa, len);
}

static void emu_destroy(struct accel *a)
{
    if (!a)
        return;
    if (a->timer_started) {
        pthread_mutex_lock(&a->timer_lock);
        a->timer_quit = true;
        pthread_cond_signal(&a->timer_cond);
        pthread_mutex_unlock(&a->timer_lock);
        pthread_join(a->timer_thread, NULL);
    }
    if (a->pic_registered)
        pic_unregister(a->pic, a->cfg.pio);
    if (a->pit_registered)
        pit_unregister(a->pit, a->cfg.pio);
    if (a->ioapic_registered)
        bus_unregister(a->cfg.mmio, LAYOUT_IOAPIC_BASE, a->ioapic);
    for (unsigned i = 0; a->apic_bus.cpus && i < a->cfg.nr_vcpus; i++)
        lapic_free(a->apic_bus.cpus[i]);
    free(a->apic_bus.cpus);
    free(a->vcpus);
    pit_free(a->pit);
    ioapic_free(a->ioapic);
    pic_free(a->pic);
    pthread_rwlock_destroy(&a->vcpus_lock);
    pthread_mutex_destroy(&a->timer_lock);
    pthread_cond_destroy(&a->timer_cond);
    if (a->cfg.mem && a->cfg.mem->write_hook == emu_dma_written)
        a->cfg.mem->write_hook = NULL;
    free(a);
}

static int emu_create(const struct accel_config *cfg, struct accel **out)
{
    if (cfg->nr_vcpus == 0 || cfg->nr_vcpus > LAPIC_MAX_CPUS)
        return log_fail(-EINVAL, "tcg: %u vCPUs requested; 1 to %u are supported", cfg->nr_vcpus,
                        LAPIC_MAX_CPUS);
    if (!cfg->mem || !cfg->pio || !cfg->mmio)
        return log_fail(-EINVAL, "tcg: guest memory and I/O buses are required");

    struct accel *a = xzalloc(sizeof(*a));
    a->cfg = *cfg;
    a->stop = cfg->stop ? cfg->stop : &a->own_stop;
    cfg->mem->write_hook = emu_dma_written; /* DMA into code: drop decoded blocks */
    cfg->mem->write_hook_opaque = cfg->mem;
    pthread_rwlock_init(&a->vcpus_lock, NULL);
    pthread_mutex_init(&a->timer_lock, NULL);
    cond_init_monotonic(&a->timer_cond);
    a->vcpus = xcalloc(cfg->nr_vcpus, sizeof(*a->vcpus));

    a->apic_bus = (struct apic_bus){
        .cpus = xcalloc(cfg->nr_vcpus, sizeof(struct lapic *)),
        .nr_cpus = cfg->nr_vcpus,
        .opaque = a,
        .now_ns = monotonic_ns,
        .kick = platform_kick,
        .eoi_level = apic_eoi_level,
        .pic_output = apic_pic_output,
        .pic_intack = apic_pic_intack,
        .read_tsc = apic_read_tsc,
        .timer_changed = timer_rearm,
    };
    /* The PIC before the LAPICs: a LAPIC's reset asks for the PIC's output. */
    a->pic = pic_new(pic_notify, a);
    a->ioapic = ioapic_new(ioapic_deliver, a);
    a->pit = pit_new(&(struct pit_callbacks){
        .opaque = a, .now_ns = monotonic_ns, .irq0 = pit_irq0, .timer_changed = timer_rearm});
    for (unsigned i = 0; i < cfg->nr_vcpus; i++)
        a->apic_bus.cpus[i] = lapic_new(&a->apic_bus, i);
    a->sink = (struct irq_sink){.opaque = a, .set_level = sink_set_level,
                                .send_msi = sink_send_msi};

    int r = pic_register(a->pic, cfg->pio);
    if (r < 0)
        goto fail;
    a->pic_registered = true;
    r = pit_register(a->pit, cfg->pio);
    if (r < 0)
        goto fail;
    a->pit_registered = true;
    r = bus_register(cfg->mmio, LAYOUT_IOAPIC_BASE, IOAPIC_MMIO_SIZE, &ioapic_bus_ops, a->ioapic,
                     "ioapic");
    if (r < 0)
        goto fail;
    a->ioapic_registered = true;

    r = -pthread_create(&a->timer_thread, NULL, timer_thread_main, a);
    if (r < 0) {
        log_error("tcg: cannot start the timer thread: %s", strerror(-r));
        goto fail;
    }
    a->timer_started = true;
    *out = a;
    return 0;
fail:
    emu_destroy(a);
    return r;
}

static int emu_map_ram(struct accel *a, uint64_t gpa, uint64_t size, void *host)
{
    /* The CPU reaches RAM through cfg->mem; nothing to map. */
    return 0;
}

static const struct irq_sink *emu_irq_sink(struct accel *a) { return &a->sink; }

static int emu_vcpu_create(struct accel *a, unsigned index, struct vcpu **out)
{
    if (index >= a->cfg.nr_vcpus || a->vcpus[index])
        return log_fail(-EINVAL, "tcg: bad or duplicate vCPU index %u", index);
    struct vcpu *v = xzalloc(sizeof(*v));
    v->a = a;
    v->index = index;
    v->lapic = a->apic_bus.cpus[index];
    pthread_mutex_init(&v->lock, NULL);
    cond_init_monotonic(&v->cond);
    v->ops = (struct emu_platform_ops){
        .opaque = v,
        .mmio_read = plat_mmio_read,
        .mmio_write = plat_mmio_write,
        .pio_read = plat_pio_read,
        .pio_write = plat_pio_write,
        .rdmsr = plat_rdmsr,
        .wrmsr = plat_wrmsr,
        .irq_ack = plat_irq_ack,
        .nmi_ack = plat_nmi_ack,
        .get_cr8 = plat_get_cr8,
        .set_cr8 = plat_set_cr8,
    };
    v->cpu = emu_cpu_new(a->cfg.mem, &v->ops, index, a->cfg.nr_vcpus);
    if (!v->cpu) {
        pthread_mutex_destroy(&v->lock);
        pthread_cond_destroy(&v->cond);
        free(v);
        return log_fail(-ENOMEM, "tcg: cannot create vCPU %u", index);
    }
    pthread_rwlock_wrlock(&a->vcpus_lock);
    a->vcpus[index] = v;
    pthread_rwlock_unlock(&a->vcpus_lock);
    *out = v;
    return 0;
}

static void emu_vcpu_destroy(struct vcpu *v)
{
    if (!v)
        return;
    struct accel *a = v->a;
    pthread_rwlock_wrlock(&a->vcpus_lock);
    a->vcpus[v->index] = NULL;
    pthread_rwlock_unlock(&a->vcpus_lock);
    emu_cpu_free(v->cpu);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    free(v);
}

static int emu_vcpu_set_state(struct vcpu *v, const struct cpu_state *s)
{
    emu_cpu_set_state(v->cpu, s);
    return 0;
}

static int emu_vcpu_get_state(struct vcpu *v, struct cpu_state *s)
{
    emu_cpu_get_state(v->cpu, s);
    return 0;
}

/* Sleep until the vCPU has something to do: a SIPI (or INIT) when waiting
 * for start-up; an NMI, INIT or (with IF=1) a deliverable interrupt when
 * halted; or a stop request. */
static void vcpu_wait(struct vcpu *v, bool waiting_for_sipi)
{
    struct accel *a = v->a;
    bool if_set = !waiting_for_sipi && emu_cpu_interrupts_enabled(v->cpu);
    pthread_mutex_lock(&v->lock);
    for (;;) {
        if (atomic_load(a->stop) || atomic_load(&v->run_stop))
            break;
        if (lapic_mp_event_pending(v->lapic))
            break;
        if (!waiting_for_sipi && lapic_irq_pending(v->lapic) &&
            (lapic_nmi_pending(v->lapic) || (if_set && lapic_has_deliverable(v->lapic))))
            break;
        struct timespec ts = ns_to_timespec(monotonic_ns() + HALT_RECHECK_NS);
        pthread_cond_timedwait(&v->cond, &v->lock, &ts);
    }
    pthread_mutex_unlock(&v->lock);
}

static enum vcpu_exit emu_vcpu_run(struct vcpu *v)
{
    struct accel *a = v->a;
    for (;;) {
        /* Clear before looking at *stop: a kick sets *stop first, then this. */
        atomic_store(&v->run_stop, false);
        if (atomic_load(a->stop))
            return VCPU_EXIT_STOPPED;
        if (lapic_take_init(v->lapic))
            emu_cpu_reset(v->cpu);
        if (lapic_mp_state(v->lapic) == LAPIC_MP_WAIT_SIPI) {
            uint8_t vector;
            if (lapic_take_sipi(v->lapic, &vector))
                emu_cpu_sipi(v->cpu, vector);
            else
                vcpu_wait(v, true);
            continue;
        }
        if (lapic_irq_pending(v->lapic))
            emu_cpu_raise_irq_check(v->cpu);
        switch (emu_cpu_run(v->cpu, &v->run_stop)) {
        case EMU_EXIT_STOP:
            break;
        case EMU_EXIT_HLT:
            vcpu_wait(v, false);
            break;
        case EMU_EXIT_SHUTDOWN:
            return VCPU_EXIT_SHUTDOWN;
        case EMU_EXIT_INTERNAL_ERROR:
        default:
            log_error("tcg: vCPU %u: internal emulation error", v->index);
            return VCPU_EXIT_INTERNAL_ERROR;
        }
    }
}

static void emu_vcpu_kick(struct vcpu *v) { vcpu_wake(v, true); }

static void emu_vcpu_dump(struct vcpu *v, FILE *out)
{
    emu_cpu_dump(v->cpu, out);
    lapic_dump(v->lapic, out);
}

const struct accel_ops accel_emu_ops = {
    .name = "tcg",
    .available = emu_available,
    .create = emu_create,
    .destroy = emu_destroy,
    .map_ram = emu_map_ram,
    .irq_sink = emu_irq_sink,
    .vcpu_create = emu_vcpu_create,
    .vcpu_destroy = emu_vcpu_destroy,
    .vcpu_set_state = emu_vcpu_set_state,
    .vcpu_get_state = emu_vcpu_get_state,
    .vcpu_run = emu_vcpu_run,
    .vcpu_kick = emu_vcpu_kick,
    .vcpu_dump = emu_vcpu_dump,
    .add_ioeventfd = NULL,
    .del_ioeventfd = NULL,
};
