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

typedef void (*fast_fn)(struct emu_cpu *cpu, const struct insn *in);

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

enum { F_ADD, F_OR, F_AND, F_SUB, F_XOR, F_CMP, F_TEST, F_ADC, F_SBB };

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
    case F_ADC: {
        bool cf = cpu_get_cf(cpu);
        r = (a + b + cf) & m;
        cpu->lf_cf = cf;
        cpu_lazy(cpu, LF_ADC, size, r, a, b);
        return r;
    }
    case F_SBB: {
        bool cf = cpu_get_cf(cpu);
        r = (a - b - cf) & m;
        cpu->lf_cf = cf;
        cpu_lazy(cpu, LF_SBB, size, r, a, b);
        return r;
    }
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
ALU_HANDLERS(adc, F_ADC)
ALU_HANDLERS(sbb, F_SBB)

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

/* ---- shifts, multiply, conditional moves ---------------------------------------- */

/* SF/ZF/PF of a result, as exec.c's szp(). */
static inline uint64_t fast_szp(uint64_t r, unsigned size)
{
    uint64_t f = 0;
    r &= mask_of(size);
    if (!r)
        f |= F_ZF;
    if (r >> (size * 8 - 1))
        f |= F_SF;
    if (!(__builtin_popcount((unsigned)(r & 0xff)) & 1))
        f |= F_PF;
    return f;
}

static inline void set_arith_flags(struct emu_cpu *cpu, uint64_t f)
{
    cpu_flags_materialize(cpu);
    cpu->rflags = (cpu->rflags & ~(uint64_t)F_ARITH) | f;
}

/* c1 /4 /5 /7 (shl/shr/sar r, imm8) and d1 (by 1) on a register; flags as
 * exec.c's shift_fn(). A zero count changes nothing (not even flags). */
static inline void shift_reg(struct emu_cpu *cpu, const struct insn *in, unsigned cnt)
{
    unsigned size = in->opsize, bits = size * 8;
    cnt &= size == 8 ? 63 : 31;
    uint64_t a = reg_val(cpu, in->rm, size), r;
    bool cf, of;
    if (cnt == 0) {
        reg_put(cpu, in->rm, size, a); /* a 32-bit register is still zero-extended */
        return;
    }
    switch (in->reg & 7) {
    case 5: /* SHR */
        r = a >> cnt;
        cf = (a >> (cnt - 1)) & 1;
        of = a >> (bits - 1);
        break;
    case 7: { /* SAR */
        int64_t sv = size == 8 ? (int64_t)a : (int64_t)(int32_t)a;
        r = (uint64_t)(sv >> cnt) & mask_of(size);
        cf = (sv >> (cnt - 1)) & 1;
        of = false;
        break;
    }
    default: /* SHL/SAL */
        r = (a << cnt) & mask_of(size);
        cf = (a >> (bits - cnt)) & 1;
        of = (r >> (bits - 1)) ^ cf;
        break;
    }
    set_arith_flags(cpu, fast_szp(r, size) | (cf ? F_CF : 0) | (of ? F_OF : 0));
    reg_put(cpu, in->rm, size, r);
}

static void f_shift_imm(struct emu_cpu *cpu, const struct insn *in)
{
    shift_reg(cpu, in, (unsigned)in->imm);
}

static void f_shift_1(struct emu_cpu *cpu, const struct insn *in)
{
    shift_reg(cpu, in, 1);
}

static void f_shift_cl(struct emu_cpu *cpu, const struct insn *in)
{
    shift_reg(cpu, in, (unsigned)cpu->regs[R_CX] & 0xff);
}

