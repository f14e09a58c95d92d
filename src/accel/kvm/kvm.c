/* The KVM accelerator: VM creation, guest RAM slots, the in-kernel irqchip
 * (PIC + IOAPIC + LAPIC + PIT) and the interrupt sink devices use.
 * vCPUs live in kvm_vcpu.c. */
#include "accel/kvm/kvm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

/* Capabilities Ember cannot run without (checked by available() and create()). */
static const struct {
    int cap;
    const char *name;
} kvm_required_caps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"},
    {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
};

static int kvm_open_dev(const char **why)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    if (errno == ENOENT)
        *why = "/dev/kvm does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) or use -accel tcg";
    else if (errno == EACCES || errno == EPERM)
        *why = "no permission to open /dev/kvm: add yourself to the kvm group or use -accel tcg";
    else
        *why = "cannot open /dev/kvm: use -accel tcg";
    return -1;
}

/* Checks the API version and required capabilities on an open /dev/kvm. */
static bool kvm_check_api(int kvm_fd, const char **why)
{
    static char msg[160];
    if (ioctl(kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        *why = "/dev/kvm speaks an unsupported KVM API version (expected 12): use -accel tcg";
        return false;
    }
    for (size_t i = 0; i < ARRAY_SIZE(kvm_required_caps); i++) {
        if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, kvm_required_caps[i].cap) <= 0) {
            snprintf(msg, sizeof(msg), "KVM on this host lacks %s: use -accel tcg",
                     kvm_required_caps[i].name);
            *why = msg;
            return false;
        }
    }
    return true;
}

static bool kvm_available(const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    int fd = kvm_open_dev(why);
    if (fd < 0)
        return false;
    bool ok = kvm_check_api(fd, why);
    close(fd);
    return ok;
}

/* KVM's PVM backend (module kvm_pvm) runs a guest's kernel in host user
 * mode and emulates its privileged instructions: fine for small guests, but
 * a stock Linux kernel does not get through early boot at that speed. The
 * KVM API looks the same, so the loaded module is the only tell. */
static bool kvm_runs_stock_kernels(const char **why)
{
    if (access("/sys/module/kvm_pvm", F_OK) != 0)
        return true;
    if (why)
        *why = "KVM here is the PVM backend (kvm_pvm), which emulates guest ring 0 too slowly "
               "for a stock Linux kernel";
    return false;
}

/* --- interrupts --------------------------------------------------------- */

static void kvm_irq_set_level(void *opaque, unsigned gsi, bool level)
{
    struct accel *a = opaque;
    struct kvm_irq_level irq = {.irq = gsi, .level = level ? 1 : 0};
    if (ioctl(a->vm_fd, KVM_IRQ_LINE, &irq) < 0)
        log_warn("kvm: KVM_IRQ_LINE gsi %u level %d failed: %s", gsi, level, strerror(errno));
}

static void kvm_irq_send_msi(void *opaque, uint64_t addr, uint32_t data)
{
    struct accel *a = opaque;
    struct kvm_msi msi = {
        .address_lo = (uint32_t)addr,
        .address_hi = (uint32_t)(addr >> 32),
        .data = data,
    };
    /* 0 means the guest blocked it (e.g. masked by the LAPIC): not an error. */
    if (ioctl(a->vm_fd, KVM_SIGNAL_MSI, &msi) < 0)
        log_warn("kvm: KVM_SIGNAL_MSI addr %#llx data %#x failed: %s", (unsigned long long)addr,
                 data, strerror(errno));
}

static const struct irq_sink *kvm_irq_sink(struct accel *a) { return &a->irq; }

static unsigned kvm_msi_route_gsi(unsigned i) { return LAYOUT_IOAPIC_PINS + i; }

/* Hand KVM the whole table: the irqchip entries, then every MSI route.
 * route_lock held (or the VM not yet shared). */
static int kvm_commit_routes(struct accel *a)
{
    struct kvm_irq_routing *r = a->routing;
    unsigned n = a->nr_chip_routes;
    for (unsigned i = 0; i < KVM_MAX_MSI_ROUTES; i++) {
        const struct kvm_msi_route *m = &a->msi[i];
        if (!m->used)
            continue;
        r->entries[n++] = (struct kvm_irq_routing_entry){
            .gsi = kvm_msi_route_gsi(i),
            .type = KVM_IRQ_ROUTING_MSI,
            .u.msi = {.address_lo = (uint32_t)m->addr, .address_hi = (uint32_t)(m->addr >> 32),
                      .data = m->data},
        };
    }
    r->nr = n;
    r->flags = 0;
    if (ioctl(a->vm_fd, KVM_SET_GSI_ROUTING, r) < 0)
        return log_fail(-errno, "kvm: KVM_SET_GSI_ROUTING failed: %s", strerror(errno));
    return 0;
}

