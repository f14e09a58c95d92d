/* Fast paths for the commonest 64-bit-mode instruction forms, picked once
 * when a translation block is recorded (cpu_fast_select()) so that running
 * the block skips cpu_exec()'s dispatch and the generic operand helpers.
 *
 * Each handler does exactly what the generic executor (exec.c) does for the
 * forms it accepts, and hands anything unusual back to it: memory operands
 * that miss the TLB, cross a page, are not RAM or are not canonical go
 * through cpu_read()/cpu_write(), which translate, fault and reach MMIO.
 * Only 4- and 8-byte operand sizes without LOCK/REP prefixes are taken. */
#include <string.h>

#include "accel/emu/cpu_internal.h"

/* ---- operands ------------------------------------------------------------- */

static inline uint64_t fast_ea(const struct emu_cpu *cpu, const struct insn *in)
{
    uint64_t ea = (uint64_t)in->disp;
    if (in->rip_rel)
        ea += in->start + in->len;
    if (in->base >= 0)
        ea += cpu->regs[in->base];
    if (in->index >= 0)
        ea += cpu->regs[in->index] << in->scale;
    if (in->addrsize == 4)
        ea &= 0xffffffffu;
    return ea;
}

/* Linear address of a 64-bit-mode data operand (FS/GS add their base). */
static inline uint64_t fast_lin(const struct emu_cpu *cpu, const struct insn *in, uint64_t ea)
{
    return ea + ((in->seg == S_FS || in->seg == S_GS) ? cpu->seg[in->seg].base : 0);
}

/* RAM behind a TLB hit for size bytes inside one page, or NULL. */
static inline const struct tlb_entry *fast_tlb(struct emu_cpu *cpu, uint64_t lin, unsigned size,
                                               bool write)
{
    if ((lin & 0xfff) > 4096u - size || (uint64_t)((int64_t)(lin << 16) >> 16) != lin)
        return NULL;
    const struct tlb_entry *e = &cpu->tlb[(lin >> 12) & (TLB_SIZE - 1)];
    bool user = cpu->cpl == 3;
    if (e->vpn != (lin >> 12) + 1 || !e->host || (user && !e->user))
        return NULL;
    if (write && !(e->dirty && (e->rw || (!user && !(cpu->cr0 & CR0_WP)))))
        return NULL;
    return e;
}

static inline uint64_t load(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    uint64_t ea = fast_ea(cpu, in), lin = fast_lin(cpu, in, ea), v = 0;
    const struct tlb_entry *e = fast_tlb(cpu, lin, size, false);
    if (!e)
        return cpu_read(cpu, cpu_ea_seg(in), ea, size);
    memcpy(&v, e->host + (lin & 0xfff), size);
    return v;
}

static inline void store(struct emu_cpu *cpu, const struct insn *in, unsigned size, uint64_t v)
{
    uint64_t ea = fast_ea(cpu, in), lin = fast_lin(cpu, in, ea);
    const struct tlb_entry *e = fast_tlb(cpu, lin, size, true);
    if (!e) {
        cpu_write(cpu, cpu_ea_seg(in), ea, v, size);
        return;
    }
    memcpy(e->host + (lin & 0xfff), &v, size);
    code_note_write(cpu, e->code);
}

static inline uint64_t mask_of(unsigned size)
{
    return size == 8 ? ~0ull : 0xffffffffull;
}

static inline void reg_put(struct emu_cpu *cpu, unsigned r, unsigned size, uint64_t v)
{
    cpu->regs[r] = v & mask_of(size);
}

static inline uint64_t reg_val(const struct emu_cpu *cpu, unsigned r, unsigned size)
{
    return cpu->regs[r] & mask_of(size);
}

static inline uint64_t rm_val(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    return in->mod == 3 ? reg_val(cpu, in->rm, size) : load(cpu, in, size);
}

/* ---- ALU: add/or/and/sub/xor/cmp/test with flags as exec.c's alu() ------------ */

enum { F_ADD, F_OR, F_AND, F_SUB, F_XOR, F_CMP, F_TEST };

static inline uint64_t fast_alu(struct emu_cpu *cpu, int op, unsigned size, uint64_t a,
                                uint64_t b)
{
    uint64_t m = mask_of(size), r;
    a &= m;
    b &= m;
    switch (op) {
    case F_ADD:
        r = (a + b) & m;
        cpu_lazy(cpu, LF_ADD, size, r, a, b);
        return r;
    case F_OR:
        r = a | b;
        break;
    case F_AND: case F_TEST:
        r = a & b;
        break;
    case F_XOR:
        r = a ^ b;
        break;
    default: /* SUB, CMP */
        r = (a - b) & m;
        cpu_lazy(cpu, LF_SUB, size, r, a, b);
        return r;
    }
    cpu_lazy(cpu, LF_LOGIC, size, r, a, b);
    return r;
}

static inline bool writes_result(int op)
{
    return op != F_CMP && op != F_TEST;
}

