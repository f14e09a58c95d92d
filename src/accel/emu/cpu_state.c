/* The software CPU's life cycle, architectural state in and out (struct
 * cpu_state), register and segment-relative memory helpers, and the run loop
 * with its event checks (interrupts, NMI, HLT, faults, stop). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accel/emu/cpu_internal.h"
#include "core/log.h"

static uint64_t host_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct emu_cpu *emu_cpu_new(struct guest_mem *mem, const struct emu_platform_ops *ops,
                            unsigned apic_id, unsigned nr_cpus)
{
    struct emu_cpu *cpu = calloc(1, sizeof(*cpu));
    if (!cpu)
        return NULL;
    cpu->mem = mem;
    cpu->ops = ops;
    cpu->apic_id = apic_id;
    cpu->nr_cpus = nr_cpus ? nr_cpus : 1;
    cpu->tsc_epoch_ns = host_ns();
    cpu->code_map = code_map_get(mem);
    if (!cpu->code_map || !tb_init(cpu)) {
        emu_cpu_free(cpu);
        return NULL;
    }
    emu_cpu_reset(cpu);
    return cpu;
}

void emu_cpu_free(struct emu_cpu *cpu)
{
    if (!cpu)
        return;
    tb_free(cpu);
    code_map_put(cpu->code_map);
    free(cpu);
}

static void seg_real(struct emu_seg *s, uint16_t sel, uint16_t attr)
{
    s->sel = sel;
    s->base = (uint64_t)sel << 4;
    s->limit = 0xffff;
    s->attr = attr;
}

void emu_cpu_reset(struct emu_cpu *cpu)
{
    tb_flush(cpu); /* memory may have been reloaded behind our back */
    memset(cpu->regs, 0, sizeof(cpu->regs));
    cpu->regs[R_DX] = 0x600; /* family 6 model 0 stepping 0 reset signature */
    cpu->rip = 0xfff0;
    cpu_set_rflags(cpu, 2);
    for (int i = 0; i < 6; i++)
        seg_real(&cpu->seg[i], 0, SA_P | SA_S | 0x3);
    seg_real(&cpu->seg[S_CS], 0xf000, SA_P | SA_S | 0xb);
    cpu->seg[S_CS].base = 0xffff0000;
    cpu->ldtr = (struct emu_seg){.limit = 0xffff, .attr = SA_P | 0x2};
    cpu->tr = (struct emu_seg){.limit = 0xffff, .attr = SA_P | 0xb};
    cpu->gdt_base = cpu->idt_base = 0;
    cpu->gdt_limit = cpu->idt_limit = 0xffff;
    cpu->cr0 = CR0_ET | CR0_CD | CR0_NW;
    cpu->cr2 = cpu->cr3 = cpu->cr4 = cpu->cr8 = 0;
    cpu->efer = 0;
    memset(cpu->dr, 0, sizeof(cpu->dr));
    cpu->dr[6] = 0xffff0ff0;
    cpu->dr[7] = 0x400;
    cpu->star = cpu->lstar = cpu->cstar = cpu->sfmask = cpu->kernel_gs_base = 0;
    cpu->sysenter_cs = cpu->sysenter_esp = cpu->sysenter_eip = 0;
    cpu->pat = 0x0007040600070406ull;
    cpu->misc_enable = 1; /* fast strings */
    cpu->tsc_aux = 0;
    cpu->mtrr_def_type = 0;
    cpu_fpu_reset(cpu);
    cpu->halted = false;
    cpu->nmi_blocked = false;
    cpu->shadow = false;
    cpu->delivering = -1;
    cpu_update_mode(cpu);
    mmu_flush(cpu, true);
}

void emu_cpu_sipi(struct emu_cpu *cpu, uint8_t vector)
{
    emu_cpu_reset(cpu);
    seg_real(&cpu->seg[S_CS], (uint16_t)(vector << 8), SA_P | SA_S | 0xb);
    cpu->rip = 0;
}

static void seg_in(struct emu_seg *d, const struct cpu_segment *s)
{
    d->base = s->base;
    d->limit = s->limit;
    d->sel = s->selector;
    d->attr = (uint16_t)((s->type & 0xf) | (s->s ? SA_S : 0) | ((s->dpl & 3) << 5) |
                         (s->present && !s->unusable ? SA_P : 0) | (s->avl ? SA_AVL : 0) |
                         (s->l ? SA_L : 0) | (s->db ? SA_DB : 0) | (s->g ? SA_G : 0));
}

