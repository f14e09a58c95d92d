/* System instructions: descriptor tables (LGDT/LIDT/LLDT/LTR...), control
 * and debug registers, MSRs, CPUID, TSC, SWAPGS, fast system calls, cache
 * and TLB control. */
#include "accel/emu/cpu_internal.h"

static void require_cpl0(struct emu_cpu *cpu)
{
    if (cpu->cpl != 0)
        cpu_raise_gp(cpu, 0);
}

static bool protected_mode(const struct emu_cpu *cpu)
{
    return !cpu_in_real_mode(cpu) && !(cpu->rflags & F_VM);
}

/* ---- control registers ---- */

uint64_t cpu_read_cr(struct emu_cpu *cpu, int n)
{
    switch (n) {
    case 0: return cpu->cr0;
    case 2: return cpu->cr2;
    case 3: return cpu->cr3;
    case 4: return cpu->cr4;
    case 8:
        if (cpu->ops && cpu->ops->get_cr8)
            return cpu->ops->get_cr8(cpu->ops->opaque, cpu) & 0xf;
        return cpu->cr8;
    }
    cpu_raise_ud(cpu);
}

void cpu_write_cr(struct emu_cpu *cpu, int n, uint64_t val)
{
    switch (n) {
    case 0: {
        uint64_t old = cpu->cr0;
        val |= CR0_ET;
        if (val >> 32)
            cpu_raise_gp(cpu, 0);
        if ((val & CR0_PG) && !(val & CR0_PE))
            cpu_raise_gp(cpu, 0);
        if ((val & CR0_NW) && !(val & CR0_CD))
            cpu_raise_gp(cpu, 0);
        if ((val & CR0_PG) && !(old & CR0_PG) && (cpu->efer & EFER_LME)) {
            if (!(cpu->cr4 & CR4_PAE))
                cpu_raise_gp(cpu, 0);
            cpu->efer |= EFER_LMA;
        }
        if (!(val & CR0_PG) && (old & CR0_PG) && (cpu->efer & EFER_LMA)) {
            if (cpu->code64)
                cpu_raise_gp(cpu, 0);
            cpu->efer &= ~(uint64_t)EFER_LMA;
        }
        cpu->cr0 = val;
        if ((old ^ val) & (CR0_PG | CR0_WP | CR0_PE))
            mmu_flush(cpu, true);
        if ((old ^ val) & CR0_PE) {
            if (!(val & CR0_PE))
                cpu->cpl = 0;
        }
        cpu_update_mode(cpu);
        return;
    }
    case 2:
        cpu->cr2 = val;
        return;
    case 3:
        if (cpu_long_mode(cpu) && (val >> 52))
            cpu_raise_gp(cpu, 0);
        cpu->cr3 = cpu_long_mode(cpu) ? val : val & 0xffffffffu;
        mmu_flush(cpu, false);
        return;
    case 4: {
        uint64_t allowed = CR4_VME | CR4_PVI | CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE |
                           CR4_PGE | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if (val & ~allowed)
            cpu_raise_gp(cpu, 0);
        if (cpu_long_mode(cpu) && !(val & CR4_PAE))
            cpu_raise_gp(cpu, 0);
        uint64_t old = cpu->cr4;
        cpu->cr4 = val;
        if ((old ^ val) & (CR4_PGE | CR4_PAE | CR4_PSE))
            mmu_flush(cpu, true);
        return;
    }
    case 8:
        if (val >> 4)
            cpu_raise_gp(cpu, 0);
        cpu->cr8 = val;
        if (cpu->ops && cpu->ops->set_cr8)
            cpu->ops->set_cr8(cpu->ops->opaque, cpu, (uint8_t)val);
        emu_cpu_raise_irq_check(cpu); /* a lower TPR may unmask something */
        return;
    }
    cpu_raise_ud(cpu);
}

/* ---- CPUID: a fixed, documented model ----
 * Vendor "GenuineIntel" family 6 model 15 (so guests take well-trodden
 * paths) with only the features this CPU really implements; hypervisor bit
 * set, hypervisor leaf 0x40000000 says "EmberEmberEm". */
static void put_str(uint32_t *r, const char *s)
{
    for (int i = 0; i < 4; i++)
        r[i] = (uint32_t)s[4 * i] | (uint32_t)s[4 * i + 1] << 8 | (uint32_t)s[4 * i + 2] << 16 |
               (uint32_t)s[4 * i + 3] << 24;
}

