/* Ember's x86 PC: built from struct vm_config in machine_build(), run by
 * machine_run(). See machine.h for the threading model.
 *
 * Reset is done by rebuilding: stop the vCPUs, reset the devices, destroy
 * the accelerator VM and create a fresh one (the simplest way to pristine
 * CPU and irqchip state), zero RAM, reload the kernel and firmware tables,
 * restart the vCPUs. Devices hold stable proxies (irq sink, ioeventfd hooks)
 * so they never see the accelerator change under them. */
#include "machine/machine.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "accel/accel.h"
#include "block/block.h"
#include "chardev/chardev.h"
#include "core/evloop.h"
#include "core/guest_mem.h"
#include "core/log.h"
#include "core/util.h"
#include "hw/acpi_pm.h"
#include "hw/bus.h"
#include "hw/debug_exit.h"
#include "hw/pvpanic.h"
#include "hw/i8042.h"
#include "hw/pci.h"
#include "hw/rtc.h"
#include "hw/serial.h"
#include "hw/virtio/virtio.h"
#include "hw/vmctl.h"
#include "machine/boot.h"
#include "machine/layout.h"

#define MACHINE_MAX_CHARDEVS (CONFIG_MAX_DEVICES + 1)

struct ioeventfd_reg {
    bool pio;
    uint64_t addr;
    unsigned len;
    int fd;
};

struct machine {
    const struct vm_config *cfg;

    /* Guest RAM: one anonymous mapping, split around the 32-bit PCI hole. */
    uint8_t *ram;
    uint64_t ram_size;
    struct guest_mem mem;

    /* The accelerator; replaced as a whole on reset. */
    const struct accel_ops *ops;
    struct accel *accel;
    struct vcpu **vcpus;
    pthread_t *threads;
    bool threads_started;
    atomic_bool stop;

    struct evloop *loop;
    struct bus *pio, *mmio;
    struct vm_control vmctl;
    struct irq_sink irq;                        /* proxy handed to devices */
    const struct irq_sink *_Atomic accel_irq;   /* where the proxy forwards; NULL during reset */
    struct virtio_env venv;

    struct chardev *chardevs[MACHINE_MAX_CHARDEVS];
    unsigned nr_chardevs;
    struct block_dev *disks[CONFIG_MAX_DEVICES];
    unsigned nr_disks;
    struct serial *serial;
    struct i8042 *i8042;
    struct rtc *rtc;
    struct acpi_pm *acpi_pm;
    struct pci_bus *pci;
    uint32_t pci_slot_mask;
    struct cpu_state bsp_entry; /* the boot loader's entry state for vCPU 0 */

    /* Requests from devices, handled on the loop thread. */
    pthread_mutex_t lock;
    bool event_queued;
    bool exiting;
    int exit_code;
    bool reset_requested;

    /* ioeventfds the devices registered, replayed onto a rebuilt VM. */
    pthread_mutex_t ioev_lock;
    struct ioeventfd_reg *ioevs;
    unsigned nr_ioevs;
};

/* The process's machine: keeps everything reachable until exit (devices
 * without destructors are not leaked in the leak checker's eyes). Nothing
 * reads it, so volatile: otherwise the compiler drops the store, and a
 * machine that failed before any device pointed at it reads as a leak. */
static struct machine *volatile machine_current;

/* --- requests: power-off, reset, exit ----------------------------------- */

static void machine_kick_vcpus(struct machine *m)
{
    atomic_store(&m->stop, true);
    for (unsigned i = 0; m->vcpus && i < m->cfg->nr_cpus; i++) {
        if (m->vcpus[i])
            m->ops->vcpu_kick(m->vcpus[i]);
    }
}

static int machine_reset(struct machine *m);

/* Loop thread: act on what was requested. An exit beats a reset. */
static void machine_handle_request(void *opaque)
{
    struct machine *m = opaque;
    pthread_mutex_lock(&m->lock);
    bool exiting = m->exiting, reset = m->reset_requested;
    int code = m->exit_code;
    m->reset_requested = false;
    m->event_queued = false;
    pthread_mutex_unlock(&m->lock);
    if (exiting) {
        evloop_stop(m->loop, code);
    } else if (reset && machine_reset(m) < 0) {
        evloop_stop(m->loop, 1);
    }
}

