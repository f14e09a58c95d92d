/* Protection: exceptions and their unwinding, segment descriptor loads,
 * event delivery through the IVT/IDT (privilege changes, TSS stacks, IST),
 * far transfers, IRET, SYSCALL/SYSRET and SYSENTER/SYSEXIT. */
#include "accel/emu/cpu_internal.h"

void cpu_raise(struct emu_cpu *cpu, int vec, bool has_err, uint32_t err)
{
    cpu->fault_vec = vec;
    cpu->fault_has_err = has_err;
    cpu->fault_err = err;
    longjmp(cpu->fault_jmp, 1);
}

void cpu_raise_gp(struct emu_cpu *cpu, uint32_t err)
{
    cpu_raise(cpu, EXC_GP, true, err);
}

void cpu_raise_ud(struct emu_cpu *cpu)
{
    cpu_raise(cpu, EXC_UD, false, 0);
}

void cpu_internal(struct emu_cpu *cpu, const char *why)
{
    cpu->internal_error = true;
    cpu->internal_why = why;
    longjmp(cpu->fault_jmp, 1);
}

bool cpu_long_mode(const struct emu_cpu *cpu)
{
    return cpu->efer & EFER_LMA;
}

bool cpu_in_real_mode(const struct emu_cpu *cpu)
{
    return !(cpu->cr0 & CR0_PE);
}

void cpu_update_mode(struct emu_cpu *cpu)
{
    const struct emu_seg *cs = &cpu->seg[S_CS];
    cpu->code64 = cpu_long_mode(cpu) && (cs->attr & SA_L);
    cpu->code_size = (cs->attr & SA_DB) && !cpu->code64 ? 4 : cpu->code64 ? 4 : 2;
    if (cpu_in_real_mode(cpu))
        cpu->cpl = 0;
}

void cpu_seg_from_desc(struct emu_seg *s, uint16_t sel, uint64_t desc)
{
    uint32_t lo = (uint32_t)desc, hi = (uint32_t)(desc >> 32);
    uint32_t limit = (lo & 0xffff) | (hi & 0xf0000);
    s->sel = sel;
    s->base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000u);
    s->attr = (uint16_t)(((hi >> 8) & 0xff) | ((hi >> 8) & 0xf000));
    s->limit = (s->attr & SA_G) ? (limit << 12) | 0xfff : limit;
}

uint64_t cpu_read_descriptor(struct emu_cpu *cpu, uint16_t sel, int exc)
{
    uint64_t base;
    uint32_t limit;
    if (sel & 4) {
        if (!(cpu->ldtr.attr & SA_P) || (cpu->ldtr.sel & ~3) == 0)
            cpu_raise(cpu, exc, true, sel & 0xfffc);
        base = cpu->ldtr.base;
        limit = cpu->ldtr.limit;
    } else {
        base = cpu->gdt_base;
        limit = cpu->gdt_limit;
    }
    if ((uint32_t)(sel & ~7) + 7 > limit)
        cpu_raise(cpu, exc, true, sel & 0xfffc);
    return cpu_sys_read(cpu, base + (sel & ~7u), 8);
}

/* Sets the accessed bit of a code/data descriptor, as the CPU does on load. */
static void desc_set_accessed(struct emu_cpu *cpu, uint16_t sel, uint64_t desc)
{
    if (desc & (1ull << 40))
        return;
    uint64_t base = (sel & 4) ? cpu->ldtr.base : cpu->gdt_base;
    uint64_t lin = base + (sel & ~7u) + 5;
    cpu_sys_write(cpu, lin, (uint8_t)((desc >> 40) | 1), 1);
}

static void seg_null(struct emu_seg *s, uint16_t sel)
{
    s->sel = sel;
    s->attr = 0;
    s->limit = 0;
}