void cpu_cpuid(struct emu_cpu *cpu)
{
    uint32_t leaf = (uint32_t)cpu->regs[R_AX], sub = (uint32_t)cpu->regs[R_CX];
    uint32_t a = 0, b = 0, c = 0, d = 0;
    switch (leaf) {
    case 0:
        a = 0xb;
        b = 0x756e6547; /* "Genu" */
        d = 0x49656e69; /* "ineI" */
        c = 0x6c65746e; /* "ntel" */
        break;
    case 1:
        a = 0x000006f1;
        b = (cpu->apic_id << 24) | ((cpu->nr_cpus & 0xff) << 16) | (8 << 8);
        c = (1u << 13) /* CX16 */ | (1u << 31) /* hypervisor */;
        d = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) |
            (1u << 11) | (1u << 13) | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 23) |
            (1u << 24) | (1u << 25) | (1u << 26);
        /* FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH MMX FXSR SSE SSE2 */
        if (cpu->nr_cpus > 1)
            d |= 1u << 28; /* HTT: leaf 1 EBX[23:16] is meaningful */
        break;
    case 0xb: {
        /* x2APIC topology: one thread per core, nr_cpus cores in one package. */
        unsigned shift = 0;
        while ((1u << shift) < cpu->nr_cpus)
            shift++;
        if (sub == 0) {
            a = 0;
            b = 1;
            c = (1u << 8) | sub;
        } else if (sub == 1) {
            a = shift;
            b = cpu->nr_cpus;
            c = (2u << 8) | sub;
        } else {
            c = sub;
        }
        d = cpu->apic_id;
        break;
    }
    case 0x40000000: {
        uint32_t r[4];
        put_str(r, "EmberEmberEm\0\0\0");
        a = 0x40000000;
        b = r[0];
        c = r[1];
        d = r[2];
        break;
    }
    case 0x80000000:
        a = 0x80000008;
        break;
    case 0x80000001:
        c = 1u << 0;                                        /* LAHF/SAHF in 64-bit mode */
        d = (1u << 11) | (1u << 20) | (1u << 27) | (1u << 29); /* SYSCALL NX RDTSCP LM */
        break;
    case 0x80000002: case 0x80000003: case 0x80000004: {
        static const char brand[49] = "Ember software x86-64 CPU";
        uint32_t r[4];
        put_str(r, brand + 16 * (leaf - 0x80000002));
        a = r[0];
        b = r[1];
        c = r[2];
        d = r[3];
        break;
    }
    case 0x80000008:
        a = 0x3028; /* 40 physical, 48 linear address bits */
        break;
    }
    cpu->regs[R_AX] = a;
    cpu->regs[R_BX] = b;
    cpu->regs[R_CX] = c;
    cpu->regs[R_DX] = d;
}

/* ---- MSRs ---- */

enum {
    MSR_TSC = 0x10, MSR_APIC_BASE = 0x1b, MSR_MTRRCAP = 0xfe, MSR_SYSENTER_CS = 0x174,
    MSR_SYSENTER_ESP = 0x175, MSR_SYSENTER_EIP = 0x176, MSR_MCG_CAP = 0x179, MSR_MCG_STATUS = 0x17a,
    MSR_MISC_ENABLE = 0x1a0, MSR_PAT = 0x277, MSR_MTRR_DEF = 0x2ff, MSR_EFER = 0xc0000080,
    MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082, MSR_CSTAR = 0xc0000083,
    MSR_SFMASK = 0xc0000084, MSR_FS_BASE = 0xc0000100, MSR_GS_BASE = 0xc0000101,
    MSR_KERNEL_GS_BASE = 0xc0000102, MSR_TSC_AUX = 0xc0000103,
};

/* MSRs guests poke without checking CPUID first (microcode revision,
 * platform id, feature control, debug control...): read as zero, writes
 * ignored, rather than an early #GP that kills the guest. */
static bool msr_is_inert(uint32_t msr)
{
    switch (msr) {
    case 0x17:  /* PLATFORM_ID */
    case 0x3a:  /* FEATURE_CONTROL */
    case 0x79:  /* BIOS_UPDT_TRIG */
    case 0x8b:  /* BIOS_SIGN_ID / microcode revision */
    case 0xce:  /* PLATFORM_INFO */
    case 0x140: /* MISC_FEATURES_ENABLES */
    case 0x1d9: /* DEBUGCTL */
        return true;
    }
    return false;
}