/* Any thread: record the request, stop the vCPUs, let the loop thread act. */
static void machine_post(struct machine *m, bool reset, int exit_code)
{
    pthread_mutex_lock(&m->lock);
    if (!m->exiting) {
        if (reset) {
            m->reset_requested = true;
        } else {
            m->exiting = true;
            m->exit_code = exit_code;
        }
    }
    bool queue = !m->event_queued;
    m->event_queued = true;
    machine_kick_vcpus(m);
    pthread_mutex_unlock(&m->lock);
    if (queue)
        evloop_call(m->loop, machine_handle_request, m);
}

static void machine_vm_request(void *opaque, enum vm_event event, int exit_code)
{
    struct machine *m = opaque;
    switch (event) {
    case VM_EVENT_POWEROFF:
        log_debug("guest powered off");
        machine_post(m, false, 0);
        break;
    case VM_EVENT_QUIT:
        machine_post(m, false, 0);
        break;
    case VM_EVENT_EXIT:
        machine_post(m, false, exit_code);
        break;
    case VM_EVENT_ERROR:
        machine_post(m, false, 1);
        break;
    case VM_EVENT_RESET:
        log_debug("guest requested a reset%s", m->cfg->no_reboot ? " (-no-reboot: exiting)" : "");
        machine_post(m, !m->cfg->no_reboot, 0);
        break;
    }
}

/* --- proxies devices hold ----------------------------------------------- */

static void machine_irq_set_level(void *opaque, unsigned gsi, bool level)
{
    struct machine *m = opaque;
    const struct irq_sink *s = atomic_load(&m->accel_irq);
    if (s)
        s->set_level(s->opaque, gsi, level);
}

static void machine_irq_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
    struct machine *m = opaque;
    const struct irq_sink *s = atomic_load(&m->accel_irq);
    if (s)
        s->send_msi(s->opaque, addr, data);
}

/* MSI routes (irqfds) go to the current VM. They never need replaying onto
 * a rebuilt one: devices drop them in their reset, which machine_reset()
 * runs before it replaces the accelerator. */
static int machine_msi_route_add(void *opaque, uint64_t addr, uint32_t data, int fd)
{
    struct machine *m = opaque;
    const struct irq_sink *s = atomic_load(&m->accel_irq);
    if (!s || !s->msi_route_add)
        return -EOPNOTSUPP;
    return s->msi_route_add(s->opaque, addr, data, fd);
}

static int machine_msi_route_update(void *opaque, int route, uint64_t addr, uint32_t data)
{
    struct machine *m = opaque;
    const struct irq_sink *s = atomic_load(&m->accel_irq);
    if (!s || !s->msi_route_update)
        return -EOPNOTSUPP;
    return s->msi_route_update(s->opaque, route, addr, data);
}

static void machine_msi_route_del(void *opaque, int route)
{
    struct machine *m = opaque;
    const struct irq_sink *s = atomic_load(&m->accel_irq);
    if (s && s->msi_route_del)
        s->msi_route_del(s->opaque, route);
}

static int machine_add_ioeventfd(void *opaque, bool pio, uint64_t addr, unsigned len, int fd)
{
    struct machine *m = opaque;
    pthread_mutex_lock(&m->ioev_lock);
    /* Without a VM (mid-reset) it is only recorded, and replayed on creation. */
    int ret = m->accel ? m->ops->add_ioeventfd(m->accel, pio, addr, len, fd) : 0;
    if (ret == 0) {
        m->ioevs = xrealloc(m->ioevs, (m->nr_ioevs + 1) * sizeof(*m->ioevs));
        m->ioevs[m->nr_ioevs++] = (struct ioeventfd_reg){pio, addr, len, fd};
    }
    pthread_mutex_unlock(&m->ioev_lock);
    return ret;
}

static int machine_del_ioeventfd(void *opaque, bool pio, uint64_t addr, unsigned len, int fd)
{
    struct machine *m = opaque;
    pthread_mutex_lock(&m->ioev_lock);
    int ret = m->accel ? m->ops->del_ioeventfd(m->accel, pio, addr, len, fd) : 0;
    for (unsigned i = 0; i < m->nr_ioevs; i++) {
        struct ioeventfd_reg *r = &m->ioevs[i];
        if (r->pio == pio && r->addr == addr && r->len == len && r->fd == fd) {
            *r = m->ioevs[--m->nr_ioevs];
            break;
        }
    }
    pthread_mutex_unlock(&m->ioev_lock);
    return ret;
}

/* --- RAM ---------------------------------------------------------------- */

