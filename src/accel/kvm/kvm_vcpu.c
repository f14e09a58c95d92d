/* KVM vCPUs: creation (CPUID, MSRs, LAPIC wiring), register state
 * translation, the KVM_RUN loop with port/MMIO dispatch, kicks and crash
 * dumps.
 *
 * Kicking: a kicker sets kvm_run->immediate_exit (covers a vCPU about to
 * enter KVM_RUN) and then sends SIGUSR1 to the vCPU thread (covers one
 * already inside). The handler is empty and installed without SA_RESTART,
 * so KVM_RUN returns -EINTR; the loop clears immediate_exit and re-checks
 * the stop flag. Kicks take a per-vCPU lock so no signal is ever sent to a
 * thread that has left vcpu_run(). */
#include "accel/kvm/kvm_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define KVM_KICK_SIGNAL SIGUSR1

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_FAST_STRING (1ULL << 0)

#define APIC_REG_LVT_LINT0 0x350
#define APIC_REG_LVT_LINT1 0x360
#define APIC_DM_NMI 0x400
#define APIC_DM_EXTINT 0x700

#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT (1u << 28)

/* --- CPU topology and CPUID --------------------------------------------- */

struct cpu_topology {
    unsigned threads, cores, sockets;
    unsigned smt_bits, core_bits; /* APIC-ID field widths */
};

static unsigned bits_for(unsigned count)
{
    unsigned bits = 0;
    while ((1u << bits) < count)
        bits++;
    return bits;
}

static struct cpu_topology kvm_topology(const struct accel_config *cfg)
{
    struct cpu_topology t = {
        .threads = cfg->threads ? cfg->threads : 1,
        .sockets = cfg->sockets ? cfg->sockets : 1,
    };
    t.cores = cfg->cores ? cfg->cores : (cfg->nr_vcpus + t.threads - 1) / t.threads;
    if (!t.cores)
        t.cores = 1;
    t.smt_bits = bits_for(t.threads);
    t.core_bits = bits_for(t.cores);
    return t;
}

/* Leaf 4: deterministic cache parameters: who shares each cache. */
static void cpuid_fix_cache_leaf(struct kvm_cpuid_entry2 *e, const struct cpu_topology *t)
{
    if ((e->eax & 0x1f) == 0) /* no more caches */
        return;
    unsigned level = (e->eax >> 5) & 7;
    unsigned sharing = level >= 3 ? t->cores * t->threads : t->threads;
    e->eax &= 0x3fff;
    e->eax |= ((sharing - 1) & 0xfff) << 14;
    e->eax |= ((t->cores - 1) & 0x3f) << 26;
}

/* Leaves 0xB / 0x1F: x2APIC topology, one SMT level and one core level. */
static void cpuid_fix_x2apic_leaf(struct kvm_cpuid_entry2 *e, const struct cpu_topology *t,
                                  unsigned apic_id)
{
    e->edx = apic_id;
    switch (e->index) {
    case 0:
        e->eax = t->smt_bits;
        e->ebx = t->threads;
        e->ecx = 0 | (1u << 8);
        break;
    case 1:
        e->eax = t->smt_bits + t->core_bits;
        e->ebx = t->cores * t->threads;
        e->ecx = 1 | (2u << 8);
        break;
    default:
        e->eax = 0;
        e->ebx = 0;
        e->ecx = e->index & 0xff;
        break;
    }
}

static uint32_t *cpuid_reg(struct kvm_cpuid_entry2 *e, unsigned reg)
{
    switch (reg) {
    case 0: return &e->eax;
    case 1: return &e->ebx;
    case 2: return &e->ecx;
    default: return &e->edx;
    }
}

/* -cpu host,+feat,-feat: force bits in the leaves KVM reported. */
static void cpuid_apply_overrides(struct kvm_cpuid2 *c, const struct accel_config *cfg)
{
    for (unsigned i = 0; i < cfg->nr_cpuid_overrides; i++) {
        const struct cpuid_override *o = &cfg->cpuid_overrides[i];
        for (unsigned j = 0; j < c->nent; j++) {
            struct kvm_cpuid_entry2 *e = &c->entries[j];
            if (e->function != o->leaf ||
                ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != o->subleaf))
                continue;
            uint32_t *r = cpuid_reg(e, o->reg);
            if (o->set)
                *r |= 1u << o->bit;
            else
                *r &= ~(1u << o->bit);
            log_debug("kvm: CPUID %#x.%u reg %u bit %u %s -> %#x", o->leaf, e->index, o->reg,
                      o->bit, o->set ? "on" : "off", *r);
        }
    }
}