static bool msr_get(struct emu_cpu *cpu, uint32_t msr, uint64_t *v)
{
    const struct emu_platform_ops *ops = cpu->ops;
    if (ops && ops->rdmsr && ops->rdmsr(ops->opaque, cpu, msr, v))
        return true;
    if (msr_is_inert(msr)) {
        *v = 0;
        return true;
    }
    switch (msr) {
    case MSR_TSC: *v = emu_cpu_tsc(cpu); return true;
    case MSR_APIC_BASE: *v = 0xfee00000u | (1u << 11) | (cpu->apic_id == 0 ? 1u << 8 : 0); return true;
    case MSR_MTRRCAP: case MSR_MCG_CAP: case MSR_MCG_STATUS: *v = 0; return true;
    case MSR_SYSENTER_CS: *v = cpu->sysenter_cs; return true;
    case MSR_SYSENTER_ESP: *v = cpu->sysenter_esp; return true;
    case MSR_SYSENTER_EIP: *v = cpu->sysenter_eip; return true;
    case MSR_MISC_ENABLE: *v = cpu->misc_enable; return true;
    case MSR_PAT: *v = cpu->pat; return true;
    case MSR_MTRR_DEF: *v = cpu->mtrr_def_type; return true;
    case MSR_EFER: *v = cpu->efer; return true;
    case MSR_STAR: *v = cpu->star; return true;
    case MSR_LSTAR: *v = cpu->lstar; return true;
    case MSR_CSTAR: *v = cpu->cstar; return true;
    case MSR_SFMASK: *v = cpu->sfmask; return true;
    case MSR_FS_BASE: *v = cpu->seg[S_FS].base; return true;
    case MSR_GS_BASE: *v = cpu->seg[S_GS].base; return true;
    case MSR_KERNEL_GS_BASE: *v = cpu->kernel_gs_base; return true;
    case MSR_TSC_AUX: *v = cpu->tsc_aux; return true;
    }
    return false;
}