static int machine_alloc_ram(struct machine *m)
{
    m->ram_size = m->cfg->ram_size;
    void *p = mmap(NULL, m->ram_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return log_fail(-errno, "-m: cannot reserve %llu MiB of guest RAM: %s",
                        (unsigned long long)(m->ram_size / MiB), strerror(errno));
    m->ram = p;
    madvise(p, m->ram_size, MADV_HUGEPAGE); /* best effort: fewer TLB misses */
    uint64_t low = MIN(m->ram_size, LAYOUT_LOW_RAM_MAX);
    int ret = guest_mem_add(&m->mem, 0, low, m->ram);
    if (!ret && m->ram_size > low)
        ret = guest_mem_add(&m->mem, LAYOUT_HIGH_RAM_BASE, m->ram_size - low, m->ram + low);
    if (ret)
        return log_fail(ret, "guest RAM layout rejected (%d)", ret);
    return 0;
}

/* --- accelerator -------------------------------------------------------- */

static int machine_pick_accel(struct machine *m)
{
    const char *list = m->cfg->accel ? m->cfg->accel : "kvm:tcg";
    bool defaulted = !m->cfg->accel;
    char *copy = xstrdup(list), *save = NULL;
    const char *last_why = NULL, *last_name = NULL;
    for (char *name = strtok_r(copy, ":", &save); name; name = strtok_r(NULL, ":", &save)) {
        const struct accel_ops *ops = accel_find(name);
        const char *why = "not available";
        if (!ops) {
            last_why = "is not available in this build";
            last_name = name;
            log_debug("accelerator %s is not available in this build", name);
            continue;
        }
        if (ops->available && !ops->available(&why)) {
            if (defaulted)
                log_info("KVM is not usable (%s); falling back to the tcg software CPU", why);
            else
                log_debug("accelerator %s: %s", name, why);
            last_why = why;
            last_name = name;
            continue;
        }
        /* Only a choice ember made itself is second-guessed: -accel kvm
         * still gets KVM. */
        if (defaulted && ops->runs_stock_kernels && !ops->runs_stock_kernels(&why) &&
            boot_kernel_is_bzimage(m->cfg->kernel)) {
            log_info("%s; falling back to the tcg software CPU (-accel kvm forces KVM)", why);
            last_why = why;
            last_name = name;
            continue;
        }
        m->ops = ops;
        free(copy);
        return 0;
    }
    int ret;
    if (last_why && !strcmp(last_why, "is not available in this build"))
        ret = log_fail(-ENODEV, "accelerator %s is not available in this build", last_name);
    else
        ret = log_fail(-ENODEV, "-accel %s: %s", last_name ? last_name : list,
                       last_why ? last_why : "not available");
    free(copy);
    return ret;
}

/* Create the accelerator VM, map RAM, replay ioeventfds, create the vCPUs
 * and put vCPU 0 at the kernel's entry (machine_load_guest() ran before). */
static int machine_create_accel(struct machine *m)
{
    const struct vm_config *cfg = m->cfg;
    struct accel_config ac = {
        .nr_vcpus = cfg->nr_cpus,
        .ram_size = m->ram_size,
        .mem = &m->mem,
        .pio = m->pio,
        .mmio = m->mmio,
        .stop = &m->stop,
        .cpu_model = cfg->cpu_model,
        .sockets = cfg->sockets,
        .cores = cfg->cores,
        .threads = cfg->threads,
        .cpuid_overrides = cfg->cpu_flags,
        .nr_cpuid_overrides = cfg->nr_cpu_flags,
    };
    int ret = m->ops->create(&ac, &m->accel);
    if (ret)
        return ret;
    for (unsigned i = 0; i < m->mem.nr_regions; i++) {
        const struct guest_mem_region *r = &m->mem.regions[i];
        ret = m->ops->map_ram(m->accel, r->gpa, r->size, r->host);
        if (ret)
            return ret;
    }
    pthread_mutex_lock(&m->ioev_lock);
    for (unsigned i = 0; i < m->nr_ioevs && !ret; i++) {
        const struct ioeventfd_reg *r = &m->ioevs[i];
        ret = m->ops->add_ioeventfd(m->accel, r->pio, r->addr, r->len, r->fd);
    }
    pthread_mutex_unlock(&m->ioev_lock);
    if (ret)
        return ret;
    struct vcpu **vcpus = xcalloc(cfg->nr_cpus, sizeof(*vcpus));
    for (unsigned i = 0; i < cfg->nr_cpus && !ret; i++)
        ret = m->ops->vcpu_create(m->accel, i, &vcpus[i]);
    pthread_mutex_lock(&m->lock);
    m->vcpus = vcpus;
    pthread_mutex_unlock(&m->lock);
    if (!ret)
        ret = m->ops->vcpu_set_state(vcpus[0], &m->bsp_entry);
    if (ret)
        return ret;
    atomic_store(&m->accel_irq, m->ops->irq_sink(m->accel));
    return 0;
}

static void machine_destroy_accel(struct machine *m)
{
    atomic_store(&m->accel_irq, NULL);
    pthread_mutex_lock(&m->lock);
    struct vcpu **vcpus = m->vcpus;
    m->vcpus = NULL;
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; vcpus && i < m->cfg->nr_cpus; i++) {
        if (vcpus[i])
            m->ops->vcpu_destroy(vcpus[i]);
    }
    free(vcpus);
    if (m->accel)
        m->ops->destroy(m->accel);
    m->accel = NULL;
}