static int kvm_irqfd(struct accel *a, int fd, unsigned gsi, bool assign)
{
    struct kvm_irqfd req = {.fd = (uint32_t)fd, .gsi = gsi,
                            .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN};
    if (ioctl(a->vm_fd, KVM_IRQFD, &req) < 0)
        return -errno;
    return 0;
}

/* Bind fd to the MSI (addr, data): a route on a GSI of its own, and an
 * irqfd on that GSI. */
static int kvm_msi_route_add(void *opaque, uint64_t addr, uint32_t data, int fd)
{
    struct accel *a = opaque;
    if (!a->has_irqfd)
        return -EOPNOTSUPP;
    pthread_mutex_lock(&a->route_lock);
    int ret = -ENOSPC;
    unsigned i = 0;
    for (; i < KVM_MAX_MSI_ROUTES && kvm_msi_route_gsi(i) < a->max_routes; i++) {
        if (!a->msi[i].used)
            break;
    }
    if (i < KVM_MAX_MSI_ROUTES && kvm_msi_route_gsi(i) < a->max_routes) {
        a->msi[i] = (struct kvm_msi_route){.used = true, .fd = fd, .addr = addr, .data = data};
        ret = kvm_commit_routes(a);
        if (!ret)
            ret = kvm_irqfd(a, fd, kvm_msi_route_gsi(i), true);
        if (ret) {
            a->msi[i].used = false;
            kvm_commit_routes(a);
        } else {
            ret = (int)i;
            log_debug("kvm: irqfd %d -> GSI %u (MSI %#llx/%#x)", fd, kvm_msi_route_gsi(i),
                      (unsigned long long)addr, data);
        }
    }
    pthread_mutex_unlock(&a->route_lock);
    return ret;
}

static int kvm_msi_route_update(void *opaque, int route, uint64_t addr, uint32_t data)
{
    struct accel *a = opaque;
    if (route < 0 || route >= KVM_MAX_MSI_ROUTES)
        return -EINVAL;
    pthread_mutex_lock(&a->route_lock);
    int ret = -EINVAL;
    struct kvm_msi_route *m = &a->msi[route];
    if (m->used) {
        uint64_t old_addr = m->addr;
        uint32_t old_data = m->data;
        m->addr = addr;
        m->data = data;
        ret = kvm_commit_routes(a);
        if (ret) {
            m->addr = old_addr;
            m->data = old_data;
        }
    }
    pthread_mutex_unlock(&a->route_lock);
    return ret;
}

static void kvm_msi_route_del(void *opaque, int route)
{
    struct accel *a = opaque;
    if (route < 0 || route >= KVM_MAX_MSI_ROUTES)
        return;
    pthread_mutex_lock(&a->route_lock);
    struct kvm_msi_route *m = &a->msi[route];
    if (m->used) {
        int err = kvm_irqfd(a, m->fd, kvm_msi_route_gsi((unsigned)route), false);
        if (err)
            log_warn("kvm: removing irqfd from GSI %u failed: %s",
                     kvm_msi_route_gsi((unsigned)route), strerror(-err));
        m->used = false;
        kvm_commit_routes(a);
    }
    pthread_mutex_unlock(&a->route_lock);
}

/* The PC's GSI routing, as QEMU sets it up and as our MP/ACPI tables describe:
 * ISA IRQ 0 (the PIT) reaches IOAPIC pin 2 (interrupt source override),
 * IRQs 1-15 reach the same-numbered PIC input and IOAPIC pin, 16-23 the
 * IOAPIC only. GSI 2 is the PIC cascade and is not routed. KVM's built-in
 * default would send IRQ 0 to IOAPIC pin 0, contradicting the tables. */