static void seg_out(struct cpu_segment *d, const struct emu_seg *s)
{
    d->base = s->base;
    d->limit = s->limit;
    d->selector = s->sel;
    d->type = SA_TYPE(s->attr);
    d->s = !!(s->attr & SA_S);
    d->dpl = SA_DPL(s->attr);
    d->present = !!(s->attr & SA_P);
    d->avl = !!(s->attr & SA_AVL);
    d->l = !!(s->attr & SA_L);
    d->db = !!(s->attr & SA_DB);
    d->g = !!(s->attr & SA_G);
    d->unusable = !d->present;
}

void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *s)
{
    static const int order[16] = {R_AX, R_BX, R_CX, R_DX, R_SI, R_DI, R_SP, R_BP,
                                  8, 9, 10, 11, 12, 13, 14, 15};
    const uint64_t *src = &s->rax;
    tb_flush(cpu); /* a new state (restore, tests) may come with new code in RAM */
    for (int i = 0; i < 16; i++)
        cpu->regs[order[i]] = src[i];
    cpu->rip = s->rip;
    cpu_set_rflags(cpu, s->rflags);
    seg_in(&cpu->seg[S_CS], &s->cs);
    seg_in(&cpu->seg[S_DS], &s->ds);
    seg_in(&cpu->seg[S_ES], &s->es);
    seg_in(&cpu->seg[S_FS], &s->fs);
    seg_in(&cpu->seg[S_GS], &s->gs);
    seg_in(&cpu->seg[S_SS], &s->ss);
    seg_in(&cpu->tr, &s->tr);
    seg_in(&cpu->ldtr, &s->ldt);
    cpu->gdt_base = s->gdt.base;
    cpu->gdt_limit = s->gdt.limit;
    cpu->idt_base = s->idt.base;
    cpu->idt_limit = s->idt.limit;
    cpu->cr0 = s->cr0;
    cpu->cr2 = s->cr2;
    cpu->cr3 = s->cr3;
    cpu->cr4 = s->cr4;
    cpu->cr8 = s->cr8;
    cpu->efer = s->efer;
    cpu->halted = false;
    cpu->shadow = false;
    cpu->delivering = -1;
    cpu_update_mode(cpu);
    cpu->cpl = (cpu->cr0 & CR0_PE) ? SA_DPL(cpu->seg[S_SS].attr) : 0;
    if ((cpu->cr0 & CR0_PE) && !(cpu->rflags & F_VM))
        cpu->cpl = cpu->seg[S_CS].sel & 3;
    mmu_flush(cpu, true);
}

void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *s)
{
    static const int order[16] = {R_AX, R_BX, R_CX, R_DX, R_SI, R_DI, R_SP, R_BP,
                                  8, 9, 10, 11, 12, 13, 14, 15};
    uint64_t *dst = &s->rax;
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < 16; i++)
        dst[i] = cpu->regs[order[i]];
    s->rip = cpu->rip;
    s->rflags = cpu_get_rflags(cpu);
    seg_out(&s->cs, &cpu->seg[S_CS]);
    seg_out(&s->ds, &cpu->seg[S_DS]);
    seg_out(&s->es, &cpu->seg[S_ES]);
    seg_out(&s->fs, &cpu->seg[S_FS]);
    seg_out(&s->gs, &cpu->seg[S_GS]);
    seg_out(&s->ss, &cpu->seg[S_SS]);
    seg_out(&s->tr, &cpu->tr);
    seg_out(&s->ldt, &cpu->ldtr);
    s->gdt.base = cpu->gdt_base;
    s->gdt.limit = cpu->gdt_limit;
    s->idt.base = cpu->idt_base;
    s->idt.limit = cpu->idt_limit;
    s->cr0 = cpu->cr0;
    s->cr2 = cpu->cr2;
    s->cr3 = cpu->cr3;
    s->cr4 = cpu->cr4;
    s->cr8 = cpu_read_cr(cpu, 8);
    s->efer = cpu->efer;
}

void emu_cpu_raise_irq_check(struct emu_cpu *cpu)
{
    atomic_store_explicit(&cpu->irq_check, true, memory_order_release);
}

bool emu_cpu_halted(const struct emu_cpu *cpu)
{
    return cpu->halted;
}