/* --- devices ------------------------------------------------------------ */

static struct chardev *machine_open_chardev(struct machine *m, const char *spec)
{
    if (m->nr_chardevs == MACHINE_MAX_CHARDEVS) {
        log_error("too many character devices");
        return NULL;
    }
    struct chardev *c = chardev_open(spec, m->loop, &m->vmctl);
    if (c)
        m->chardevs[m->nr_chardevs++] = c;
    return c;
}

/* The ISA side of the PC: COM1, keyboard controller, RTC, ACPI PM, pvpanic,
 * debug exits. */
static int machine_add_legacy_devices(struct machine *m)
{
    const struct vm_config *cfg = m->cfg;
    struct chardev *com1 = machine_open_chardev(m, cfg->serial);
    if (!com1)
        return -EINVAL;
    m->serial = serial_new(m->pio, LAYOUT_COM1_PORT, LAYOUT_COM1_GSI, &m->irq, com1);
    m->i8042 = i8042_new(m->pio, &m->irq, &m->vmctl);
    m->rtc = rtc_new(m->pio, &m->irq, m->ram_size);
    m->acpi_pm = acpi_pm_new(m->pio, &m->irq, &m->vmctl);
    if (!m->serial || !m->i8042 || !m->rtc || !m->acpi_pm)
        return log_fail(-EINVAL, "creating the legacy PC devices failed");
    /* Always present (the DSDT describes it): a guest panic ends ember with
     * a failure status instead of leaving a dead guest running. */
    if (pvpanic_new(m->pio, PVPANIC_PORT, &m->vmctl))
        return log_fail(-EINVAL, "creating the pvpanic device failed");
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        const struct device_config *d = &cfg->devices[i];
        if (d->kind != DEVICE_ISA_DEBUG_EXIT)
            continue;
        int ret = debug_exit_new(m->pio, d->iobase, d->iosize, &m->vmctl);
        if (ret)
            return ret;
    }
    return 0;
}

static const struct drive_config *machine_find_drive(const struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; i < cfg->nr_drives; i++) {
        if (!strcmp(cfg->drives[i].id, id))
            return &cfg->drives[i];
    }
    return NULL;
}

static int machine_add_virtio_blk(struct machine *m, const struct device_config *d)
{
    const struct drive_config *drv = machine_find_drive(m->cfg, d->drive);
    if (!drv)
        return log_fail(-EINVAL, "-device virtio-blk-pci: drive '%s' is not defined", d->drive);
    char *what = xasprintf("-drive id=%s", drv->id);
    struct block_open_opts opts = {
        .format = drv->format,
        .readonly = drv->readonly,
        .loop = m->loop,
        .l2_cache_size = drv->l2_cache_size,
        .what = what,
    };
    struct block_dev *bd = NULL;
    int ret = block_open(drv->file, &opts, &bd);
    free(what);
    if (ret)
        return ret;
    m->disks[m->nr_disks++] = bd;
    return virtio_blk_create(&m->venv, bd, d->id ? d->id : drv->id, d->serial, d->num_queues,
                             drv->readonly);
}