/* imul reg, r/m (0f af); flags as exec.c's imul2(). */
static void f_imul(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = in->opsize;
    uint64_t b = rm_val(cpu, in, size), a = reg_val(cpu, in->reg, size), lo;
    bool ov;
    if (size == 8) {
        __int128 r = (__int128)(int64_t)a * (int64_t)b;
        lo = (uint64_t)r;
        ov = r != (__int128)(int64_t)lo;
    } else {
        int64_t r = (int64_t)(int32_t)a * (int32_t)b;
        lo = (uint64_t)r & 0xffffffffu;
        ov = r != (int64_t)(int32_t)lo;
    }
    set_arith_flags(cpu, (ov ? (F_CF | F_OF) : 0) | fast_szp(lo, size));
    reg_put(cpu, in->reg, size, lo);
}

/* mul r/m (f7 /4): rdx:rax = rax * r/m; flags as exec.c's mul_flags(). */
static void f_mul(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = in->opsize;
    uint64_t src = rm_val(cpu, in, size), lo, hi;
    if (size == 8) {
        unsigned __int128 r = (unsigned __int128)cpu->regs[R_AX] * src;
        lo = (uint64_t)r;
        hi = (uint64_t)(r >> 64);
    } else {
        uint64_t r = (cpu->regs[R_AX] & 0xffffffffu) * src;
        lo = r & 0xffffffffu;
        hi = r >> 32;
    }
    cpu->regs[R_AX] = lo;
    cpu->regs[R_DX] = hi;
    set_arith_flags(cpu, (hi ? (F_CF | F_OF) : 0) | fast_szp(lo, size));
}

static void f_cmov(struct emu_cpu *cpu, const struct insn *in) /* 0f 40-4f: loads either way */
{
    uint64_t v = rm_val(cpu, in, in->opsize);
    if (cpu_cond(cpu, in->op & 0xf))
        reg_put(cpu, in->reg, in->opsize, v);
    else
        reg_put(cpu, in->reg, in->opsize, cpu->regs[in->reg]); /* 32-bit: zero-extends */
}

static void f_movsxd(struct emu_cpu *cpu, const struct insn *in) /* 63 in 64-bit mode */
{
    reg_put(cpu, in->reg, in->opsize, (uint64_t)(int64_t)(int32_t)rm_val(cpu, in, 4));
}

/* inc/dec of a register (ff /0, /1): CF is kept, as exec.c's incdec_fn(). */
static void f_incdec(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = in->opsize;
    bool dec = in->reg & 1;
    uint64_t a = reg_val(cpu, in->rm, size), r = (a + (dec ? -1ull : 1ull)) & mask_of(size);
    cpu->lf_cf = cpu_get_cf(cpu);
    cpu_lazy(cpu, dec ? LF_DEC : LF_INC, size, r, a, 1);
    reg_put(cpu, in->rm, size, r);
}

static void f_nop(struct emu_cpu *cpu, const struct insn *in) /* 0f 1f: hint nop */
{
}

/* ---- byte and word forms: registers through cpu_reg_get/set (AH..BH) ------------ */

static void f_mov_store8(struct emu_cpu *cpu, const struct insn *in) /* 88 */
{
    uint64_t v = cpu_reg_get(cpu, in->reg, 1, in->rex != 0);
    if (in->mod == 3)
        cpu_reg_set(cpu, in->rm, 1, in->rex != 0, v);
    else
        store(cpu, in, 1, v);
}

static void f_mov_load8(struct emu_cpu *cpu, const struct insn *in) /* 8a */
{
    uint64_t v = in->mod == 3 ? cpu_reg_get(cpu, in->rm, 1, in->rex != 0) : load(cpu, in, 1);
    cpu_reg_set(cpu, in->reg, 1, in->rex != 0, v);
}

static void f_mov_store16(struct emu_cpu *cpu, const struct insn *in) /* 66 89 */
{
    uint64_t v = cpu->regs[in->reg] & 0xffff;
    if (in->mod == 3)
        cpu_reg_set(cpu, in->rm, 2, true, v);
    else
        store(cpu, in, 2, v);
}

static void f_mov_load16(struct emu_cpu *cpu, const struct insn *in) /* 66 8b */
{
    uint64_t v = in->mod == 3 ? cpu->regs[in->rm] & 0xffff : load(cpu, in, 2);
    cpu_reg_set(cpu, in->reg, 2, true, v);
}