void cpu_load_seg(struct emu_cpu *cpu, int sreg, uint16_t sel)
{
    struct emu_seg *s = &cpu->seg[sreg];
    if (cpu_in_real_mode(cpu) || (cpu->rflags & F_VM)) {
        s->sel = sel;
        s->base = (uint64_t)sel << 4;
        if (!(s->attr & SA_P))
            s->attr = SA_P | SA_S | 3;
        if (sreg == S_CS)
            cpu_update_mode(cpu);
        return;
    }
    unsigned rpl = sel & 3, cpl = cpu->cpl;
    if ((sel & ~3) == 0) {
        if (sreg == S_SS && !(cpu->code64 && cpl < 3 && rpl == cpl))
            cpu_raise_gp(cpu, 0);
        if (sreg == S_SS) {
            seg_null(s, sel);
            s->attr = (uint16_t)(SA_S | 0x3 | (cpl << 5) | SA_DB); /* usable null SS in 64-bit mode */
            return;
        }
        seg_null(s, sel);
        return;
    }
    uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
    struct emu_seg n;
    cpu_seg_from_desc(&n, sel, desc);
    unsigned type = SA_TYPE(n.attr), dpl = SA_DPL(n.attr);
    if (!(n.attr & SA_S))
        cpu_raise_gp(cpu, sel & 0xfffc);
    if (sreg == S_SS) {
        if ((type & 0xa) != 0x2 || rpl != cpl || dpl != cpl)
            cpu_raise_gp(cpu, sel & 0xfffc);
        if (!(n.attr & SA_P))
            cpu_raise(cpu, EXC_SS, true, sel & 0xfffc);
    } else {
        if ((type & 0xa) == 0x8) /* execute-only code */
            cpu_raise_gp(cpu, sel & 0xfffc);
        bool conforming_code = (type & 0xc) == 0xc;
        if (!conforming_code && (dpl < cpl || dpl < rpl))
            cpu_raise_gp(cpu, sel & 0xfffc);
        if (!(n.attr & SA_P))
            cpu_raise(cpu, EXC_NP, true, sel & 0xfffc);
    }
    desc_set_accessed(cpu, sel, desc);
    n.attr |= 1;
    if (cpu->code64 && (sreg == S_FS || sreg == S_GS))
        n.base &= 0xffffffffu;
    *s = n;
}

void cpu_load_cs(struct emu_cpu *cpu, uint16_t sel, uint64_t desc, int new_cpl)
{
    struct emu_seg *cs = &cpu->seg[S_CS];
    cpu_seg_from_desc(cs, (uint16_t)((sel & ~3) | new_cpl), desc);
    cs->attr |= 1;
    cpu->cpl = (uint8_t)new_cpl;
    cpu_update_mode(cpu);
}

/* Checks a code segment descriptor as a far transfer target. */
static void check_code_desc(struct emu_cpu *cpu, uint16_t sel, uint64_t desc, int exc)
{
    unsigned attr = (unsigned)(desc >> 40) & 0xff;
    if (!(attr & SA_S) || !(attr & 0x8))
        cpu_raise(cpu, exc, true, sel & 0xfffc);
    if (!(attr & SA_P))
        cpu_raise(cpu, EXC_NP, true, sel & 0xfffc);
    if (cpu_long_mode(cpu) && (desc & (1ull << 53)) && (desc & (1ull << 54)))
        cpu_raise(cpu, exc, true, sel & 0xfffc); /* L and D both set */
}

/* ---- event delivery ---- */

struct stack_ptr {
    uint64_t base, sp, mask;
    bool user;
};

static void spush(struct emu_cpu *cpu, struct stack_ptr *s, uint64_t v, unsigned size)
{
    s->sp = (s->sp - size) & s->mask;
    uint64_t lin = s->base + s->sp;
    if (!cpu_long_mode(cpu))
        lin &= 0xffffffffu;
    mmu_write_lin(cpu, lin, v, size, s->user);
}

static void deliver_real(struct emu_cpu *cpu, int vec, uint64_t next_rip)
{
    if ((unsigned)vec * 4 + 3 > cpu->idt_limit)
        cpu_raise_gp(cpu, 0);
    uint32_t ent = (uint32_t)cpu_sys_read(cpu, cpu->idt_base + (unsigned)vec * 4, 4);
    cpu_push(cpu, cpu_get_rflags(cpu) & 0xffff, 2);
    cpu_push(cpu, cpu->seg[S_CS].sel, 2);
    cpu_push(cpu, next_rip & 0xffff, 2);
    cpu->rflags &= ~(uint64_t)(F_IF | F_TF | F_AC | F_RF);
    cpu_load_seg(cpu, S_CS, (uint16_t)(ent >> 16));
    cpu->rip = ent & 0xffff;
}