static struct kvm_cpuid2 *kvm_build_cpuid(const struct accel *a, unsigned index)
{
    const struct kvm_cpuid2 *sup = a->cpuid;
    size_t bytes = sizeof(*sup) + sup->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = xmalloc(bytes);
    memcpy(c, sup, bytes);

    struct cpu_topology t = kvm_topology(&a->cfg);
    unsigned per_package = t.cores * t.threads;
    unsigned apic_id = index; /* KVM's LAPIC ID is the vCPU id; MADT/MP table agree */

    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            e->ecx |= CPUID_1_ECX_HYPERVISOR;
            e->ebx = (e->ebx & 0xffff) | (MIN(per_package, 255u) << 16) | (apic_id << 24);
            if (per_package > 1)
                e->edx |= CPUID_1_EDX_HTT;
            break;
        case 4:
            cpuid_fix_cache_leaf(e, &t);
            break;
        case 0xb:
        case 0x1f:
            cpuid_fix_x2apic_leaf(e, &t, apic_id);
            break;
        case 0x40000000:
            e->eax = 0x40000001; /* highest paravirt leaf */
            memcpy(&e->ebx, "KVMK", 4);
            memcpy(&e->ecx, "VMKV", 4);
            memcpy(&e->edx, "M\0\0\0", 4);
            break;
        case 0x8000001e:
            /* AMD TOPOEXT: extended APIC ID, core ID and threads per core, one node. */
            e->eax = apic_id;
            e->ebx = ((apic_id >> t.smt_bits) & ((1u << t.core_bits) - 1) & 0xff) |
                     (((t.threads - 1) & 0xff) << 8);
            e->ecx = 0;
            break;
        case 0x80000008:
            /* AMD: APIC ID size and threads per package. */
            e->ecx = (e->ecx & ~0xf0ffu) | ((t.smt_bits + t.core_bits) << 12) |
                     ((per_package - 1) & 0xff);
            break;
        default:
            break;
        }
    }
    cpuid_apply_overrides(c, &a->cfg);
    return c;
}

/* --- vCPU creation ------------------------------------------------------ */

static int vcpu_ioctl(struct vcpu *v, unsigned long req, void *arg, const char *what)
{
    if (ioctl(v->fd, req, arg) < 0)
        return log_fail(-errno, "kvm: vCPU %u: %s failed: %s", v->index, what, strerror(errno));
    return 0;
}

static int kvm_vcpu_set_msrs(struct vcpu *v)
{
    struct kvm_msrs *msrs = xzalloc(sizeof(*msrs) + sizeof(struct kvm_msr_entry));
    msrs->nmsrs = 1;
    msrs->entries[0] = (struct kvm_msr_entry){.index = MSR_IA32_MISC_ENABLE,
                                              .data = MISC_ENABLE_FAST_STRING};
    int n = ioctl(v->fd, KVM_SET_MSRS, msrs);
    free(msrs);
    /* Not fatal: a guest runs without fast strings, just slower. */
    if (n != 1)
        log_debug("kvm: vCPU %u: setting IA32_MISC_ENABLE failed", v->index);
    return 0;
}