/* PCI bus 0 and the virtio devices, in command-line order (slots 1, 2, ...). */
static int machine_add_pci_devices(struct machine *m)
{
    const struct vm_config *cfg = m->cfg;
    m->pci = pci_bus_new(m->pio, m->mmio, &m->irq);
    if (!m->pci)
        return log_fail(-EINVAL, "creating the PCI bus failed");
    m->venv = (struct virtio_env){.pci = m->pci, .mem = &m->mem, .loop = m->loop};
    if (m->ops->add_ioeventfd && m->ops->del_ioeventfd) {
        m->venv.ioev_opaque = m;
        m->venv.add_ioeventfd = machine_add_ioeventfd;
        m->venv.del_ioeventfd = machine_del_ioeventfd;
    }
    unsigned nr_pci = 0;
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        const struct device_config *d = &cfg->devices[i];
        int ret = 0;
        switch (d->kind) {
        case DEVICE_VIRTIO_BLK:
            ret = machine_add_virtio_blk(m, d);
            break;
        case DEVICE_VIRTIO_RNG:
            ret = virtio_rng_create(&m->venv);
            break;
        case DEVICE_VIRTIO_SERIAL: {
            struct chardev *c = machine_open_chardev(m, d->chardev ? d->chardev : "none");
            ret = c ? virtio_console_create(&m->venv, c) : -EINVAL;
            break;
        }
        case DEVICE_ISA_DEBUG_EXIT:
            continue;
        }
        if (ret)
            return ret;
        nr_pci++;
    }
    /* Devices take the free slots in order after the host bridge (slot 0). */
    for (unsigned slot = 1; slot <= nr_pci && slot < PCI_MAX_SLOTS; slot++)
        m->pci_slot_mask |= 1u << slot;
    return pci_bus_assign_bars(m->pci);
}

static void machine_reset_devices(struct machine *m)
{
    serial_reset(m->serial);
    i8042_reset(m->i8042);
    rtc_reset(m->rtc);
    acpi_pm_reset(m->acpi_pm);
    pci_bus_reset(m->pci);
}

/* --- guest software ----------------------------------------------------- */

/* What firmware would have left in RAM, and the BSP's entry state. */
static int machine_load_guest(struct machine *m)
{
    const struct vm_config *cfg = m->cfg;
    struct firmware_config fc = {
        .nr_cpus = cfg->nr_cpus,
        .ram_size = m->ram_size,
        .pci_slot_mask = m->pci_slot_mask,
    };
    int ret = firmware_build_tables(&fc, &m->mem);
    if (ret)
        return ret;
    struct boot_config bc = {
        .kernel = cfg->kernel,
        .initrd = cfg->initrd,
        .cmdline = cfg->append ? cfg->append : "",
        .ram_size = m->ram_size,
        .nr_cpus = cfg->nr_cpus,
    };
    memset(&m->bsp_entry, 0, sizeof(m->bsp_entry));
    return boot_load_kernel(&bc, &m->mem, &m->bsp_entry);
}

/* --- vCPU threads ------------------------------------------------------- */

struct vcpu_thread_arg {
    struct machine *m;
    unsigned index;
};

static void machine_dump_vcpu(struct machine *m, struct vcpu *v)
{
    flockfile(stderr);
    m->ops->vcpu_dump(v, stderr);
    funlockfile(stderr);
}

static void *machine_vcpu_thread(void *opaque)
{
    struct vcpu_thread_arg *arg = opaque;
    struct machine *m = arg->m;
    unsigned index = arg->index;
    free(arg);
    struct vcpu *v = m->vcpus[index];
    switch (m->ops->vcpu_run(v)) {
    case VCPU_EXIT_STOPPED:
        break;
    case VCPU_EXIT_SHUTDOWN:
        log_error("vCPU %u: triple fault: the guest crashed the CPU", index);
        machine_dump_vcpu(m, v);
        machine_post(m, false, MACHINE_EXIT_CRASH);
        break;
    case VCPU_EXIT_INTERNAL_ERROR:
        log_error("vCPU %u: the %s accelerator cannot run the guest's instruction", index,
                  m->ops->name);
        machine_dump_vcpu(m, v);
        machine_post(m, false, MACHINE_EXIT_CRASH);
        break;
    case VCPU_EXIT_FAILED:
        machine_post(m, false, 1);
        break;
    }
    return NULL;
}

static int machine_start_vcpus(struct machine *m)
{
    unsigned n = m->cfg->nr_cpus;
    /* vCPU threads leave terminal signals to the main thread. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    atomic_store(&m->stop, false);
    int ret = 0;
    unsigned started = 0;
    for (; started < n; started++) {
        struct vcpu_thread_arg *arg = xmalloc(sizeof(*arg));
        *arg = (struct vcpu_thread_arg){m, started};
        ret = pthread_create(&m->threads[started], NULL, machine_vcpu_thread, arg);
        if (ret) {
            free(arg);
            break;
        }
        char name[16];
        snprintf(name, sizeof(name), "vcpu%u", started);
        pthread_setname_np(m->threads[started], name);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    m->threads_started = true;
    if (ret) {
        /* Join the ones that started; the caller exits. */
        atomic_store(&m->stop, true);
        for (unsigned i = 0; i < started; i++) {
            m->ops->vcpu_kick(m->vcpus[i]);
            pthread_join(m->threads[i], NULL);
        }
        m->threads_started = false;
        return log_fail(-ret, "cannot start vCPU thread %u: %s", started, strerror(ret));
    }
    return 0;
}