static uint64_t tss_read(struct emu_cpu *cpu, unsigned off, unsigned size)
{
    if (off + size - 1 > cpu->tr.limit)
        cpu_raise(cpu, EXC_TS, true, cpu->tr.sel & 0xfffc);
    return cpu_sys_read(cpu, cpu->tr.base + off, size);
}

void cpu_deliver(struct emu_cpu *cpu, int vec, bool has_err, uint32_t err, bool soft,
                 uint64_t next_rip)
{
    uint32_t ext = soft ? 0 : 1;
    uint32_t gate_err = (uint32_t)vec * 8 + 2 + ext;

    if (cpu_in_real_mode(cpu)) {
        deliver_real(cpu, vec, next_rip);
        return;
    }
    if (cpu->rflags & F_VM)
        cpu_internal(cpu, "virtual-8086 mode is not supported");

    bool lm = cpu_long_mode(cpu);
    unsigned esz = lm ? 16 : 8;
    if ((unsigned)vec * esz + esz - 1 > cpu->idt_limit)
        cpu_raise_gp(cpu, gate_err);
    uint64_t lo = cpu_sys_read(cpu, cpu->idt_base + (unsigned)vec * esz, 8);
    uint64_t hi = lm ? cpu_sys_read(cpu, cpu->idt_base + (unsigned)vec * esz + 8, 8) : 0;
    unsigned type = (lo >> 40) & 0xf, gdpl = (lo >> 45) & 3;
    bool present = (lo >> 47) & 1;
    if (type == 5)
        cpu_internal(cpu, "task gates are not supported");
    if (lm ? (type != 0xe && type != 0xf) : (type != 0xe && type != 0xf && type != 6 && type != 7))
        cpu_raise_gp(cpu, gate_err);
    if (soft && gdpl < cpu->cpl)
        cpu_raise_gp(cpu, gate_err);
    if (!present)
        cpu_raise(cpu, EXC_NP, true, gate_err);

    uint16_t sel = (uint16_t)(lo >> 16);
    uint64_t off = (lo & 0xffff) | ((lo >> 32) & 0xffff0000u) | (hi << 32);
    if ((sel & ~3) == 0)
        cpu_raise_gp(cpu, ext);
    uint64_t cdesc = cpu_read_descriptor(cpu, sel, EXC_GP);
    check_code_desc(cpu, sel, cdesc, EXC_GP);
    unsigned cdpl = (cdesc >> 45) & 3;
    if (cdpl > cpu->cpl)
        cpu_raise_gp(cpu, sel & 0xfffc);
    if (lm && !(cdesc & (1ull << 53)))
        cpu_raise_gp(cpu, sel & 0xfffc); /* handler must be 64-bit code */
    unsigned new_cpl = (cdesc & (1ull << 42)) ? cpu->cpl : cdpl; /* conforming keeps CPL */

    uint64_t old_flags = cpu_get_rflags(cpu);
    uint16_t old_ss = cpu->seg[S_SS].sel, old_cs = cpu->seg[S_CS].sel;
    uint64_t old_sp = cpu->regs[R_SP];
    struct stack_ptr st;
    struct emu_seg new_ss = cpu->seg[S_SS];
    bool stack_switch = new_cpl < cpu->cpl;

    if (lm) {
        unsigned ist = (lo >> 32) & 7;
        st.base = 0;
        st.mask = ~0ull;
        st.sp = old_sp;
        if (stack_switch)
            st.sp = tss_read(cpu, 4 + 8 * new_cpl, 8);
        if (ist)
            st.sp = tss_read(cpu, 0x24 + 8 * (ist - 1), 8);
        st.sp &= ~0xfull;
        st.user = new_cpl == 3;
        if (stack_switch) {
            new_ss.sel = (uint16_t)new_cpl;
            new_ss.base = 0;
            new_ss.limit = 0;
            new_ss.attr = (uint16_t)(SA_S | 0x3 | (new_cpl << 5) | SA_DB);
        }
        spush(cpu, &st, old_ss, 8);
        spush(cpu, &st, old_sp, 8);
        spush(cpu, &st, old_flags, 8);
        spush(cpu, &st, old_cs, 8);
        spush(cpu, &st, next_rip, 8);
        if (has_err)
            spush(cpu, &st, err, 8);
    } else {
        unsigned gsize = (type & 8) ? 4 : 2;
        if (stack_switch) {
            uint64_t sp;
            uint16_t ss_sel;
            if (SA_TYPE(cpu->tr.attr) == 0x9 || SA_TYPE(cpu->tr.attr) == 0xb) {
                sp = tss_read(cpu, 4 + 8 * new_cpl, 4);
                ss_sel = (uint16_t)tss_read(cpu, 8 + 8 * new_cpl, 2);
            } else {
                sp = tss_read(cpu, 2 + 4 * new_cpl, 2);
                ss_sel = (uint16_t)tss_read(cpu, 4 + 4 * new_cpl, 2);
            }
            if ((ss_sel & ~3) == 0)
                cpu_raise(cpu, EXC_TS, true, ext);
            uint64_t sdesc = cpu_read_descriptor(cpu, ss_sel, EXC_TS);
            cpu_seg_from_desc(&new_ss, ss_sel, sdesc);
            if (!(new_ss.attr & SA_P))
                cpu_raise(cpu, EXC_SS, true, ss_sel & 0xfffc);
            st.sp = sp;
        } else {
            st.sp = old_sp;
        }
        st.base = new_ss.base;
        st.mask = (new_ss.attr & SA_DB) ? 0xffffffffu : 0xffff;
        st.sp &= st.mask;
        st.user = new_cpl == 3;
        if (stack_switch) {
            spush(cpu, &st, old_ss, gsize);
            spush(cpu, &st, old_sp, gsize);
        }
        spush(cpu, &st, old_flags, gsize);
        spush(cpu, &st, old_cs, gsize);
        spush(cpu, &st, next_rip, gsize);
        if (has_err)
            spush(cpu, &st, err, gsize);
        if (gsize == 2)
            off &= 0xffff;
    }

    /* Commit: nothing below can fault. */
    desc_set_accessed(cpu, sel, cdesc);
    if (stack_switch || lm)
        cpu->seg[S_SS] = new_ss;
    cpu->regs[R_SP] = (cpu->regs[R_SP] & ~st.mask) | st.sp;
    if (lm)
        cpu->regs[R_SP] = st.sp;
    cpu_load_cs(cpu, sel, cdesc, (int)new_cpl);
    cpu->rip = lm ? off : off & 0xffffffffu;
    cpu->rflags &= ~(uint64_t)(F_TF | F_NT | F_RF | F_VM);
    if (!(type & 1))
        cpu->rflags &= ~(uint64_t)F_IF; /* interrupt gate */
}