/* Like firmware on a PC: the BSP's LINT0 takes 8259 ExtINT, LINT1 NMI. */
static int kvm_vcpu_wire_bsp_lapic(struct vcpu *v)
{
    struct kvm_lapic_state lapic;
    int ret = vcpu_ioctl(v, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
    if (ret)
        return ret;
    st32(&lapic.regs[APIC_REG_LVT_LINT0], APIC_DM_EXTINT);
    st32(&lapic.regs[APIC_REG_LVT_LINT1], APIC_DM_NMI);
    ret = vcpu_ioctl(v, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
    if (ret)
        return ret;
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
    return vcpu_ioctl(v, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");
}

void kvm_vcpu_destroy(struct vcpu *v)
{
    if (!v)
        return;
    if (v->run && v->run != MAP_FAILED)
        munmap(v->run, v->acc->run_size);
    if (v->fd >= 0)
        close(v->fd);
    pthread_mutex_destroy(&v->kick_lock);
    free(v);
}

int kvm_vcpu_create(struct accel *a, unsigned index, struct vcpu **out)
{
    struct vcpu *v = xzalloc(sizeof(*v));
    v->acc = a;
    v->index = index;
    pthread_mutex_init(&v->kick_lock, NULL);
    int ret;
    v->fd = ioctl(a->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (v->fd < 0) {
        ret = log_fail(-errno, "kvm: KVM_CREATE_VCPU %u failed: %s", index, strerror(errno));
        goto fail;
    }
    v->run = mmap(NULL, a->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        ret = log_fail(-errno, "kvm: vCPU %u: mapping kvm_run failed: %s", index, strerror(errno));
        goto fail;
    }
    struct kvm_cpuid2 *cpuid = kvm_build_cpuid(a, index);
    ret = vcpu_ioctl(v, KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2");
    free(cpuid);
    if (ret)
        goto fail;
    kvm_vcpu_set_msrs(v);
    if (index == 0) {
        ret = kvm_vcpu_wire_bsp_lapic(v);
        if (ret)
            goto fail;
    }
    *out = v;
    return 0;
fail:
    kvm_vcpu_destroy(v);
    return ret;
}

/* --- register state ----------------------------------------------------- */

static void seg_to_kvm(const struct cpu_segment *s, struct kvm_segment *k)
{
    *k = (struct kvm_segment){
        .base = s->base, .limit = s->limit, .selector = s->selector, .type = s->type,
        .present = s->present, .dpl = s->dpl, .db = s->db, .s = s->s, .l = s->l,
        .g = s->g, .avl = s->avl, .unusable = s->unusable,
    };
}

static void seg_from_kvm(const struct kvm_segment *k, struct cpu_segment *s)
{
    *s = (struct cpu_segment){
        .base = k->base, .limit = k->limit, .selector = k->selector, .type = k->type,
        .present = k->present, .dpl = k->dpl, .db = k->db, .s = k->s, .l = k->l,
        .g = k->g, .avl = k->avl, .unusable = k->unusable,
    };
}

int kvm_vcpu_set_state(struct vcpu *v, const struct cpu_state *s)
{
    struct kvm_sregs sregs;
    /* Read first: apic_base and the pending-interrupt bitmap stay as they are. */
    int ret = vcpu_ioctl(v, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    if (ret)
        return ret;
    seg_to_kvm(&s->cs, &sregs.cs);
    seg_to_kvm(&s->ds, &sregs.ds);
    seg_to_kvm(&s->es, &sregs.es);
    seg_to_kvm(&s->fs, &sregs.fs);
    seg_to_kvm(&s->gs, &sregs.gs);
    seg_to_kvm(&s->ss, &sregs.ss);
    seg_to_kvm(&s->tr, &sregs.tr);
    seg_to_kvm(&s->ldt, &sregs.ldt);
    sregs.gdt = (struct kvm_dtable){.base = s->gdt.base, .limit = s->gdt.limit};
    sregs.idt = (struct kvm_dtable){.base = s->idt.base, .limit = s->idt.limit};
    sregs.cr0 = s->cr0;
    sregs.cr2 = s->cr2;
    sregs.cr3 = s->cr3;
    sregs.cr4 = s->cr4;
    sregs.cr8 = s->cr8;
    sregs.efer = s->efer;
    ret = vcpu_ioctl(v, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    if (ret)
        return ret;
    struct kvm_regs regs = {
        .rax = s->rax, .rbx = s->rbx, .rcx = s->rcx, .rdx = s->rdx,
        .rsi = s->rsi, .rdi = s->rdi, .rsp = s->rsp, .rbp = s->rbp,
        .r8 = s->r8, .r9 = s->r9, .r10 = s->r10, .r11 = s->r11,
        .r12 = s->r12, .r13 = s->r13, .r14 = s->r14, .r15 = s->r15,
        .rip = s->rip, .rflags = s->rflags | 2, /* bit 1 is always set */
    };
    return vcpu_ioctl(v, KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

int kvm_vcpu_get_state(struct vcpu *v, struct cpu_state *s)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    int ret = vcpu_ioctl(v, KVM_GET_REGS, &regs, "KVM_GET_REGS");
    if (!ret)
        ret = vcpu_ioctl(v, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    if (ret)
        return ret;
    *s = (struct cpu_state){
        .rax = regs.rax, .rbx = regs.rbx, .rcx = regs.rcx, .rdx = regs.rdx,
        .rsi = regs.rsi, .rdi = regs.rdi, .rsp = regs.rsp, .rbp = regs.rbp,
        .r8 = regs.r8, .r9 = regs.r9, .r10 = regs.r10, .r11 = regs.r11,
        .r12 = regs.r12, .r13 = regs.r13, .r14 = regs.r14, .r15 = regs.r15,
        .rip = regs.rip, .rflags = regs.rflags,
        .gdt = {.base = sregs.gdt.base, .limit = sregs.gdt.limit},
        .idt = {.base = sregs.idt.base, .limit = sregs.idt.limit},
        .cr0 = sregs.cr0, .cr2 = sregs.cr2, .cr3 = sregs.cr3, .cr4 = sregs.cr4,
        .cr8 = sregs.cr8, .efer = sregs.efer,
    };
    seg_from_kvm(&sregs.cs, &s->cs);
    seg_from_kvm(&sregs.ds, &s->ds);
    seg_from_kvm(&sregs.es, &s->es);
    seg_from_kvm(&sregs.fs, &s->fs);
    seg_from_kvm(&sregs.gs, &s->gs);
    seg_from_kvm(&sregs.ss, &s->ss);
    seg_from_kvm(&sregs.tr, &s->tr);
    seg_from_kvm(&sregs.ldt, &s->ldt);
    return 0;
}

/* --- run loop ----------------------------------------------------------- */

static void kvm_kick_handler(int sig) { (void)sig; }

static void kvm_install_kick_handler(void)
{
    struct sigaction sa = {.sa_handler = kvm_kick_handler}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(KVM_KICK_SIGNAL, &sa, NULL);
}

static pthread_once_t kick_handler_once = PTHREAD_ONCE_INIT;

/* Port I/O exit; string instructions (rep ins/outs) come as count > 1. */
static void kvm_handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    unsigned size = run->io.size;
    uint64_t total = (uint64_t)run->io.count * size;
    if ((size != 1 && size != 2 && size != 4) || run->io.data_offset > (uint64_t)v->acc->run_size ||
        total > (uint64_t)v->acc->run_size - run->io.data_offset) {
        log_warn("kvm: vCPU %u: malformed I/O exit (port %#x size %u count %u)", v->index,
                 run->io.port, size, run->io.count);
        return;
    }
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    for (uint32_t i = 0; i < run->io.count; i++, data += size) {
        if (run->io.direction == KVM_EXIT_IO_OUT)
            bus_write(v->acc->cfg.pio, run->io.port, data, size);
        else
            bus_read(v->acc->cfg.pio, run->io.port, data, size);
    }
}

static void kvm_handle_mmio(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    unsigned len = run->mmio.len;
    if (len == 0 || len > sizeof(run->mmio.data)) {
        log_warn("kvm: vCPU %u: malformed MMIO exit (addr %#llx len %u)", v->index,
                 (unsigned long long)run->mmio.phys_addr, len);
        return;
    }
    if (run->mmio.is_write)
        bus_write(v->acc->cfg.mmio, run->mmio.phys_addr, run->mmio.data, len);
    else
        bus_read(v->acc->cfg.mmio, run->mmio.phys_addr, run->mmio.data, len);
}

static void kvm_report_internal_error(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    char data[256] = "";
    size_t off = 0;
    unsigned n = MIN(run->internal.ndata, (uint32_t)ARRAY_SIZE(run->internal.data));
    for (unsigned i = 0; i < n && off < sizeof(data); i++)
        off += snprintf(data + off, sizeof(data) - off, " %#llx",
                        (unsigned long long)run->internal.data[i]);
    const char *what = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                           ? " (instruction emulation failed)"
                           : "";
    log_error("kvm: vCPU %u: internal error, suberror %u%s%s%s", v->index,
              run->internal.suberror, what, n ? ", data:" : "", data);
}

/* Returns -1 to keep running, or the vcpu_exit to return. */
static int kvm_handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        kvm_handle_io(v);
        return -1;
    case KVM_EXIT_MMIO:
        kvm_handle_mmio(v);
        return -1;
    case KVM_EXIT_HLT: /* not expected with the in-kernel LAPIC */
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        return -1;
    case KVM_EXIT_SHUTDOWN:
        return VCPU_EXIT_SHUTDOWN;
    case KVM_EXIT_SYSTEM_EVENT:
        log_error("kvm: vCPU %u: system event %u", v->index, run->system_event.type);
        return VCPU_EXIT_SHUTDOWN;
    case KVM_EXIT_INTERNAL_ERROR:
        kvm_report_internal_error(v);
        return VCPU_EXIT_INTERNAL_ERROR;
    case KVM_EXIT_FAIL_ENTRY:
        log_error("kvm: vCPU %u: VM entry failed, hardware reason %#llx", v->index,
                  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return VCPU_EXIT_INTERNAL_ERROR;
    default:
        log_error("kvm: vCPU %u: unhandled exit reason %u", v->index, run->exit_reason);
        return VCPU_EXIT_INTERNAL_ERROR;
    }
}

static void kvm_vcpu_set_running(struct vcpu *v, bool running)
{
    pthread_mutex_lock(&v->kick_lock);
    if (running)
        v->thread = pthread_self();
    atomic_store(&v->running, running);
    pthread_mutex_unlock(&v->kick_lock);
}

enum vcpu_exit kvm_vcpu_run(struct vcpu *v)
{
    pthread_once(&kick_handler_once, kvm_install_kick_handler);
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, KVM_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    kvm_vcpu_set_running(v, true);

    int why;
    for (;;) {
        if (atomic_load(v->acc->cfg.stop)) {
            why = VCPU_EXIT_STOPPED;
            break;
        }
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                continue;
            }
            log_error("kvm: vCPU %u: KVM_RUN failed: %s", v->index, strerror(errno));
            why = VCPU_EXIT_FAILED;
            break;
        }
        why = kvm_handle_exit(v);
        if (why >= 0)
            break;
    }
    kvm_vcpu_set_running(v, false);
    return (enum vcpu_exit)why;
}

void kvm_vcpu_kick(struct vcpu *v)
{
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&v->kick_lock);
    if (atomic_load(&v->running))
        pthread_kill(v->thread, KVM_KICK_SIGNAL);
    pthread_mutex_unlock(&v->kick_lock);
}

/* --- crash dump --------------------------------------------------------- */

static void dump_segment(FILE *out, const char *name, const struct kvm_segment *s)
{
    fprintf(out, "%-3s %04x base=%016llx limit=%08x type=%x s=%u dpl=%u p=%u l=%u db=%u g=%u%s\n",
            name, s->selector, (unsigned long long)s->base, s->limit, s->type, s->s, s->dpl,
            s->present, s->l, s->db, s->g, s->unusable ? " unusable" : "");
}

static void dump_code_bytes(struct vcpu *v, FILE *out, const struct kvm_regs *r,
                            const struct kvm_sregs *sr)
{
    uint64_t linear = sr->cs.base + ((sr->efer & (1u << 10)) && sr->cs.l ? r->rip
                                                                         : (uint32_t)r->rip);
    struct kvm_translation tr = {.linear_address = linear};
    if (ioctl(v->fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid) {
        fprintf(out, "code: rip %#llx is not mapped\n", (unsigned long long)linear);
        return;
    }
    /* Up to 16 bytes, stopping at the end of the page so we stay in one mapping. */
    unsigned len = MIN(16u, 4096u - (unsigned)(tr.physical_address & 4095));
    const uint8_t *code = guest_mem_ptr(v->acc->cfg.mem, tr.physical_address, len);
    if (!code) {
        fprintf(out, "code: rip %#llx (phys %#llx) is not in RAM\n", (unsigned long long)linear,
                (unsigned long long)tr.physical_address);
        return;
    }
    fprintf(out, "code at phys %#llx:", (unsigned long long)tr.physical_address);
    for (unsigned i = 0; i < len; i++)
        fprintf(out, " %02x", code[i]);
    fprintf(out, "\n");
}

void kvm_vcpu_dump(struct vcpu *v, FILE *out)
{
    struct kvm_regs r;
    struct kvm_sregs sr;
    if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sr) < 0) {
        fprintf(out, "vCPU %u: registers unavailable: %s\n", v->index, strerror(errno));
        return;
    }
    fprintf(out, "vCPU %u registers:\n", v->index);
    fprintf(out, "rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n", r.rax, r.rbx, r.rcx, r.rdx);
    fprintf(out, "rsi=%016llx rdi=%016llx rbp=%016llx rsp=%016llx\n", r.rsi, r.rdi, r.rbp, r.rsp);
    fprintf(out, "r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n", r.r8, r.r9, r.r10, r.r11);
    fprintf(out, "r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n", r.r12, r.r13, r.r14, r.r15);
    fprintf(out, "rip=%016llx rflags=%08llx\n", r.rip, r.rflags);
    dump_segment(out, "cs", &sr.cs);
    dump_segment(out, "ds", &sr.ds);
    dump_segment(out, "es", &sr.es);
    dump_segment(out, "fs", &sr.fs);
    dump_segment(out, "gs", &sr.gs);
    dump_segment(out, "ss", &sr.ss);
    dump_segment(out, "tr", &sr.tr);
    dump_segment(out, "ldt", &sr.ldt);
    fprintf(out, "gdt base=%016llx limit=%04x  idt base=%016llx limit=%04x\n", sr.gdt.base,
            sr.gdt.limit, sr.idt.base, sr.idt.limit);
    fprintf(out, "cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx\n", sr.cr0, sr.cr2, sr.cr3,
            sr.cr4);
    fprintf(out, "cr8=%016llx efer=%016llx apic_base=%016llx\n", sr.cr8, sr.efer, sr.apic_base);
    dump_code_bytes(v, out, &r, &sr);
}