static void machine_stop_vcpus(struct machine *m)
{
    if (!m->threads_started)
        return;
    pthread_mutex_lock(&m->lock);
    machine_kick_vcpus(m);
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < m->cfg->nr_cpus; i++)
        pthread_join(m->threads[i], NULL);
    m->threads_started = false;
}

/* Loop thread, on a guest reset without -no-reboot. */
static int machine_reset(struct machine *m)
{
    machine_stop_vcpus(m);
    log_debug("resetting the machine");
    machine_reset_devices(m); /* before the VM goes: devices drop their ioeventfds */
    machine_destroy_accel(m);
    /* Fresh zero pages, and the host memory back. */
    if (madvise(m->ram, m->ram_size, MADV_DONTNEED) < 0)
        memset(m->ram, 0, m->ram_size);
    /* pci_bus_reset() put back the BAR assignment made at build time. */
    int ret = machine_load_guest(m);
    if (!ret)
        ret = machine_create_accel(m);
    if (!ret)
        ret = machine_start_vcpus(m);
    if (ret)
        log_error("reset failed: exiting");
    return ret;
}

/* --- the machine -------------------------------------------------------- */

static struct machine *machine_alloc(const struct vm_config *cfg)
{
    struct machine *m = xzalloc(sizeof(*m));
    m->cfg = cfg;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->ioev_lock, NULL);
    m->loop = evloop_new();
    m->pio = bus_new("pio");
    m->mmio = bus_new("mmio");
    m->vmctl = (struct vm_control){.opaque = m, .request = machine_vm_request};
    m->irq = (struct irq_sink){.opaque = m, .set_level = machine_irq_set_level,
                               .send_msi = machine_irq_send_msi,
                               .msi_route_add = machine_msi_route_add,
                               .msi_route_update = machine_msi_route_update,
                               .msi_route_del = machine_msi_route_del};
    m->threads = xcalloc(cfg->nr_cpus, sizeof(*m->threads));
    machine_current = m;
    return m;
}

int machine_build(const struct vm_config *cfg, struct machine **out)
{
    if (cfg->nr_cpus == 0 || !cfg->kernel || !cfg->serial)
        return log_fail(-EINVAL, "incomplete VM configuration");
    /* Files named on the command line (disks, kernel) are opened before the
     * accelerator VM is created, so their errors come first. Devices reach
     * the VM only through the machine's proxies, which work without one. */
    struct machine *m = machine_alloc(cfg);
    int ret = machine_alloc_ram(m);
    if (!ret)
        ret = machine_pick_accel(m);
    if (!ret)
        ret = machine_add_legacy_devices(m);
    if (!ret)
        ret = machine_add_pci_devices(m);
    if (!ret)
        ret = machine_load_guest(m);
    if (!ret)
        ret = machine_create_accel(m);
    if (ret) {
        /* Host resources go; memory stays reachable from machine_current. */
        machine_destroy_accel(m);
        chardev_restore_terminals();
        return ret;
    }
    *out = m;
    return 0;
}

int machine_run(struct machine *m)
{
    int code = machine_start_vcpus(m);
    if (code == 0)
        code = evloop_run(m->loop);
    else
        code = 1;
    machine_stop_vcpus(m);
    /* Drain in-flight disk writes and write back image metadata. */
    for (unsigned i = 0; i < m->nr_disks; i++)
        block_close(m->disks[i]);
    m->nr_disks = 0;
    chardev_restore_terminals();
    return code;
}

void machine_free(struct machine *m)
{
    if (!m)
        return;
    machine_stop_vcpus(m);
    machine_destroy_accel(m);
    for (unsigned i = 0; i < m->nr_disks; i++)
        block_close(m->disks[i]);
    for (unsigned i = 0; i < m->nr_chardevs; i++)
        chardev_close(m->chardevs[i]);
    if (m->ram)
        munmap(m->ram, m->ram_size);
    m->ram = NULL;
    /* Devices, buses and the loop stay allocated (not all devices have
     * destructors, and they reference each other); the process is exiting. */
}