/* ---- far transfers ---- */

void cpu_far_jump(struct emu_cpu *cpu, uint16_t sel, uint64_t off, bool call, uint8_t opsize,
                  uint64_t next_rip)
{
    if (cpu_in_real_mode(cpu) || (cpu->rflags & F_VM)) {
        if (call) {
            cpu_push(cpu, cpu->seg[S_CS].sel, opsize);
            cpu_push(cpu, next_rip, opsize);
        }
        cpu_load_seg(cpu, S_CS, sel);
        cpu->rip = off & size_mask(opsize);
        return;
    }
    if ((sel & ~3) == 0)
        cpu_raise_gp(cpu, 0);
    uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
    unsigned attr = (unsigned)(desc >> 40) & 0xff;
    if (!(attr & SA_S))
        cpu_internal(cpu, "far transfer through a gate or TSS is not supported");
    check_code_desc(cpu, sel, desc, EXC_GP);
    unsigned dpl = SA_DPL(attr), rpl = sel & 3;
    if ((attr & 0x4) ? dpl > cpu->cpl : (rpl > cpu->cpl || dpl != cpu->cpl))
        cpu_raise_gp(cpu, sel & 0xfffc);
    if (call) {
        cpu_push(cpu, cpu->seg[S_CS].sel, opsize);
        cpu_push(cpu, next_rip, opsize);
    }
    desc_set_accessed(cpu, sel, desc);
    cpu_load_cs(cpu, sel, desc, cpu->cpl);
    cpu->rip = cpu->code64 ? off : off & size_mask(opsize);
}