static bool canonical(uint64_t a)
{
    return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

static bool msr_set(struct emu_cpu *cpu, uint32_t msr, uint64_t v)
{
    const struct emu_platform_ops *ops = cpu->ops;
    if (ops && ops->wrmsr && ops->wrmsr(ops->opaque, cpu, msr, v))
        return true;
    switch (msr) {
    case MSR_TSC: cpu->tsc_offset += v - emu_cpu_tsc(cpu); return true;
    case MSR_APIC_BASE: return true; /* platform did not claim it: ignore */
    case MSR_MCG_STATUS: return true;
    case MSR_SYSENTER_CS: cpu->sysenter_cs = v & 0xffff; return true;
    case MSR_SYSENTER_ESP: cpu->sysenter_esp = v; return canonical(v);
    case MSR_SYSENTER_EIP: cpu->sysenter_eip = v; return canonical(v);
    case MSR_MISC_ENABLE: cpu->misc_enable = v; return true;
    case MSR_PAT: cpu->pat = v; return true;
    case MSR_MTRR_DEF: cpu->mtrr_def_type = v; return true;
    case MSR_EFER: {
        uint64_t allowed = EFER_SCE | EFER_LME | EFER_NXE | EFER_LMA;
        if (v & ~allowed)
            return false;
        if ((cpu->cr0 & CR0_PG) && ((v ^ cpu->efer) & EFER_LME))
            return false;
        uint64_t old = cpu->efer;
        cpu->efer = (v & ~(uint64_t)EFER_LMA) | (cpu->efer & EFER_LMA);
        if ((old ^ cpu->efer) & EFER_NXE)
            mmu_flush(cpu, true);
        return true;
    }
    case MSR_STAR: cpu->star = v; return true;
    case MSR_LSTAR: if (!canonical(v)) return false; cpu->lstar = v; return true;
    case MSR_CSTAR: if (!canonical(v)) return false; cpu->cstar = v; return true;
    case MSR_SFMASK: cpu->sfmask = v & 0xffffffffu; return true;
    case MSR_FS_BASE: if (!canonical(v)) return false; cpu->seg[S_FS].base = v; return true;
    case MSR_GS_BASE: if (!canonical(v)) return false; cpu->seg[S_GS].base = v; return true;
    case MSR_KERNEL_GS_BASE: if (!canonical(v)) return false; cpu->kernel_gs_base = v; return true;
    case MSR_TSC_AUX: cpu->tsc_aux = v & 0xffffffffu; return true;
    }
    if (msr_is_inert(msr))
        return true;
    /* MTRR variable/fixed ranges: accept and remember nothing harmful. */
    if ((msr >= 0x200 && msr < 0x210) || msr == 0x250 || msr == 0x258 || msr == 0x259 ||
        (msr >= 0x268 && msr <= 0x26f))
        return true;
    return false;
}

void cpu_rdmsr(struct emu_cpu *cpu)
{
    uint64_t v = 0;
    require_cpl0(cpu);
    uint32_t msr = (uint32_t)cpu->regs[R_CX];
    if ((msr >= 0x200 && msr < 0x210) || msr == 0x250 || msr == 0x258 || msr == 0x259 ||
        (msr >= 0x268 && msr <= 0x26f)) {
        v = 0;
    } else if (!msr_get(cpu, msr, &v)) {
        cpu_raise_gp(cpu, 0);
    }
    cpu->regs[R_AX] = v & 0xffffffffu;
    cpu->regs[R_DX] = v >> 32;
}

void cpu_wrmsr(struct emu_cpu *cpu)
{
    require_cpl0(cpu);
    uint32_t msr = (uint32_t)cpu->regs[R_CX];
    uint64_t v = (cpu->regs[R_AX] & 0xffffffffu) | (cpu->regs[R_DX] << 32);
    if (!msr_set(cpu, msr, v))
        cpu_raise_gp(cpu, 0);
}

/* ---- descriptor table instructions ---- */

static uint64_t mem_operand(struct emu_cpu *cpu, const struct insn *in, int *seg)
{
    if (in->mod == 3)
        cpu_raise_ud(cpu);
    *seg = cpu_ea_seg(in);
    return cpu_ea(cpu, in);
}

static void exec_group7(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned r = in->reg & 7;
    int seg;
    if (in->mod == 3) {
        switch (in->modrm) {
        case 0xf8: /* swapgs */
            if (!cpu->code64)
                cpu_raise_ud(cpu);
            require_cpl0(cpu);
            {
                uint64_t t = cpu->seg[S_GS].base;
                cpu->seg[S_GS].base = cpu->kernel_gs_base;
                cpu->kernel_gs_base = t;
            }
            return;
        case 0xf9: { /* rdtscp */
            if ((cpu->cr4 & CR4_TSD) && cpu->cpl != 0)
                cpu_raise_gp(cpu, 0);
            uint64_t t = emu_cpu_tsc(cpu);
            cpu->regs[R_AX] = t & 0xffffffffu;
            cpu->regs[R_DX] = t >> 32;
            cpu->regs[R_CX] = cpu->tsc_aux & 0xffffffffu;
            return;
        }
        }
        if (r == 4) {
            cpu_reg_set(cpu, in->rm, in->opsize, true, cpu->cr0 & 0xffffffffu);
            return;
        }
        if (r == 6) {
            require_cpl0(cpu);
            uint64_t v = cpu_reg_get(cpu, in->rm, 2, true);
            cpu_write_cr(cpu, 0, (cpu->cr0 & ~0xeull) | (v & 0xf) | (cpu->cr0 & CR0_PE));
            return;
        }
        cpu_raise_ud(cpu);
    }
    uint64_t ea = mem_operand(cpu, in, &seg);
    unsigned bsz = cpu->code64 ? 8 : 4;
    uint64_t amask = size_mask(in->addrsize);
    switch (r) {
    case 0: case 1: { /* sgdt / sidt */
        uint16_t lim = r == 0 ? cpu->gdt_limit : cpu->idt_limit;
        uint64_t base = r == 0 ? cpu->gdt_base : cpu->idt_base;
        cpu_write(cpu, seg, ea, lim, 2);
        cpu_write(cpu, seg, (ea + 2) & amask, base, bsz);
        return;
    }
    case 2: case 3: { /* lgdt / lidt */
        require_cpl0(cpu);
        uint16_t lim = (uint16_t)cpu_read(cpu, seg, ea, 2);
        uint64_t base = cpu_read(cpu, seg, (ea + 2) & amask, bsz);
        if (!cpu->code64 && in->opsize == 2)
            base &= 0xffffff;
        if (cpu->code64 && !canonical(base))
            cpu_raise_gp(cpu, 0);
        if (r == 2) {
            cpu->gdt_base = base;
            cpu->gdt_limit = lim;
        } else {
            cpu->idt_base = base;
            cpu->idt_limit = lim;
        }
        return;
    }
    case 4:
        cpu_write(cpu, seg, ea, cpu->cr0 & 0xffff, 2);
        return;
    case 6: {
        require_cpl0(cpu);
        uint64_t v = cpu_read(cpu, seg, ea, 2);
        cpu_write_cr(cpu, 0, (cpu->cr0 & ~0xeull) | (v & 0xf) | (cpu->cr0 & CR0_PE));
        return;
    }
    case 7:
        require_cpl0(cpu);
        mmu_invlpg(cpu, cpu_lin(cpu, seg, ea, 1, ACC_READ));
        return;
    }
    cpu_raise_ud(cpu);
}

/* LLDT / LTR: system descriptors are 16 bytes in long mode. */
static void load_system_seg(struct emu_cpu *cpu, uint16_t sel, bool tr)
{
    if (!protected_mode(cpu))
        cpu_raise_ud(cpu);
    require_cpl0(cpu);
    if ((sel & ~3) == 0) {
        if (tr)
            cpu_raise_gp(cpu, 0);
        cpu->ldtr.sel = sel;
        cpu->ldtr.attr = 0;
        return;
    }
    if (sel & 4)
        cpu_raise_gp(cpu, sel & 0xfffc);
    uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
    struct emu_seg s;
    cpu_seg_from_desc(&s, sel, desc);
    unsigned type = SA_TYPE(s.attr);
    if ((s.attr & SA_S) || (tr ? (type != 9 && type != 1) : type != 2))
        cpu_raise_gp(cpu, sel & 0xfffc);
    if (!(s.attr & SA_P))
        cpu_raise(cpu, EXC_NP, true, sel & 0xfffc);
    if (cpu_long_mode(cpu)) {
        uint64_t hi = cpu_sys_read(cpu, cpu->gdt_base + (sel & ~7u) + 8, 8);
        s.base |= (hi & 0xffffffffu) << 32;
    }
    if (tr) {
        s.attr |= 2; /* busy */
        cpu_sys_write(cpu, cpu->gdt_base + (sel & ~7u) + 5, (uint8_t)((desc >> 40) | 2), 1);
        cpu->tr = s;
    } else {
        cpu->ldtr = s;
    }
}

static void exec_group6(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned r = in->reg & 7;
    if (!protected_mode(cpu))
        cpu_raise_ud(cpu);
    switch (r) {
    case 0: case 1: { /* sldt / str */
        uint16_t v = r == 0 ? cpu->ldtr.sel : cpu->tr.sel;
        if (in->mod == 3)
            cpu_reg_set(cpu, in->rm, in->opsize, true, v);
        else
            cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), v, 2);
        return;
    }
    case 2: case 3: {
        uint16_t sel = in->mod == 3 ? (uint16_t)cpu->regs[in->rm]
                                    : (uint16_t)cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), 2);
        load_system_seg(cpu, sel, r == 3);
        return;
    }
    case 4: case 5: { /* verr / verw */
        uint16_t sel = in->mod == 3 ? (uint16_t)cpu->regs[in->rm]
                                    : (uint16_t)cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), 2);
        bool ok = false;
        uint64_t limit = (sel & 4) ? cpu->ldtr.limit : cpu->gdt_limit;
        if ((sel & ~3) && (uint32_t)(sel & ~7) + 7 <= limit) {
            uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
            unsigned attr = (unsigned)(desc >> 40) & 0xff, type = attr & 0xf;
            unsigned dpl = SA_DPL(attr);
            bool conforming = (type & 0xc) == 0xc;
            if ((attr & SA_S) && (conforming || (dpl >= cpu->cpl && dpl >= (sel & 3u))))
                ok = r == 4 ? (!(type & 8) || (type & 2)) : ((type & 0xa) == 0x2);
        }
        cpu_flags_materialize(cpu);
        cpu->rflags = (cpu->rflags & ~(uint64_t)F_ZF) | (ok ? F_ZF : 0);
        return;
    }
    }
    cpu_raise_ud(cpu);
}