bool emu_cpu_interrupts_enabled(const struct emu_cpu *cpu)
{
    return cpu->rflags & F_IF;
}

uint64_t emu_cpu_insn_count(const struct emu_cpu *cpu)
{
    return cpu->insn_count;
}

uint64_t emu_cpu_tsc(struct emu_cpu *cpu)
{
    return host_ns() - cpu->tsc_epoch_ns + cpu->tsc_offset;
}

void emu_cpu_dump(struct emu_cpu *cpu, FILE *out)
{
    static const char *const names[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                          "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
    static const char *const sn[6] = {"es", "cs", "ss", "ds", "fs", "gs"};
    if (cpu->internal_why)
        fprintf(out, "emu cpu %u: internal error: %s\n", cpu->apic_id, cpu->internal_why);
    for (int i = 0; i < 16; i++)
        fprintf(out, "%s=%016llx%s", names[i], (unsigned long long)cpu->regs[i],
                (i % 4 == 3) ? "\n" : " ");
    fprintf(out, "rip=%016llx rflags=%08llx cpl=%u%s\n", (unsigned long long)cpu->rip,
            (unsigned long long)cpu_get_rflags(cpu), cpu->cpl, cpu->halted ? " halted" : "");
    for (int i = 0; i < 6; i++)
        fprintf(out, "%s=%04x base=%016llx limit=%08x attr=%04x\n", sn[i], cpu->seg[i].sel,
                (unsigned long long)cpu->seg[i].base, cpu->seg[i].limit, cpu->seg[i].attr);
    fprintf(out, "tr=%04x base=%016llx ldtr=%04x gdt=%016llx/%04x idt=%016llx/%04x\n", cpu->tr.sel,
            (unsigned long long)cpu->tr.base, cpu->ldtr.sel, (unsigned long long)cpu->gdt_base,
            cpu->gdt_limit, (unsigned long long)cpu->idt_base, cpu->idt_limit);
    fprintf(out, "cr0=%08llx cr2=%016llx cr3=%016llx cr4=%08llx efer=%llx\n",
            (unsigned long long)cpu->cr0, (unsigned long long)cpu->cr2,
            (unsigned long long)cpu->cr3, (unsigned long long)cpu->cr4,
            (unsigned long long)cpu->efer);
    uint8_t code[16];
    fprintf(out, "code at rip:");
    for (int i = 0; i < 16; i++) {
        uint64_t lin = cpu->seg[S_CS].base + cpu->rip + (uint64_t)i;
        /* Best effort without faulting: only with paging off or a TLB hit. */
        const struct tlb_entry *e = &cpu->tlb[(lin >> 12) & (TLB_SIZE - 1)];
        uint8_t *p = NULL;
        if (!(cpu->cr0 & CR0_PG))
            p = guest_mem_ptr(cpu->mem, lin & 0xffffffffu, 1);
        else if (e->vpn == (lin >> 12) + 1 && e->host)
            p = e->host + (lin & 0xfff);
        if (!p)
            break;
        code[i] = *p;
        fprintf(out, " %02x", code[i]);
    }
    fprintf(out, "\n");
}

/* ---- registers and memory operands ---- */

uint64_t cpu_reg_get(struct emu_cpu *cpu, int r, unsigned size, bool rex)
{
    switch (size) {
    case 1:
        if (!rex && r >= 4 && r < 8)
            return (cpu->regs[r - 4] >> 8) & 0xff;
        return cpu->regs[r] & 0xff;
    case 2:
        return cpu->regs[r] & 0xffff;
    case 4:
        return cpu->regs[r] & 0xffffffffu;
    default:
        return cpu->regs[r];
    }
}

void cpu_reg_set(struct emu_cpu *cpu, int r, unsigned size, bool rex, uint64_t v)
{
    switch (size) {
    case 1:
        if (!rex && r >= 4 && r < 8)
            cpu->regs[r - 4] = (cpu->regs[r - 4] & ~0xff00ull) | ((v & 0xff) << 8);
        else
            cpu->regs[r] = (cpu->regs[r] & ~0xffull) | (v & 0xff);
        break;
    case 2:
        cpu->regs[r] = (cpu->regs[r] & ~0xffffull) | (v & 0xffff);
        break;
    case 4:
        cpu->regs[r] = v & 0xffffffffu;
        break;
    default:
        cpu->regs[r] = v;
    }
}

static bool canonical(uint64_t a)
{
    return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

uint64_t cpu_lin(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, enum acc acc)
{
    const struct emu_seg *s = &cpu->seg[seg];
    if (cpu->code64) {
        uint64_t lin = off + ((seg == S_FS || seg == S_GS) ? s->base : 0);
        if (!canonical(lin) || !canonical(lin + size - 1)) {
            if (seg == S_SS)
                cpu_raise(cpu, EXC_SS, true, 0);
            cpu_raise_gp(cpu, 0);
        }
        return lin;
    }
    if (cpu->cr0 & CR0_PE) {
        if (!(s->attr & SA_P))
            cpu_raise(cpu, seg == S_SS ? EXC_SS : EXC_GP, true, 0);
        if (acc == ACC_WRITE && (s->attr & SA_S) && (SA_TYPE(s->attr) & 0xa) != 0x2 &&
            seg != S_CS)
            cpu_raise(cpu, seg == S_SS ? EXC_SS : EXC_GP, true, 0); /* read-only or code */
    }
    /* Limit check for expand-up segments (expand-down ones are rare: unchecked). */
    if (s->limit != 0xffffffffu && !((s->attr & SA_S) && (SA_TYPE(s->attr) & 0xc) == 0x4)) {
        if (off > s->limit || off + size - 1 > s->limit)
            cpu_raise(cpu, seg == S_SS ? EXC_SS : EXC_GP, true, 0);
    }
    return (s->base + off) & 0xffffffffu;
}

uint64_t cpu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size)
{
    uint64_t lin = cpu_lin(cpu, seg, off, size, ACC_READ);
    return mmu_read_lin(cpu, lin, size, ACC_READ, cpu->cpl == 3);
}

void cpu_write(struct emu_cpu *cpu, int seg, uint64_t off, uint64_t val, unsigned size)
{
    uint64_t lin = cpu_lin(cpu, seg, off, size, ACC_WRITE);
    mmu_write_lin(cpu, lin, val, size, cpu->cpl == 3);
}

uint64_t cpu_sys_read(struct emu_cpu *cpu, uint64_t lin, unsigned size)
{
    if (!cpu_long_mode(cpu))
        lin &= 0xffffffffu;
    return mmu_read_lin(cpu, lin, size, ACC_READ, false);
}

void cpu_sys_write(struct emu_cpu *cpu, uint64_t lin, uint64_t val, unsigned size)
{
    if (!cpu_long_mode(cpu))
        lin &= 0xffffffffu;
    mmu_write_lin(cpu, lin, val, size, false);
}

uint64_t cpu_stack_mask(const struct emu_cpu *cpu)
{
    if (cpu->code64)
        return ~0ull;
    return (cpu->seg[S_SS].attr & SA_DB) ? 0xffffffffu : 0xffff;
}

void cpu_push(struct emu_cpu *cpu, uint64_t val, unsigned size)
{
    uint64_t mask = cpu_stack_mask(cpu);
    uint64_t sp = (cpu->regs[R_SP] - size) & mask;
    cpu_write(cpu, S_SS, sp, val, size);
    cpu->regs[R_SP] = (cpu->regs[R_SP] & ~mask) | sp;
}

uint64_t cpu_pop(struct emu_cpu *cpu, unsigned size)
{
    uint64_t mask = cpu_stack_mask(cpu);
    uint64_t sp = cpu->regs[R_SP] & mask;
    uint64_t v = cpu_read(cpu, S_SS, sp, size);
    cpu->regs[R_SP] = (cpu->regs[R_SP] & ~mask) | ((sp + size) & mask);
    return v;
}

/* ---- run loop ---- */

static bool is_contributory(int v)
{
    return v == EXC_DE || v == EXC_TS || v == EXC_NP || v == EXC_SS || v == EXC_GP;
}

/* A fault unwound out of an instruction (or out of an event delivery):
 * restart the instruction and deliver, escalating to #DF / triple fault.
 * Returns false on shutdown. */
static bool handle_fault(struct emu_cpu *cpu)
{
    int first = cpu->delivering, vec = cpu->fault_vec;
    cpu->rip = cpu->insn_rip;
    cpu->insn_count++; /* an exception counts as progress for insn_limit */
    cpu->shadow = false;
    if (first >= 0) {
        if (first == EXC_DF)
            return false;
        if ((is_contributory(first) && is_contributory(vec)) ||
            (first == EXC_PF && (vec == EXC_PF || is_contributory(vec)))) {
            cpu->fault_vec = EXC_DF;
            cpu->fault_has_err = true;
            cpu->fault_err = 0;
        }
    }
    vec = cpu->fault_vec;
    cpu->delivering = vec;
    cpu_deliver(cpu, vec, cpu->fault_has_err, cpu->fault_err, false, cpu->rip);
    cpu->delivering = -1;
    return true;
}

/* Interrupts and NMIs at an instruction boundary. True if one was taken. */
static bool check_events(struct emu_cpu *cpu)
{
    const struct emu_platform_ops *ops = cpu->ops;
    if (cpu->shadow && cpu->shadow_rip == cpu->rip)
        return false;
    cpu->shadow = false;
    if (!atomic_load_explicit(&cpu->irq_check, memory_order_acquire))
        return false;
    if (ops && ops->nmi_ack && !cpu->nmi_blocked && ops->nmi_ack(ops->opaque, cpu)) {
        cpu->halted = false;
        cpu->insn_rip = cpu->rip;
        cpu->delivering = EXC_NMI;
        cpu_deliver(cpu, EXC_NMI, false, 0, false, cpu->rip);
        cpu->delivering = -1;
        cpu->nmi_blocked = true;
        return true;
    }
    if (!(cpu->rflags & F_IF))
        return false; /* keep the flag: checked again once IF=1 */
    atomic_store_explicit(&cpu->irq_check, false, memory_order_relaxed);
    int vec = ops && ops->irq_ack ? ops->irq_ack(ops->opaque, cpu) : -1;
    if (vec < 0 || vec > 255)
        return false;
    cpu->halted = false;
    cpu->insn_rip = cpu->rip;
    cpu->delivering = vec;
    cpu_deliver(cpu, vec, false, 0, false, cpu->rip);
    cpu->delivering = -1;
    return true;
}

/* Instructions the run loop lets run between its checks of *stop and the
 * instruction limit; interrupts are looked at after every block. */
#define SLICE_INSNS 256

/* Runs instructions until an exit; faults longjmp out to emu_cpu_run. */
static enum emu_exit run_slice(struct emu_cpu *cpu, atomic_bool *stop)
{
    for (;;) {
        if (stop && atomic_load_explicit(stop, memory_order_relaxed))
            return EMU_EXIT_STOP;
        if (cpu->insn_limit && cpu->insn_count >= cpu->insn_limit)
            return EMU_EXIT_STOP;
        check_events(cpu);
        if (cpu->halted)
            return EMU_EXIT_HLT;
        uint64_t end = cpu->insn_count + SLICE_INSNS;
        if (cpu->insn_limit && end > cpu->insn_limit)
            end = cpu->insn_limit;
        do {
            if (cpu->rflags & F_TF) {
                /* TF set before the instruction: #DB trap after it. */
                tb_run(cpu, 1);
                cpu->dr[6] |= 1u << 14; /* BS */
                cpu->insn_rip = cpu->rip;
                cpu->delivering = EXC_DB;
                cpu_deliver(cpu, EXC_DB, false, 0, false, cpu->rip);
                cpu->delivering = -1;
                cpu->halted = false;
                break;
            }
            tb_run(cpu, (unsigned)(end - cpu->insn_count));
        } while (cpu->insn_count < end && !cpu->halted && !cpu->shadow &&
                 !atomic_load_explicit(&cpu->irq_check, memory_order_relaxed));
    }
}

enum emu_exit emu_cpu_run(struct emu_cpu *cpu, atomic_bool *stop)
{
    for (;;) {
        if (setjmp(cpu->fault_jmp)) {
            if (cpu->internal_error) {
                cpu->internal_error = false;
                cpu->rip = cpu->insn_rip;
                cpu->delivering = -1;
                log_error("emu cpu %u: internal error at rip %#llx: %s", cpu->apic_id,
                          (unsigned long long)cpu->rip, cpu->internal_why);
                return EMU_EXIT_INTERNAL_ERROR;
            }
            if (!handle_fault(cpu)) {
                cpu->delivering = -1;
                return EMU_EXIT_SHUTDOWN;
            }
            cpu->halted = false;
        }
        return run_slice(cpu, stop);
    }
}