static void null_outer_segments(struct emu_cpu *cpu)
{
    static const int segs[4] = {S_ES, S_DS, S_FS, S_GS};
    for (int i = 0; i < 4; i++) {
        struct emu_seg *s = &cpu->seg[segs[i]];
        unsigned t = SA_TYPE(s->attr);
        bool data_or_nc = !(t & 8) || !(t & 4);
        if ((s->attr & SA_P) && data_or_nc && SA_DPL(s->attr) < cpu->cpl)
            seg_null(s, 0);
    }
}

void cpu_far_ret(struct emu_cpu *cpu, uint8_t opsize, uint16_t imm)
{
    uint64_t mask = cpu_stack_mask(cpu);
    uint64_t sp = cpu->regs[R_SP];
    uint64_t ip = cpu_read(cpu, S_SS, sp & mask, opsize);
    uint16_t sel = (uint16_t)cpu_read(cpu, S_SS, (sp + opsize) & mask, 2);
    if (cpu_in_real_mode(cpu) || (cpu->rflags & F_VM)) {
        cpu->regs[R_SP] = (sp & ~mask) | ((sp + 2u * opsize + imm) & mask);
        cpu_load_seg(cpu, S_CS, sel);
        cpu->rip = ip;
        return;
    }
    if ((sel & ~3) == 0)
        cpu_raise_gp(cpu, 0);
    unsigned rpl = sel & 3;
    if (rpl < cpu->cpl)
        cpu_raise_gp(cpu, sel & 0xfffc);
    uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
    check_code_desc(cpu, sel, desc, EXC_GP);
    if (rpl == cpu->cpl) {
        cpu->regs[R_SP] = (sp & ~mask) | ((sp + 2u * opsize + imm) & mask);
        cpu_load_cs(cpu, sel, desc, (int)rpl);
        cpu->rip = ip;
        return;
    }
    /* Return to an outer privilege level: SS:SP follow on the stack. */
    uint64_t nsp = cpu_read(cpu, S_SS, (sp + 2u * opsize + imm) & mask, opsize);
    uint16_t nss = (uint16_t)cpu_read(cpu, S_SS, (sp + 3u * opsize + imm) & mask, 2);
    cpu_load_cs(cpu, sel, desc, (int)rpl);
    cpu_load_seg(cpu, S_SS, nss);
    cpu->regs[R_SP] = nsp + imm;
    cpu->rip = ip;
    null_outer_segments(cpu);
}