static void exec_lar_lsl(struct emu_cpu *cpu, const struct insn *in)
{
    if (!protected_mode(cpu))
        cpu_raise_ud(cpu);
    uint16_t sel = in->mod == 3 ? (uint16_t)cpu->regs[in->rm]
                                : (uint16_t)cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), 2);
    bool ok = false;
    uint64_t desc = 0;
    uint64_t limit = (sel & 4) ? cpu->ldtr.limit : cpu->gdt_limit;
    if ((sel & ~3) && (uint32_t)(sel & ~7) + 7 <= limit) {
        desc = cpu_read_descriptor(cpu, sel, EXC_GP);
        unsigned attr = (unsigned)(desc >> 40) & 0xff, type = attr & 0xf, dpl = SA_DPL(attr);
        bool conforming = (attr & SA_S) && (type & 0xc) == 0xc;
        if (attr & SA_S)
            ok = conforming || (dpl >= cpu->cpl && dpl >= (sel & 3u));
        else
            ok = (type == 2 || type == 9 || type == 0xb || (in->op == 0x02 && type == 0xc)) &&
                 dpl >= cpu->cpl && dpl >= (sel & 3u);
    }
    cpu_flags_materialize(cpu);
    cpu->rflags = (cpu->rflags & ~(uint64_t)F_ZF) | (ok ? F_ZF : 0);
    if (!ok)
        return;
    uint64_t v;
    if (in->op == 0x02) {
        v = (desc >> 32) & 0x00f0ff00u;
    } else {
        struct emu_seg s;
        cpu_seg_from_desc(&s, sel, desc);
        v = s.limit;
    }
    cpu_reg_set(cpu, in->reg, in->opsize == 2 ? 2 : 4, true, v);
}