static int kvm_setup_gsi_routing(struct accel *a)
{
    const unsigned max_entries = 16 + LAYOUT_IOAPIC_PINS + KVM_MAX_MSI_ROUTES;
    struct kvm_irq_routing *r =
        xzalloc(sizeof(*r) + max_entries * sizeof(struct kvm_irq_routing_entry));
    a->routing = r;
    unsigned n = 0;
    for (unsigned gsi = 0; gsi < 16; gsi++) {
        if (gsi == 2)
            continue;
        struct kvm_irq_routing_entry *e = &r->entries[n++];
        e->gsi = gsi;
        e->type = KVM_IRQ_ROUTING_IRQCHIP;
        e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        e->u.irqchip.pin = gsi % 8;
    }
    for (unsigned gsi = 0; gsi < LAYOUT_IOAPIC_PINS; gsi++) {
        if (gsi == 2)
            continue;
        struct kvm_irq_routing_entry *e = &r->entries[n++];
        e->gsi = gsi;
        e->type = KVM_IRQ_ROUTING_IRQCHIP;
        e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e->u.irqchip.pin = gsi == 0 ? 2 : gsi;
    }
    a->nr_chip_routes = n;
    return kvm_commit_routes(a);
}

/* --- VM ----------------------------------------------------------------- */

static int kvm_vm_ioctl_checked(struct accel *a, unsigned long req, const void *arg,
                                const char *what)
{
    if (ioctl(a->vm_fd, req, arg) < 0)
        return log_fail(-errno, "kvm: %s failed: %s", what, strerror(errno));
    return 0;
}

/* Leave the 8259s as a PC BIOS does before booting: initialized with the
 * usual vector bases (0x08, 0x70) and every input masked but the cascade.
 * Straight out of KVM_CREATE_IRQCHIP they would deliver IRQ n as vector n,
 * i.e. as a CPU exception, to a guest that enables interrupts first. */