void cpu_iret(struct emu_cpu *cpu, uint8_t opsize)
{
    uint64_t mask = cpu_stack_mask(cpu);
    uint64_t sp = cpu->regs[R_SP];
    uint64_t ip = cpu_read(cpu, S_SS, sp & mask, opsize);
    uint16_t sel = (uint16_t)cpu_read(cpu, S_SS, (sp + opsize) & mask, 2);
    uint64_t fl = cpu_read(cpu, S_SS, (sp + 2u * opsize) & mask, opsize);
    uint64_t cur = cpu_get_rflags(cpu);
    uint64_t changeable = F_ARITH | F_TF | F_DF | F_NT | F_RF | F_AC | F_ID | F_IF | F_IOPL;

    cpu->nmi_blocked = false;
    if (cpu_in_real_mode(cpu)) {
        cpu->regs[R_SP] = (sp & ~mask) | ((sp + 3u * opsize) & mask);
        cpu_load_seg(cpu, S_CS, sel);
        cpu->rip = ip & size_mask(opsize);
        if (opsize == 2)
            fl = (cur & ~0xffffull) | (fl & 0xffff);
        cpu_set_rflags(cpu, (cur & ~changeable) | (fl & changeable));
        return;
    }
    if (cpu->rflags & F_VM)
        cpu_internal(cpu, "virtual-8086 mode is not supported");
    if ((cur & F_NT) && !cpu_long_mode(cpu))
        cpu_internal(cpu, "IRET task return is not supported");
    if (!cpu_long_mode(cpu) && (fl & F_VM) && cpu->cpl == 0 && opsize == 4)
        cpu_internal(cpu, "IRET to virtual-8086 mode is not supported");

    if ((sel & ~3) == 0)
        cpu_raise_gp(cpu, 0);
    unsigned rpl = sel & 3;
    if (rpl < cpu->cpl)
        cpu_raise_gp(cpu, sel & 0xfffc);
    uint64_t desc = cpu_read_descriptor(cpu, sel, EXC_GP);
    check_code_desc(cpu, sel, desc, EXC_GP);

    if (cpu->cpl > 0)
        changeable &= ~(uint64_t)F_IOPL;
    if (cpu->cpl > ((cur >> 12) & 3))
        changeable &= ~(uint64_t)F_IF;
    if (opsize == 2)
        changeable &= 0xffff;
    uint64_t new_flags = (cur & ~changeable) | (fl & changeable);

    bool pop_stack = rpl > cpu->cpl || cpu->code64;
    if (pop_stack) {
        uint64_t nsp = cpu_read(cpu, S_SS, (sp + 3u * opsize) & mask, opsize);
        uint16_t nss = (uint16_t)cpu_read(cpu, S_SS, (sp + 4u * opsize) & mask, 2);
        bool to64 = cpu_long_mode(cpu) && (desc & (1ull << 53));
        cpu_load_cs(cpu, sel, desc, (int)rpl);
        if ((nss & ~3) == 0 && to64 && rpl < 3) {
            cpu->seg[S_SS].sel = nss;
            cpu->seg[S_SS].attr = (uint16_t)(SA_S | 0x3 | (rpl << 5) | SA_DB);
            cpu->seg[S_SS].base = 0;
        } else {
            cpu_load_seg(cpu, S_SS, nss);
        }
        cpu->regs[R_SP] = opsize == 8 || to64 ? nsp : nsp & size_mask(opsize);
        if (!to64 && opsize == 2)
            cpu->regs[R_SP] = (cpu->regs[R_SP] & ~0xffffull) | (nsp & 0xffff);
    } else {
        cpu->regs[R_SP] = (sp & ~mask) | ((sp + 3u * opsize) & mask);
        cpu_load_cs(cpu, sel, desc, (int)rpl);
    }
    cpu->rip = cpu->code64 ? ip : ip & size_mask(opsize);
    cpu_set_rflags(cpu, new_flags);
    null_outer_segments(cpu);
}

/* ---- fast system calls ---- */

static void set_flat(struct emu_seg *s, uint16_t sel, unsigned type, unsigned dpl, bool l)
{
    s->sel = sel;
    s->base = 0;
    s->limit = 0xffffffffu;
    s->attr = (uint16_t)(type | SA_S | (dpl << 5) | SA_P | SA_G | (l ? SA_L : SA_DB));
}

void cpu_syscall(struct emu_cpu *cpu, uint64_t next_rip)
{
    if (!(cpu->efer & EFER_SCE))
        cpu_raise_ud(cpu);
    uint16_t sel = (uint16_t)((cpu->star >> 32) & 0xfffc);
    uint64_t fl = cpu_get_rflags(cpu);
    bool from64 = cpu->code64; /* LSTAR from 64-bit code, CSTAR from compatibility mode */
    if (cpu_long_mode(cpu)) {
        cpu->regs[R_CX] = next_rip;
        cpu->regs[11] = fl & ~(uint64_t)F_RF;
        set_flat(&cpu->seg[S_CS], sel, 0xb, 0, true);
        set_flat(&cpu->seg[S_SS], (uint16_t)(sel + 8), 0x3, 0, false);
        cpu->cpl = 0;
        cpu_update_mode(cpu);
        cpu->rip = from64 ? cpu->lstar : cpu->cstar;
        cpu_set_rflags(cpu, fl & ~cpu->sfmask & ~(uint64_t)F_RF);
        return;
    }
    cpu->regs[R_CX] = next_rip & 0xffffffffu;
    set_flat(&cpu->seg[S_CS], sel, 0xb, 0, false);
    set_flat(&cpu->seg[S_SS], (uint16_t)(sel + 8), 0x3, 0, false);
    cpu->cpl = 0;
    cpu_update_mode(cpu);
    cpu->rip = cpu->star & 0xffffffffu;
    cpu_set_rflags(cpu, fl & ~(uint64_t)(F_IF | F_RF | F_VM));
}