static void exec_mov_crdr(struct emu_cpu *cpu, const struct insn *in)
{
    require_cpl0(cpu);
    unsigned size = cpu->code64 ? 8 : 4;
    int n = in->reg;
    if (in->lock && n == 0)
        n = 8; /* AMD's alternate CR8 encoding */
    switch (in->op) {
    case 0x20:
        cpu_reg_set(cpu, in->rm, size, true, cpu_read_cr(cpu, n));
        return;
    case 0x22:
        cpu_write_cr(cpu, n, cpu_reg_get(cpu, in->rm, size, true));
        return;
    case 0x21: case 0x23: {
        if (n > 7)
            cpu_raise_ud(cpu);
        if ((n == 4 || n == 5) && (cpu->cr4 & CR4_DE))
            cpu_raise_ud(cpu);
        if (n == 4)
            n = 6;
        else if (n == 5)
            n = 7;
        if (in->op == 0x21) {
            cpu_reg_set(cpu, in->rm, size, true, cpu->dr[n]);
        } else {
            uint64_t v = cpu_reg_get(cpu, in->rm, size, true);
            if (n == 6)
                v = (v & 0xe00f) | 0xffff0ff0;
            else if (n == 7)
                v = (v & 0xffffffff2fffull) | 0x400;
            cpu->dr[n] = v; /* breakpoints are stored, never armed */
        }
        return;
    }
    }
}

bool cpu_exec_system(struct emu_cpu *cpu, struct insn *in)
{
    uint64_t next = cpu->rip;
    switch (in->op) {
    case 0x00: exec_group6(cpu, in); return true;
    case 0x01: exec_group7(cpu, in); return true;
    case 0x02: case 0x03: exec_lar_lsl(cpu, in); return true;
    case 0x05:
        if (!cpu_long_mode(cpu))
            cpu_raise_ud(cpu);
        cpu_syscall(cpu, next);
        return true;
    case 0x06:
        require_cpl0(cpu);
        cpu->cr0 &= ~(uint64_t)CR0_TS;
        return true;
    case 0x07:
        cpu_sysret(cpu, in->opsize == 8 ? 8 : 4);
        return true;
    case 0x08: case 0x09:
        require_cpl0(cpu);
        return true;
    case 0x0b: case 0xb9: case 0xff:
        cpu_raise_ud(cpu);
    case 0x0d: case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e:
    case 0x1f:
        return true; /* prefetch / hint nops */
    case 0x20: case 0x21: case 0x22: case 0x23:
        exec_mov_crdr(cpu, in);
        return true;
    case 0x30: cpu_wrmsr(cpu); return true;
    case 0x31:
        if ((cpu->cr4 & CR4_TSD) && cpu->cpl != 0)
            cpu_raise_gp(cpu, 0);
        {
            uint64_t t = emu_cpu_tsc(cpu);
            cpu->regs[R_AX] = t & 0xffffffffu;
            cpu->regs[R_DX] = t >> 32;
        }
        return true;
    case 0x32: cpu_rdmsr(cpu); return true;
    case 0x33: cpu_raise_gp(cpu, 0);
    case 0x34: cpu_sysenter(cpu); return true;
    case 0x35: cpu_sysexit(cpu, in->opsize == 8 ? 8 : 4); return true;
    case 0xa2: cpu_cpuid(cpu); return true;
    }
    return false;
}