/* op r/m, reg (01, 09, 21, 29, 31, 39, 85) */
static inline void alu_rm_reg(struct emu_cpu *cpu, const struct insn *in, int op)
{
    unsigned size = in->opsize;
    uint64_t b = reg_val(cpu, in->reg, size);
    if (in->mod == 3) {
        uint64_t r = fast_alu(cpu, op, size, reg_val(cpu, in->rm, size), b);
        if (writes_result(op))
            reg_put(cpu, in->rm, size, r);
        return;
    }
    if (!writes_result(op)) {
        fast_alu(cpu, op, size, load(cpu, in, size), b);
        return;
    }
    uint64_t ea = fast_ea(cpu, in), lin = fast_lin(cpu, in, ea);
    const struct tlb_entry *e = fast_tlb(cpu, lin, size, true);
    if (!e) { /* the generic read-modify-write: write-access faults, MMIO */
        cpu_exec(cpu, (struct insn *)in);
        return;
    }
    uint8_t *p = e->host + (lin & 0xfff);
    uint64_t a = 0;
    memcpy(&a, p, size);
    uint64_t r = fast_alu(cpu, op, size, a, b);
    memcpy(p, &r, size);
    code_note_write(cpu, e->code);
}

/* op reg, r/m (03, 0b, 23, 2b, 33, 3b) */
static inline void alu_reg_rm(struct emu_cpu *cpu, const struct insn *in, int op)
{
    unsigned size = in->opsize;
    uint64_t r = fast_alu(cpu, op, size, reg_val(cpu, in->reg, size), rm_val(cpu, in, size));
    if (writes_result(op))
        reg_put(cpu, in->reg, size, r);
}

/* op r/m(register), imm (81, 83 with mod 3) */
static inline void alu_reg_imm(struct emu_cpu *cpu, const struct insn *in, int op, uint64_t imm)
{
    unsigned size = in->opsize;
    uint64_t r = fast_alu(cpu, op, size, reg_val(cpu, in->rm, size), imm);
    if (writes_result(op))
        reg_put(cpu, in->rm, size, r);
}

#define ALU_HANDLERS(name, op)                                                                  \
    static void f_##name##_rm_reg(struct emu_cpu *cpu, const struct insn *in)                    \
    {                                                                                           \
        alu_rm_reg(cpu, in, op);                                                                \
    }                                                                                           \
    static void f_##name##_reg_rm(struct emu_cpu *cpu, const struct insn *in)                    \
    {                                                                                           \
        alu_reg_rm(cpu, in, op);                                                                \
    }                                                                                           \
    static void f_##name##_imm8(struct emu_cpu *cpu, const struct insn *in)                      \
    {                                                                                           \
        alu_reg_imm(cpu, in, op, (uint64_t)(int64_t)(int8_t)in->imm);                           \
    }                                                                                           \
    static void f_##name##_imm(struct emu_cpu *cpu, const struct insn *in)                       \
    {                                                                                           \
        alu_reg_imm(cpu, in, op, in->imm);                                                      \
    }
ALU_HANDLERS(add, F_ADD)
ALU_HANDLERS(or, F_OR)
ALU_HANDLERS(and, F_AND)
ALU_HANDLERS(sub, F_SUB)
ALU_HANDLERS(xor, F_XOR)
ALU_HANDLERS(cmp, F_CMP)

static void f_test(struct emu_cpu *cpu, const struct insn *in)
{
    alu_rm_reg(cpu, in, F_TEST);
}

/* ---- moves -------------------------------------------------------------------- */

static void f_mov_store(struct emu_cpu *cpu, const struct insn *in) /* 89 */
{
    if (in->mod == 3)
        reg_put(cpu, in->rm, in->opsize, cpu->regs[in->reg]);
    else
        store(cpu, in, in->opsize, reg_val(cpu, in->reg, in->opsize));
}

static void f_mov_load(struct emu_cpu *cpu, const struct insn *in) /* 8b */
{
    reg_put(cpu, in->reg, in->opsize, rm_val(cpu, in, in->opsize));
}

static void f_mov_imm(struct emu_cpu *cpu, const struct insn *in) /* b8+r */
{
    reg_put(cpu, (in->op & 7) | ((in->rex & 1) << 3), in->opsize, in->imm);
}

static void f_mov_rm_imm(struct emu_cpu *cpu, const struct insn *in) /* c7 /0 */
{
    if (in->mod == 3)
        reg_put(cpu, in->rm, in->opsize, in->imm);
    else
        store(cpu, in, in->opsize, in->imm & mask_of(in->opsize));
}

static void f_lea(struct emu_cpu *cpu, const struct insn *in) /* 8d, mod != 3 */
{
    reg_put(cpu, in->reg, in->opsize, fast_ea(cpu, in));
}

static void f_movzx(struct emu_cpu *cpu, const struct insn *in) /* 0f b6 / b7 */
{
    unsigned src = in->op == 0xb6 ? 1 : 2;
    uint64_t v;
    if (in->mod == 3) /* byte registers AH..BH only without REX */
        v = cpu_reg_get(cpu, in->rm, src, in->rex != 0);
    else
        v = load(cpu, in, src);
    reg_put(cpu, in->reg, in->opsize, v);
}