void cpu_sysret(struct emu_cpu *cpu, uint8_t opsize)
{
    if (!(cpu->efer & EFER_SCE))
        cpu_raise_ud(cpu);
    if (cpu->cpl != 0 || !cpu_long_mode(cpu))
        cpu_raise_gp(cpu, 0);
    uint16_t base = (uint16_t)(cpu->star >> 48);
    if (opsize == 8) {
        uint64_t rip = cpu->regs[R_CX];
        if ((uint64_t)((int64_t)(rip << 16) >> 16) != rip)
            cpu_raise_gp(cpu, 0);
        set_flat(&cpu->seg[S_CS], (uint16_t)((base + 16) | 3), 0xb, 3, true);
        cpu->rip = rip;
    } else {
        set_flat(&cpu->seg[S_CS], (uint16_t)(base | 3), 0xb, 3, false);
        cpu->rip = cpu->regs[R_CX] & 0xffffffffu;
    }
    /* SS keeps flat attributes; only the selector comes from STAR. */
    set_flat(&cpu->seg[S_SS], (uint16_t)((base + 8) | 3), 0x3, 3, false);
    cpu->cpl = 3;
    cpu_update_mode(cpu);
    cpu_set_rflags(cpu, (cpu->regs[11] & 0x3c7fd7) | 2);
}

void cpu_sysenter(struct emu_cpu *cpu)
{
    uint16_t sel = (uint16_t)(cpu->sysenter_cs & 0xfffc);
    if (cpu_in_real_mode(cpu) || sel == 0)
        cpu_raise_gp(cpu, 0);
    bool lm = cpu_long_mode(cpu);
    set_flat(&cpu->seg[S_CS], sel, 0xb, 0, lm);
    set_flat(&cpu->seg[S_SS], (uint16_t)(sel + 8), 0x3, 0, false);
    cpu->cpl = 0;
    cpu_update_mode(cpu);
    cpu->rflags &= ~(uint64_t)(F_IF | F_VM | F_RF);
    cpu->rip = lm ? cpu->sysenter_eip : cpu->sysenter_eip & 0xffffffffu;
    cpu->regs[R_SP] = lm ? cpu->sysenter_esp : cpu->sysenter_esp & 0xffffffffu;
}

void cpu_sysexit(struct emu_cpu *cpu, uint8_t opsize)
{
    uint16_t sel = (uint16_t)(cpu->sysenter_cs & 0xfffc);
    if (cpu_in_real_mode(cpu) || sel == 0 || cpu->cpl != 0)
        cpu_raise_gp(cpu, 0);
    if (opsize == 8) {
        set_flat(&cpu->seg[S_CS], (uint16_t)((sel + 32) | 3), 0xb, 3, true);
        set_flat(&cpu->seg[S_SS], (uint16_t)((sel + 40) | 3), 0x3, 3, false);
        cpu->rip = cpu->regs[R_DX];
        cpu->regs[R_SP] = cpu->regs[R_CX];
    } else {
        set_flat(&cpu->seg[S_CS], (uint16_t)((sel + 16) | 3), 0xb, 3, false);
        set_flat(&cpu->seg[S_SS], (uint16_t)((sel + 24) | 3), 0x3, 3, false);
        cpu->rip = cpu->regs[R_DX] & 0xffffffffu;
        cpu->regs[R_SP] = cpu->regs[R_CX] & 0xffffffffu;
    }
    cpu->cpl = 3;
    cpu_update_mode(cpu);
}