static void f_setcc(struct emu_cpu *cpu, const struct insn *in) /* 0f 90-9f */
{
    uint64_t v = cpu_cond(cpu, in->op & 0xf);
    if (in->mod == 3)
        cpu_reg_set(cpu, in->rm, 1, in->rex != 0, v);
    else
        store(cpu, in, 1, v);
}

/* cmp r/m8, imm8 (80 /7): no write, so no read-modify-write fault subtleties */
static void f_cmp8_imm(struct emu_cpu *cpu, const struct insn *in)
{
    uint64_t a = in->mod == 3 ? cpu_reg_get(cpu, in->rm, 1, in->rex != 0) : load(cpu, in, 1);
    uint64_t b = in->imm & 0xff;
    cpu_lazy(cpu, LF_SUB, 1, (a - b) & 0xff, a, b);
}

/* Forms whose operand size is fixed by the opcode (byte) or 16-bit moves. */
static fast_fn select_small(const struct insn *in)
{
    uint8_t op = in->op;
    if (in->map == 1)
        return op >= 0x90 && op <= 0x9f ? f_setcc : NULL;
    if (in->map != 0)
        return NULL;
    switch (op) {
    case 0x88: return f_mov_store8;
    case 0x8a: return f_mov_load8;
    case 0x80: return (in->reg & 7) == 7 ? f_cmp8_imm : NULL;
    case 0x89: return in->opsize == 2 ? f_mov_store16 : NULL;
    case 0x8b: return in->opsize == 2 ? f_mov_load16 : NULL;
    }
    return NULL;
}

/* ---- selection ------------------------------------------------------------------ */

static fast_fn select_alu(const struct insn *in)
{
    static const fast_fn rm_reg[8] = {f_add_rm_reg, f_or_rm_reg, f_adc_rm_reg, f_sbb_rm_reg,
                                      f_and_rm_reg, f_sub_rm_reg, f_xor_rm_reg, f_cmp_rm_reg};
    static const fast_fn reg_rm[8] = {f_add_reg_rm, f_or_reg_rm, f_adc_reg_rm, f_sbb_reg_rm,
                                      f_and_reg_rm, f_sub_reg_rm, f_xor_reg_rm, f_cmp_reg_rm};
    static const fast_fn imm8[8] = {f_add_imm8, f_or_imm8, f_adc_imm8, f_sbb_imm8,
                                    f_and_imm8, f_sub_imm8, f_xor_imm8, f_cmp_imm8};
    static const fast_fn imm[8] = {f_add_imm, f_or_imm, f_adc_imm, f_sbb_imm,
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
    if (!cpu->code64 || in->lock || in->rep)
        return;
    if ((in->fast = select_small(in)))
        return;
    if (in->opsize != 4 && in->opsize != 8)
        return;
    if (in->map == 1) {
        if (op >= 0x80 && op <= 0x8f)
            in->fast = f_jcc32;
        else if (op == 0xb6 || op == 0xb7)
            in->fast = f_movzx;
        else if (op == 0xaf)
            in->fast = f_imul;
        else if (op >= 0x40 && op <= 0x4f)
            in->fast = f_cmov;
        else if (op == 0x1f)
            in->fast = f_nop;
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
    else if (op == 0x63)
        in->fast = f_movsxd;
    else if (op == 0xf7 && (in->reg & 7) == 4)
        in->fast = f_mul;
    else if (op == 0xff && in->mod == 3 && (in->reg & 7) <= 1)
        in->fast = f_incdec;
    else if (in->mod == 3 && (op == 0xc1 || op == 0xd1 || op == 0xd3) &&
             ((in->reg & 7) == 4 || (in->reg & 7) == 5 || (in->reg & 7) == 7))
        in->fast = op == 0xc1 ? f_shift_imm : op == 0xd1 ? f_shift_1 : f_shift_cl;
}