/* ---- control flow (64-bit mode: targets are not truncated) -------------------- */

static void f_jcc8(struct emu_cpu *cpu, const struct insn *in) /* 70-7f */
{
    if (cpu_cond(cpu, in->op & 0xf))
        cpu->rip += (uint64_t)(int64_t)(int8_t)in->imm;
}

static void f_jcc32(struct emu_cpu *cpu, const struct insn *in) /* 0f 80-8f */
{
    if (cpu_cond(cpu, in->op & 0xf))
        cpu->rip += in->imm;
}

static void f_jmp8(struct emu_cpu *cpu, const struct insn *in) /* eb */
{
    cpu->rip += (uint64_t)(int64_t)(int8_t)in->imm;
}

static void f_jmp32(struct emu_cpu *cpu, const struct insn *in) /* e9 */
{
    cpu->rip += in->imm;
}

static void f_call32(struct emu_cpu *cpu, const struct insn *in) /* e8 */
{
    cpu_push(cpu, cpu->rip, 8);
    cpu->rip += in->imm;
}

static void f_ret(struct emu_cpu *cpu, const struct insn *in) /* c3 */
{
    cpu->rip = cpu_pop(cpu, 8);
}

static void f_push(struct emu_cpu *cpu, const struct insn *in) /* 50+r */
{
    cpu_push(cpu, cpu->regs[(in->op & 7) | ((in->rex & 1) << 3)], 8);
}

static void f_pop(struct emu_cpu *cpu, const struct insn *in) /* 58+r */
{
    uint64_t v = cpu_pop(cpu, 8);
    cpu->regs[(in->op & 7) | ((in->rex & 1) << 3)] = v;
}

/* ---- selection ------------------------------------------------------------------ */

typedef void (*fast_fn)(struct emu_cpu *cpu, const struct insn *in);

static fast_fn select_alu(const struct insn *in)
{
    static const fast_fn rm_reg[8] = {f_add_rm_reg, f_or_rm_reg, NULL, NULL,
                                      f_and_rm_reg, f_sub_rm_reg, f_xor_rm_reg, f_cmp_rm_reg};
    static const fast_fn reg_rm[8] = {f_add_reg_rm, f_or_reg_rm, NULL, NULL,
                                      f_and_reg_rm, f_sub_reg_rm, f_xor_reg_rm, f_cmp_reg_rm};
    static const fast_fn imm8[8] = {f_add_imm8, f_or_imm8, NULL, NULL,
                                    f_and_imm8, f_sub_imm8, f_xor_imm8, f_cmp_imm8};
    static const fast_fn imm[8] = {f_add_imm, f_or_imm, NULL, NULL,
                                   f_and_imm, f_sub_imm, f_xor_imm, f_cmp_imm};
    uint8_t op = in->op;
    if (op < 0x40 && (op & 7) == 1)
        return rm_reg[op >> 3];
    if (op < 0x40 && (op & 7) == 3)
        return reg_rm[op >> 3];
    if ((op == 0x81 || op == 0x83) && in->mod == 3)
        return (op == 0x83 ? imm8 : imm)[in->reg & 7];
    return NULL;
}

void cpu_fast_select(const struct emu_cpu *cpu, struct insn *in)
{
    uint8_t op = in->op;
    in->fast = NULL;
    if (!cpu->code64 || in->lock || in->rep || (in->opsize != 4 && in->opsize != 8))
        return;
    if (in->map == 1) {
        if (op >= 0x80 && op <= 0x8f)
            in->fast = f_jcc32;
        else if (op == 0xb6 || op == 0xb7)
            in->fast = f_movzx;
        return;
    }
    if (in->map != 0)
        return;
    if ((in->fast = select_alu(in)))
        return;
    if (op >= 0x70 && op <= 0x7f)
        in->fast = f_jcc8;
    else if (op >= 0xb8 && op <= 0xbf)
        in->fast = f_mov_imm;
    else if (op == 0x85)
        in->fast = f_test;
    else if (op == 0x89)
        in->fast = f_mov_store;
    else if (op == 0x8b)
        in->fast = f_mov_load;
    else if (op == 0x8d && in->mod != 3)
        in->fast = f_lea;
    else if (op == 0xc7 && (in->reg & 7) == 0)
        in->fast = f_mov_rm_imm;
    else if (op == 0xeb)
        in->fast = f_jmp8;
    else if (op == 0xe9)
        in->fast = f_jmp32;
    else if (op == 0xe8 && !in->opsize_prefix)
        in->fast = f_call32;
    else if (op == 0xc3 && !in->opsize_prefix)
        in->fast = f_ret;
    else if (op >= 0x50 && op <= 0x57 && !in->opsize_prefix)
        in->fast = f_push;
    else if (op >= 0x58 && op <= 0x5f && !in->opsize_prefix)
        in->fast = f_pop;
}