static int kvm_init_pic_like_firmware(struct accel *a)
{
    static const struct {
        unsigned chip;
        uint8_t base, imr;
    } pics[] = {
        {KVM_IRQCHIP_PIC_MASTER, 0x08, 0xfb},
        {KVM_IRQCHIP_PIC_SLAVE, 0x70, 0xff},
    };
    for (size_t i = 0; i < ARRAY_SIZE(pics); i++) {
        struct kvm_irqchip chip = {.chip_id = pics[i].chip};
        if (ioctl(a->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
            return log_fail(-errno, "kvm: KVM_GET_IRQCHIP failed: %s", strerror(errno));
        struct kvm_pic_state *pic = &chip.chip.pic;
        pic->irq_base = pics[i].base;
        pic->imr = pics[i].imr;
        pic->init4 = 1;
        pic->init_state = 0;
        if (ioctl(a->vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
            return log_fail(-errno, "kvm: KVM_SET_IRQCHIP failed: %s", strerror(errno));
    }
    return 0;
}

static int kvm_create_irqchip(struct accel *a)
{
    int ret;
    if (ioctl(a->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
        return log_fail(-errno, "kvm: KVM_SET_TSS_ADDR failed: %s", strerror(errno));
    if (ioctl(a->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
        uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
        ret = kvm_vm_ioctl_checked(a, KVM_SET_IDENTITY_MAP_ADDR, &idmap,
                                   "KVM_SET_IDENTITY_MAP_ADDR");
        if (ret)
            return ret;
    }
    if (ioctl(a->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return log_fail(-errno, "kvm: KVM_CREATE_IRQCHIP failed: %s", strerror(errno));
    ret = kvm_setup_gsi_routing(a);
    if (!ret)
        ret = kvm_init_pic_like_firmware(a);
    if (ret)
        return ret;
    /* The speaker port 0x61 is then handled in the kernel too. */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    return kvm_vm_ioctl_checked(a, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
}

static int kvm_fetch_supported_cpuid(struct accel *a)
{
    for (unsigned nent = 128; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *c = xzalloc(sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
        c->nent = nent;
        if (ioctl(a->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            a->cpuid = c;
            return 0;
        }
        int err = errno;
        free(c);
        if (err != E2BIG)
            return log_fail(-err, "kvm: KVM_GET_SUPPORTED_CPUID failed: %s", strerror(err));
    }
    return log_fail(-E2BIG, "kvm: KVM_GET_SUPPORTED_CPUID returned too many entries");
}

static void kvm_destroy(struct accel *a)
{
    if (!a)
        return;
    if (a->vm_fd >= 0)
        close(a->vm_fd);
    if (a->kvm_fd >= 0)
        close(a->kvm_fd);
    free(a->cpuid);
    free(a->routing);
    pthread_mutex_destroy(&a->route_lock);
    free(a);
}

static int kvm_create(const struct accel_config *cfg, struct accel **out)
{
    const char *why = NULL;
    struct accel *a = xzalloc(sizeof(*a));
    a->vm_fd = -1;
    a->cfg = *cfg;
    a->irq = (struct irq_sink){.opaque = a, .set_level = kvm_irq_set_level,
                               .send_msi = kvm_irq_send_msi,
                               .msi_route_add = kvm_msi_route_add,
                               .msi_route_update = kvm_msi_route_update,
                               .msi_route_del = kvm_msi_route_del};
    pthread_mutex_init(&a->route_lock, NULL);
    int ret;
    a->kvm_fd = kvm_open_dev(&why);
    if (a->kvm_fd < 0) {
        ret = log_fail(-ENODEV, "kvm: %s", why);
        goto fail;
    }
    if (!kvm_check_api(a->kvm_fd, &why)) {
        ret = log_fail(-ENODEV, "kvm: %s", why);
        goto fail;
    }
    int max_vcpus = ioctl(a->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max_vcpus <= 0)
        max_vcpus = ioctl(a->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    if (max_vcpus > 0 && cfg->nr_vcpus > (unsigned)max_vcpus) {
        ret = log_fail(-EINVAL, "kvm: -smp %u exceeds this host's limit of %d vCPUs",
                       cfg->nr_vcpus, max_vcpus);
        goto fail;
    }
    /* irqfds for MSI-X need both; without them MSIs go through KVM_SIGNAL_MSI. */
    int max_routes = ioctl(a->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);
    a->max_routes = max_routes > 0 ? (unsigned)max_routes : 0;
    a->has_irqfd = ioctl(a->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) > 0 &&
                   a->max_routes > LAYOUT_IOAPIC_PINS;
    a->run_size = ioctl(a->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (a->run_size < (int)sizeof(struct kvm_run)) {
        ret = log_fail(-EIO, "kvm: KVM_GET_VCPU_MMAP_SIZE returned %d", a->run_size);
        goto fail;
    }
    a->vm_fd = ioctl(a->kvm_fd, KVM_CREATE_VM, 0);
    if (a->vm_fd < 0) {
        ret = log_fail(-errno, "kvm: KVM_CREATE_VM failed: %s", strerror(errno));
        goto fail;
    }
    ret = kvm_create_irqchip(a);
    if (ret)
        goto fail;
    ret = kvm_fetch_supported_cpuid(a);
    if (ret)
        goto fail;
    *out = a;
    return 0;
fail:
    kvm_destroy(a);
    return ret;
}

static int kvm_map_ram(struct accel *a, uint64_t gpa, uint64_t size, void *host)
{
    struct kvm_userspace_memory_region region = {
        .slot = a->nr_slots,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uintptr_t)host,
    };
    if (ioctl(a->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return log_fail(-errno, "kvm: mapping guest RAM [%#llx, +%#llx) failed: %s",
                        (unsigned long long)gpa, (unsigned long long)size, strerror(errno));
    a->nr_slots++;
    return 0;
}

static int kvm_ioeventfd(struct accel *a, bool pio, uint64_t addr, unsigned len, int fd,
                         bool assign)
{
    struct kvm_ioeventfd ioev = {
        .addr = addr,
        .len = len,
        .fd = fd,
        .flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };
    if (ioctl(a->vm_fd, KVM_IOEVENTFD, &ioev) < 0)
        return log_fail(-errno, "kvm: %s ioeventfd at %s %#llx len %u failed: %s",
                        assign ? "adding" : "removing", pio ? "port" : "address",
                        (unsigned long long)addr, len, strerror(errno));
    return 0;
}

static int kvm_add_ioeventfd(struct accel *a, bool pio, uint64_t addr, unsigned len, int fd)
{
    return kvm_ioeventfd(a, pio, addr, len, fd, true);
}

static int kvm_del_ioeventfd(struct accel *a, bool pio, uint64_t addr, unsigned len, int fd)
{
    return kvm_ioeventfd(a, pio, addr, len, fd, false);
}

const struct accel_ops accel_kvm_ops = {
    .name = "kvm",
    .available = kvm_available,
    .runs_stock_kernels = kvm_runs_stock_kernels,
    .create = kvm_create,
    .destroy = kvm_destroy,
    .map_ram = kvm_map_ram,
    .irq_sink = kvm_irq_sink,
    .vcpu_create = kvm_vcpu_create,
    .vcpu_destroy = kvm_vcpu_destroy,
    .vcpu_set_state = kvm_vcpu_set_state,
    .vcpu_get_state = kvm_vcpu_get_state,
    .vcpu_run = kvm_vcpu_run,
    .vcpu_kick = kvm_vcpu_kick,
    .vcpu_dump = kvm_vcpu_dump,
    .add_ioeventfd = kvm_add_ioeventfd,
    .del_ioeventfd = kvm_del_ioeventfd,
};
