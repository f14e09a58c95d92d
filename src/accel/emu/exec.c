/* The integer interpreter: executes one decoded instruction (one-byte map
 * and the integer part of the 0F map). System instructions live in
 * exec_sys.c, SSE and x87 in fpu_sse.c / fpu_x87.c. */
#include <string.h>

#include "accel/emu/cpu_internal.h"

/* ---- operand helpers ---- */

static bool has_rex(const struct insn *in)
{
    return in->rex != 0;
}

static uint64_t rm_read(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    if (in->mod == 3)
        return cpu_reg_get(cpu, in->rm, size, has_rex(in));
    return cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size);
}

static void rm_write(struct emu_cpu *cpu, const struct insn *in, unsigned size, uint64_t v)
{
    if (in->mod == 3)
        cpu_reg_set(cpu, in->rm, size, has_rex(in), v);
    else
        cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), v, size);
}

static uint64_t reg_read(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    return cpu_reg_get(cpu, in->reg, size, has_rex(in));
}

static void reg_write(struct emu_cpu *cpu, const struct insn *in, unsigned size, uint64_t v)
{
    cpu_reg_set(cpu, in->reg, size, has_rex(in), v);
}

/* Operand size of stack operations: 64-bit mode defaults to 8 (66 -> 2). */
static unsigned stack_size(const struct emu_cpu *cpu, const struct insn *in)
{
    if (cpu->code64)
        return in->opsize_prefix ? 2 : 8;
    return in->opsize;
}

static void jump(struct emu_cpu *cpu, const struct insn *in, uint64_t target)
{
    if (cpu->code64)
        cpu->rip = target;
    else
        cpu->rip = target & size_mask(in->opsize);
}

/* Read-modify-write of the r/m operand; LOCK (or XCHG) on RAM uses host
 * atomics so that other vCPUs see one indivisible update. Returns the old value. */
typedef uint64_t (*rmw_fn)(struct emu_cpu *cpu, uint64_t old, const void *ctx);

static bool cas(void *p, unsigned size, uint64_t *expected, uint64_t desired)
{
    switch (size) {
    case 1: {
        uint8_t e = (uint8_t)*expected;
        bool ok = __atomic_compare_exchange_n((uint8_t *)p, &e, (uint8_t)desired, false,
                                              __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        *expected = e;
        return ok;
    }
    case 2: {
        uint16_t e = (uint16_t)*expected;
        bool ok = __atomic_compare_exchange_n((uint16_t *)p, &e, (uint16_t)desired, false,
                                              __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        *expected = e;
        return ok;
    }
    case 4: {
        uint32_t e = (uint32_t)*expected;
        bool ok = __atomic_compare_exchange_n((uint32_t *)p, &e, (uint32_t)desired, false,
                                              __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        *expected = e;
        return ok;
    }
    default:
        return __atomic_compare_exchange_n((uint64_t *)p, expected, desired, false,
                                           __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
}

static uint64_t atomic_load_sized(void *p, unsigned size)
{
    switch (size) {
    case 1: return __atomic_load_n((uint8_t *)p, __ATOMIC_SEQ_CST);
    case 2: return __atomic_load_n((uint16_t *)p, __ATOMIC_SEQ_CST);
    case 4: return __atomic_load_n((uint32_t *)p, __ATOMIC_SEQ_CST);
    default: return __atomic_load_n((uint64_t *)p, __ATOMIC_SEQ_CST);
    }
}

static uint64_t rmw(struct emu_cpu *cpu, const struct insn *in, unsigned size, bool atomic,
                    rmw_fn fn, const void *ctx)
{
    if (in->mod == 3) {
        uint64_t old = cpu_reg_get(cpu, in->rm, size, has_rex(in));
        cpu_reg_set(cpu, in->rm, size, has_rex(in), fn(cpu, old, ctx));
        return old;
    }
    bool user = cpu->cpl == 3;
    uint64_t lin = cpu_lin(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size, ACC_WRITE);
    if (atomic || in->lock) {
        void *p = mmu_rmw_ptr(cpu, lin, size, user);
        if (p) {
            uint64_t old = atomic_load_sized(p, size);
            for (;;) {
                uint64_t nv = fn(cpu, old, ctx);
                if (cas(p, size, &old, nv))
                    return old;
            }
        }
    }
    uint64_t old = mmu_read_lin(cpu, lin, size, ACC_WRITE, user);
    mmu_write_lin(cpu, lin, fn(cpu, old, ctx), size, user);
    return old;
}

/* ---- ALU ---- */

enum { ALU_ADD, ALU_OR, ALU_ADC, ALU_SBB, ALU_AND, ALU_SUB, ALU_XOR, ALU_CMP };

static uint64_t alu(struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, uint64_t b,
                    bool cf)
{
    uint64_t m = size_mask(size), r;
    a &= m;
    b &= m;
    switch (op) {
    case ALU_ADD:
        r = (a + b) & m;
        cpu_lazy(cpu, LF_ADD, size, r, a, b);
        return r;
    case ALU_OR:
        r = a | b;
        cpu_lazy(cpu, LF_LOGIC, size, r, a, b);
        return r;
    case ALU_ADC:
        r = (a + b + cf) & m;
        cpu->lf_cf = cf;
        cpu_lazy(cpu, LF_ADC, size, r, a, b);
        return r;
    case ALU_SBB:
        r = (a - b - cf) & m;
        cpu->lf_cf = cf;
        cpu_lazy(cpu, LF_SBB, size, r, a, b);
        return r;
    case ALU_AND:
        r = a & b;
        cpu_lazy(cpu, LF_LOGIC, size, r, a, b);
        return r;
    case ALU_XOR:
        r = a ^ b;
        cpu_lazy(cpu, LF_LOGIC, size, r, a, b);
        return r;
    default: /* SUB, CMP */
        r = (a - b) & m;
        cpu_lazy(cpu, LF_SUB, size, r, a, b);
        return r;
    }
}

struct alu_ctx {
    unsigned op, size;
    uint64_t b;
    bool cf;
};

static uint64_t alu_rmw_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct alu_ctx *x = c;
    return alu(cpu, x->op, x->size, old, x->b, x->cf);
}

static void alu_rm(struct emu_cpu *cpu, const struct insn *in, unsigned op, unsigned size,
                   uint64_t b)
{
    if (op == ALU_CMP) {
        alu(cpu, op, size, rm_read(cpu, in, size), b, false);
        return;
    }
    struct alu_ctx x = {op, size, b, (op == ALU_ADC || op == ALU_SBB) ? cpu_get_cf(cpu) : false};
    rmw(cpu, in, size, false, alu_rmw_fn, &x);
}

static uint64_t incdec_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct alu_ctx *x = c;
    uint64_t r = (old + (x->op ? -1ull : 1ull)) & size_mask(x->size);
    cpu->lf_cf = x->cf;
    cpu_lazy(cpu, x->op ? LF_DEC : LF_INC, x->size, r, old, 1);
    return r;
}

static void incdec_rm(struct emu_cpu *cpu, const struct insn *in, unsigned size, bool dec)
{
    struct alu_ctx x = {dec, size, 1, cpu_get_cf(cpu)};
    rmw(cpu, in, size, false, incdec_fn, &x);
}

static uint64_t neg_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct alu_ctx *x = c;
    return alu(cpu, ALU_SUB, x->size, 0, old, false);
}

static uint64_t not_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct alu_ctx *x = c;
    return ~old & size_mask(x->size);
}

/* Sets SF/ZF/PF from a result into materialized flags. */
static uint64_t szp(uint64_t r, unsigned size)
{
    uint64_t f = 0;
    r &= size_mask(size);
    if (!r)
        f |= F_ZF;
    if (r & sign_bit(size))
        f |= F_SF;
    if (!(__builtin_popcount((unsigned)(r & 0xff)) & 1))
        f |= F_PF;
    return f;
}

static void set_arith(struct emu_cpu *cpu, uint64_t mask, uint64_t val)
{
    cpu_flags_materialize(cpu);
    cpu->rflags = (cpu->rflags & ~mask) | (val & mask);
}

/* ---- shifts and rotates ---- */

struct shift_ctx {
    unsigned op, size, count;
};

static uint64_t shift_fn(struct emu_cpu *cpu, uint64_t a, const void *ctx)
{
    const struct shift_ctx *x = ctx;
    unsigned size = x->size, bits = size * 8, cnt = x->count;
    uint64_t m = size_mask(size), sb = sign_bit(size), r = a & m;
    bool cf, of;
    a &= m;
    if (cnt == 0)
        return a;
    cpu_flags_materialize(cpu);
    uint64_t f = cpu->rflags;
    switch (x->op) {
    case 0: { /* ROL */
        unsigned c = cnt % bits;
        r = c ? ((a << c) | (a >> (bits - c))) & m : a;
        cf = r & 1;
        of = !!(r & sb) ^ cf;
        f = (f & ~(uint64_t)(F_CF | F_OF)) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    }
    case 1: { /* ROR */
        unsigned c = cnt % bits;
        r = c ? ((a >> c) | (a << (bits - c))) & m : a;
        cf = !!(r & sb);
        of = cf ^ !!(r & (sb >> 1));
        f = (f & ~(uint64_t)(F_CF | F_OF)) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    }
    case 2: { /* RCL */
        unsigned c = cnt % (bits + 1);
        cf = f & F_CF;
        for (unsigned i = 0; i < c; i++) {
            bool out = r & sb;
            r = ((r << 1) | cf) & m;
            cf = out;
        }
        of = !!(r & sb) ^ cf;
        f = (f & ~(uint64_t)(F_CF | F_OF)) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    }
    case 3: { /* RCR */
        unsigned c = cnt % (bits + 1);
        cf = f & F_CF;
        of = !!(a & sb) ^ cf;
        for (unsigned i = 0; i < c; i++) {
            bool out = r & 1;
            r = (r >> 1) | (cf ? sb : 0);
            cf = out;
        }
        f = (f & ~(uint64_t)(F_CF | F_OF)) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    }
    case 4: case 6: /* SHL/SAL */
        r = cnt < 64 ? (a << cnt) & m : 0;
        cf = cnt <= bits ? (a >> (bits - cnt)) & 1 : 0;
        of = !!(r & sb) ^ cf;
        f = (f & ~(uint64_t)F_ARITH) | szp(r, size) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    case 5: /* SHR */
        r = cnt < 64 ? a >> cnt : 0;
        cf = cnt <= 64 ? (a >> (cnt - 1)) & 1 : 0;
        of = !!(a & sb);
        f = (f & ~(uint64_t)F_ARITH) | szp(r, size) | (cf ? F_CF : 0) | (of ? F_OF : 0);
        break;
    default: { /* SAR */
        int64_t s = sext(a, size);
        unsigned c = cnt > 63 ? 63 : cnt;
        r = (uint64_t)(s >> c) & m;
        cf = (s >> (c - 1)) & 1;
        f = (f & ~(uint64_t)F_ARITH) | szp(r, size) | (cf ? F_CF : 0);
        break;
    }
    }
    cpu->rflags = f;
    return r;
}

static void shift_rm(struct emu_cpu *cpu, const struct insn *in, unsigned size, unsigned count)
{
    struct shift_ctx x = {in->reg & 7, size, count & (size == 8 ? 63 : 31)};
    if (x.count == 0) {
        uint64_t v = rm_read(cpu, in, size); /* still faults on a bad address */
        if (in->mod == 3 && size == 4)
            rm_write(cpu, in, 4, v); /* and still zero-extends a 32-bit register */
        return;
    }
    rmw(cpu, in, size, false, shift_fn, &x);
}

struct shd_ctx {
    unsigned size, count;
    uint64_t src;
    bool right;
};

static uint64_t shd_fn(struct emu_cpu *cpu, uint64_t a, const void *c)
{
    const struct shd_ctx *x = c;
    unsigned bits = x->size * 8, cnt = x->count;
    uint64_t m = size_mask(x->size), sb = sign_bit(x->size), r;
    bool cf;
    a &= m;
    uint64_t s = x->src & m;
    if (cnt == 0)
        return a;
    if (x->size == 2 && cnt > 16) {
        /* 16-bit with count > 16: undefined; model as a 32-bit shift of a:src. */
        unsigned __int128 v = x->right ? ((unsigned __int128)s << 16 | a | (unsigned __int128)a << 32)
                                       : ((unsigned __int128)a << 32 | (unsigned __int128)s << 16 | a);
        if (x->right) {
            r = (uint64_t)(v >> cnt) & m;
            cf = (v >> (cnt - 1)) & 1;
        } else {
            r = (uint64_t)(v >> (48 - cnt)) & m;
            cf = (v >> (48 - cnt + 16)) & 1;
        }
    } else if (x->right) {
        r = ((a >> cnt) | (s << (bits - cnt))) & m;
        cf = (a >> (cnt - 1)) & 1;
    } else {
        r = ((a << cnt) | (s >> (bits - cnt))) & m;
        cf = (a >> (bits - cnt)) & 1;
    }
    bool of = !!((r ^ a) & sb);
    cpu_flags_materialize(cpu);
    cpu->rflags = (cpu->rflags & ~(uint64_t)F_ARITH) | szp(r, x->size) | (cf ? F_CF : 0) |
                  (of ? F_OF : 0);
    return r;
}

/* ---- multiply / divide ---- */

static void mul_flags(struct emu_cpu *cpu, bool overflow, uint64_t lo, unsigned size)
{
    set_arith(cpu, F_ARITH, (overflow ? (F_CF | F_OF) : 0) | szp(lo, size));
}

static void group3_muldiv(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    uint64_t src = rm_read(cpu, in, size), m = size_mask(size);
    unsigned op = in->reg & 7, bits = size * 8;
    bool rex = has_rex(in);
    if (size == 1) {
        uint64_t al = cpu->regs[R_AX] & 0xff, ax = cpu->regs[R_AX] & 0xffff;
        switch (op) {
        case 4: {
            uint64_t r = al * src;
            cpu_reg_set(cpu, R_AX, 2, rex, r);
            mul_flags(cpu, r >> 8, r, 1);
            return;
        }
        case 5: {
            int64_t r = (int64_t)(int8_t)al * (int8_t)src;
            cpu_reg_set(cpu, R_AX, 2, rex, (uint64_t)r);
            mul_flags(cpu, r != (int8_t)r, (uint64_t)r, 1);
            return;
        }
        case 6: {
            if (!src)
                cpu_raise(cpu, EXC_DE, false, 0);
            uint64_t q = ax / src;
            if (q > 0xff)
                cpu_raise(cpu, EXC_DE, false, 0);
            cpu_reg_set(cpu, R_AX, 2, rex, ((ax % src) << 8) | q);
            return;
        }
        default: {
            int64_t d = (int16_t)ax, s = (int8_t)src;
            if (!s)
                cpu_raise(cpu, EXC_DE, false, 0);
            int64_t q = d / s;
            if (q != (int8_t)q)
                cpu_raise(cpu, EXC_DE, false, 0);
            cpu_reg_set(cpu, R_AX, 2, rex, ((uint64_t)(d % s) & 0xff) << 8 | ((uint64_t)q & 0xff));
            return;
        }
        }
    }
    uint64_t a = cpu->regs[R_AX] & m, d = cpu->regs[R_DX] & m;
    switch (op) {
    case 4: {
        unsigned __int128 r = (unsigned __int128)a * src;
        uint64_t lo = (uint64_t)r & m, hi = (uint64_t)(r >> bits) & m;
        cpu_reg_set(cpu, R_AX, size, rex, lo);
        cpu_reg_set(cpu, R_DX, size, rex, hi);
        mul_flags(cpu, hi != 0, lo, size);
        return;
    }
    case 5: {
        __int128 r = (__int128)sext(a, size) * sext(src, size);
        uint64_t lo = (uint64_t)r & m, hi = (uint64_t)(r >> bits) & m;
        cpu_reg_set(cpu, R_AX, size, rex, lo);
        cpu_reg_set(cpu, R_DX, size, rex, hi);
        mul_flags(cpu, r != (__int128)sext(lo, size), lo, size);
        return;
    }
    case 6: {
        if (!src)
            cpu_raise(cpu, EXC_DE, false, 0);
        unsigned __int128 n = ((unsigned __int128)d << bits) | a;
        unsigned __int128 q = n / src;
        if (q > m)
            cpu_raise(cpu, EXC_DE, false, 0);
        cpu_reg_set(cpu, R_AX, size, rex, (uint64_t)q);
        cpu_reg_set(cpu, R_DX, size, rex, (uint64_t)(n % src));
        return;
    }
    default: {
        __int128 n = (__int128)(((unsigned __int128)d << bits) | a);
        if (bits < 64)
            n = (__int128)sext((uint64_t)n, size * 2);
        else
            n = (__int128)(((unsigned __int128)d << 64) | a);
        __int128 s = sext(src, size);
        if (!s)
            cpu_raise(cpu, EXC_DE, false, 0);
        if (bits == 64 && s == -1 && n == (__int128)((unsigned __int128)1 << 127))
            cpu_raise(cpu, EXC_DE, false, 0);
        __int128 q = n / s, r = n % s;
        if (q != (__int128)sext((uint64_t)q & m, size))
            cpu_raise(cpu, EXC_DE, false, 0);
        cpu_reg_set(cpu, R_AX, size, rex, (uint64_t)q & m);
        cpu_reg_set(cpu, R_DX, size, rex, (uint64_t)r & m);
        return;
    }
    }
}

static uint64_t imul2(struct emu_cpu *cpu, unsigned size, uint64_t a, uint64_t b)
{
    __int128 r = (__int128)sext(a, size) * sext(b, size);
    uint64_t lo = (uint64_t)r & size_mask(size);
    mul_flags(cpu, r != (__int128)sext(lo, size), lo, size);
    return lo;
}

/* ---- bit tests ---- */

struct bt_ctx {
    unsigned op; /* 4 bt, 5 bts, 6 btr, 7 btc */
    unsigned bit;
};

static uint64_t bt_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct bt_ctx *x = c;
    uint64_t b = 1ull << x->bit;
    set_arith(cpu, F_CF, (old & b) ? F_CF : 0);
    switch (x->op) {
    case 5: return old | b;
    case 6: return old & ~b;
    case 7: return old ^ b;
    }
    return old;
}

static void bit_test(struct emu_cpu *cpu, const struct insn *in, unsigned op, uint64_t off,
                     bool reg_offset)
{
    unsigned size = in->opsize, bits = size * 8;
    struct bt_ctx x = {op, (unsigned)(off & (bits - 1))};
    if (in->mod == 3 || !reg_offset) {
        if (op == 4) {
            bt_fn(cpu, rm_read(cpu, in, size), &x);
            return;
        }
        rmw(cpu, in, size, false, bt_fn, &x);
        return;
    }
    /* Register bit offset into memory: signed, may address outside the operand. */
    struct insn m = *in;
    int64_t so = sext(off, size);
    m.disp += (so >> (size == 8 ? 6 : size == 4 ? 5 : 4)) * (int64_t)size;
    if (op == 4) {
        bt_fn(cpu, rm_read(cpu, &m, size), &x);
        return;
    }
    rmw(cpu, &m, size, false, bt_fn, &x);
}

/* ---- string instructions ---- */

static uint64_t addr_mask(const struct insn *in)
{
    return size_mask(in->addrsize);
}

static uint64_t areg(struct emu_cpu *cpu, const struct insn *in, int r)
{
    return cpu->regs[r] & addr_mask(in);
}

static void areg_add(struct emu_cpu *cpu, const struct insn *in, int r, int64_t d)
{
    uint64_t m = addr_mask(in);
    uint64_t v = (cpu->regs[r] + (uint64_t)d) & m;
    if (in->addrsize == 4)
        cpu->regs[r] = v;
    else
        cpu->regs[r] = (cpu->regs[r] & ~m) | v;
}

static unsigned string_size(const struct insn *in)
{
    return (in->op & 1) ? in->opsize : 1;
}

static void port_check(struct emu_cpu *cpu)
{
    if (!cpu_in_real_mode(cpu) && cpu->cpl > ((cpu->rflags >> 12) & 3))
        cpu_raise_gp(cpu, 0); /* the TSS I/O permission bitmap is not consulted */
}

static uint32_t port_in(struct emu_cpu *cpu, uint16_t port, unsigned size)
{
    port_check(cpu);
    if (!cpu->ops || !cpu->ops->pio_read)
        return (uint32_t)size_mask(size);
    return cpu->ops->pio_read(cpu->ops->opaque, cpu, port, size) & (uint32_t)size_mask(size);
}

static void port_out(struct emu_cpu *cpu, uint16_t port, uint32_t v, unsigned size)
{
    port_check(cpu);
    if (cpu->ops && cpu->ops->pio_write)
        cpu->ops->pio_write(cpu->ops->opaque, cpu, port, v & (uint32_t)size_mask(size), size);
}

/* One iteration; returns false when a REPE/REPNE condition ends the loop. */
static bool string_once(struct emu_cpu *cpu, const struct insn *in, unsigned size, int64_t step)
{
    int src_seg = in->seg != S_NONE ? in->seg : S_DS;
    switch (in->op) {
    case 0xa4: case 0xa5: {
        uint64_t v = cpu_read(cpu, src_seg, areg(cpu, in, R_SI), size);
        cpu_write(cpu, S_ES, areg(cpu, in, R_DI), v, size);
        areg_add(cpu, in, R_SI, step);
        areg_add(cpu, in, R_DI, step);
        return true;
    }
    case 0xa6: case 0xa7: {
        uint64_t a = cpu_read(cpu, src_seg, areg(cpu, in, R_SI), size);
        uint64_t b = cpu_read(cpu, S_ES, areg(cpu, in, R_DI), size);
        alu(cpu, ALU_CMP, size, a, b, false);
        areg_add(cpu, in, R_SI, step);
        areg_add(cpu, in, R_DI, step);
        return true;
    }
    case 0xaa: case 0xab:
        cpu_write(cpu, S_ES, areg(cpu, in, R_DI), cpu->regs[R_AX], size);
        areg_add(cpu, in, R_DI, step);
        return true;
    case 0xac: case 0xad:
        cpu_reg_set(cpu, R_AX, size, true, cpu_read(cpu, src_seg, areg(cpu, in, R_SI), size));
        areg_add(cpu, in, R_SI, step);
        return true;
    case 0xae: case 0xaf: {
        uint64_t b = cpu_read(cpu, S_ES, areg(cpu, in, R_DI), size);
        alu(cpu, ALU_CMP, size, cpu->regs[R_AX], b, false);
        areg_add(cpu, in, R_DI, step);
        return true;
    }
    case 0x6c: case 0x6d: {
        /* Check the destination before the port read has side effects. */
        uint64_t lin = cpu_lin(cpu, S_ES, areg(cpu, in, R_DI), size, ACC_WRITE);
        mmu_translate(cpu, lin, ACC_WRITE, cpu->cpl == 3);
        uint32_t v = port_in(cpu, (uint16_t)cpu->regs[R_DX], size);
        cpu_write(cpu, S_ES, areg(cpu, in, R_DI), v, size);
        areg_add(cpu, in, R_DI, step);
        return true;
    }
    default: { /* 6e/6f outs */
        uint64_t v = cpu_read(cpu, src_seg, areg(cpu, in, R_SI), size);
        port_out(cpu, (uint16_t)cpu->regs[R_DX], (uint32_t)v, size);
        areg_add(cpu, in, R_SI, step);
        return true;
    }
    }
}

static void string_op(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = string_size(in);
    int64_t step = (cpu->rflags & F_DF) ? -(int64_t)size : (int64_t)size;
    bool cmp = (in->op >= 0xa6 && in->op <= 0xa7) || in->op >= 0xae;
    if (!in->rep) {
        string_once(cpu, in, size, step);
        return;
    }
    /* Bounded chunks: the instruction restarts itself so interrupts and
     * *stop are seen during long REP loops. */
    for (unsigned n = 0; n < 4096; n++) {
        if (areg(cpu, in, R_CX) == 0)
            return;
        string_once(cpu, in, size, step);
        areg_add(cpu, in, R_CX, -1);
        if (cmp) {
            bool zf = cpu_cond(cpu, 4);
            if ((in->rep == 0xf3 && !zf) || (in->rep == 0xf2 && zf))
                return;
        }
    }
    if (areg(cpu, in, R_CX) != 0)
        cpu->rip = in->start;
}

/* ---- flags instructions ---- */

static void popf(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = stack_size(cpu, in);
    uint64_t cur = cpu_get_rflags(cpu);
    uint64_t changeable = F_ARITH | F_TF | F_DF | F_NT | F_AC | F_ID | F_IF | F_IOPL;
    if (!cpu_in_real_mode(cpu)) {
        unsigned iopl = (cur >> 12) & 3;
        if (cpu->cpl > 0)
            changeable &= ~(uint64_t)F_IOPL;
        if (cpu->cpl > iopl)
            changeable &= ~(uint64_t)F_IF;
    }
    if (size == 2)
        changeable &= 0xffff;
    uint64_t v = cpu_pop(cpu, size);
    bool was_if = cur & F_IF;
    cpu_set_rflags(cpu, (cur & ~changeable) | (v & changeable));
    if (!was_if && (cpu->rflags & F_IF)) {
        cpu->shadow = false; /* POPF has no interrupt shadow */
    }
}

static void cli_sti(struct emu_cpu *cpu, const struct insn *in, bool set)
{
    if (!cpu_in_real_mode(cpu) && cpu->cpl > ((cpu->rflags >> 12) & 3))
        cpu_raise_gp(cpu, 0);
    if (set) {
        if (!(cpu->rflags & F_IF)) {
            cpu->shadow = true;
            cpu->shadow_rip = in->start + in->len;
        }
        cpu->rflags |= F_IF;
    } else {
        cpu->rflags &= ~(uint64_t)F_IF;
    }
}

static void mov_to_sreg(struct emu_cpu *cpu, const struct insn *in, int sreg, uint16_t v)
{
    if (sreg == S_CS || sreg > S_GS)
        cpu_raise_ud(cpu);
    cpu_load_seg(cpu, sreg, v);
    if (sreg == S_SS) {
        cpu->shadow = true;
        cpu->shadow_rip = in->start + in->len;
    }
}

/* ---- BCD (legacy modes only) ---- */

static void bcd_adjust(struct emu_cpu *cpu, const struct insn *in)
{
    uint64_t f = cpu_get_rflags(cpu);
    uint8_t al = (uint8_t)cpu->regs[R_AX], old_al = al;
    bool cf = f & F_CF, af = f & F_AF;
    switch (in->op) {
    case 0x27: /* DAA */
    case 0x2f: /* DAS */ {
        bool sub = in->op == 0x2f;
        bool ncf = false;
        if ((al & 0xf) > 9 || af) {
            ncf = cf || (sub ? al < 6 : al > 0xf9);
            al = (uint8_t)(sub ? al - 6 : al + 6);
            af = true;
        } else {
            af = false;
        }
        if (old_al > 0x99 || cf) {
            al = (uint8_t)(sub ? al - 0x60 : al + 0x60);
            ncf = true;
        }
        cpu_reg_set(cpu, R_AX, 1, false, al);
        f = (f & ~(uint64_t)F_ARITH) | szp(al, 1) | (ncf ? F_CF : 0) | (af ? F_AF : 0);
        break;
    }
    case 0x37: /* AAA */
    case 0x3f: /* AAS */ {
        uint16_t ax = (uint16_t)cpu->regs[R_AX];
        if ((al & 0xf) > 9 || af) {
            ax = in->op == 0x37 ? (uint16_t)(ax + 0x106) : (uint16_t)(ax - 6 - 0x100);
            af = cf = true;
        } else {
            af = cf = false;
        }
        ax &= 0xff0f;
        cpu_reg_set(cpu, R_AX, 2, false, ax);
        f = (f & ~(uint64_t)F_ARITH) | szp(ax & 0xff, 1) | (cf ? F_CF : 0) | (af ? F_AF : 0);
        break;
    }
    case 0xd4: { /* AAM */
        uint8_t base = (uint8_t)in->imm;
        if (!base)
            cpu_raise(cpu, EXC_DE, false, 0);
        uint8_t ah = al / base;
        al = al % base;
        cpu_reg_set(cpu, R_AX, 2, false, (uint16_t)(ah << 8 | al));
        f = (f & ~(uint64_t)F_ARITH) | szp(al, 1);
        break;
    }
    default: { /* D5 AAD */
        uint8_t ah = (uint8_t)(cpu->regs[R_AX] >> 8);
        al = (uint8_t)(al + ah * (uint8_t)in->imm);
        cpu_reg_set(cpu, R_AX, 2, false, al);
        f = (f & ~(uint64_t)F_ARITH) | szp(al, 1);
        break;
    }
    }
    cpu_set_rflags(cpu, f);
}

/* ---- the one-byte map ---- */

static void exec_enter(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = stack_size(cpu, in);
    unsigned level = in->imm2 & 31;
    uint64_t mask = cpu_stack_mask(cpu);
    cpu_push(cpu, cpu->regs[R_BP], size);
    uint64_t frame = cpu->regs[R_SP] & mask;
    uint64_t bp = cpu->regs[R_BP];
    for (unsigned i = 1; i < level; i++) {
        bp = (bp - size) & mask;
        cpu_push(cpu, cpu_read(cpu, S_SS, bp, size), size);
    }
    if (level)
        cpu_push(cpu, frame, size);
    uint64_t sp = (cpu->regs[R_SP] - in->imm) & mask;
    cpu_write(cpu, S_SS, sp, 0, 1); /* probe: #SS/#PF before committing */
    cpu_reg_set(cpu, R_BP, mask == 0xffff ? 2 : size, true, frame);
    cpu->regs[R_SP] = (cpu->regs[R_SP] & ~mask) | sp;
}

static void exec_group5(struct emu_cpu *cpu, const struct insn *in, uint64_t next)
{
    unsigned size = in->opsize;
    switch (in->reg & 7) {
    case 0: incdec_rm(cpu, in, size, false); return;
    case 1: incdec_rm(cpu, in, size, true); return;
    case 2: { /* call near indirect */
        unsigned ss = cpu->code64 ? 8 : size;
        uint64_t t = rm_read(cpu, in, ss);
        cpu_push(cpu, next, ss);
        jump(cpu, in, t);
        return;
    }
    case 4: { /* jmp near indirect */
        unsigned ss = cpu->code64 ? 8 : size;
        jump(cpu, in, rm_read(cpu, in, ss));
        return;
    }
    case 3: case 5: { /* call/jmp far m16:16/32/64 */
        if (in->mod == 3)
            cpu_raise_ud(cpu);
        uint64_t ea = cpu_ea(cpu, in);
        int seg = cpu_ea_seg(in);
        uint64_t off = cpu_read(cpu, seg, ea, size);
        uint16_t sel = (uint16_t)cpu_read(cpu, seg, (ea + size) & addr_mask(in), 2);
        cpu_far_jump(cpu, sel, off, (in->reg & 7) == 3, (uint8_t)size, next);
        return;
    }
    case 6: {
        unsigned ss = stack_size(cpu, in);
        cpu_push(cpu, rm_read(cpu, in, ss), ss);
        return;
    }
    default:
        cpu_raise_ud(cpu);
    }
}

static uint64_t xchg_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    (void)cpu;
    (void)old;
    return *(const uint64_t *)c;
}

static void exec_1byte(struct emu_cpu *cpu, struct insn *in)
{
    uint8_t op = in->op;
    unsigned size = in->opsize;
    uint64_t next = cpu->rip;
    bool rex = has_rex(in);
    bool legacy = !cpu->code64;

    if (op < 0x40 && (op & 7) < 6) {
        unsigned aop = op >> 3;
        switch (op & 7) {
        case 0: alu_rm(cpu, in, aop, 1, reg_read(cpu, in, 1)); return;
        case 1: alu_rm(cpu, in, aop, size, reg_read(cpu, in, size)); return;
        case 2: case 3: {
            unsigned s = (op & 7) == 2 ? 1 : size;
            uint64_t b = rm_read(cpu, in, s);
            bool cf = (aop == ALU_ADC || aop == ALU_SBB) ? cpu_get_cf(cpu) : false;
            uint64_t r = alu(cpu, aop, s, reg_read(cpu, in, s), b, cf);
            if (aop != ALU_CMP)
                reg_write(cpu, in, s, r);
            return;
        }
        default: {
            unsigned s = (op & 7) == 4 ? 1 : size;
            bool cf = (aop == ALU_ADC || aop == ALU_SBB) ? cpu_get_cf(cpu) : false;
            uint64_t r = alu(cpu, aop, s, cpu->regs[R_AX], in->imm, cf);
            if (aop != ALU_CMP)
                cpu_reg_set(cpu, R_AX, s, true, r);
            return;
        }
        }
    }

    switch (op) {
    case 0x06: case 0x0e: case 0x16: case 0x1e: /* push es/cs/ss/ds */
        if (!legacy)
            cpu_raise_ud(cpu);
        cpu_push(cpu, cpu->seg[op >> 3].sel, size);
        return;
    case 0x07: case 0x17: case 0x1f: { /* pop es/ss/ds */
        if (!legacy)
            cpu_raise_ud(cpu);
        uint64_t sp = cpu->regs[R_SP];
        uint16_t v = (uint16_t)cpu_pop(cpu, size);
        cpu->regs[R_SP] = sp; /* restore for the fault case; redo after the load */
        mov_to_sreg(cpu, in, op >> 3, v);
        cpu_pop(cpu, size);
        return;
    }
    case 0x27: case 0x2f: case 0x37: case 0x3f:
        if (!legacy)
            cpu_raise_ud(cpu);
        bcd_adjust(cpu, in);
        return;
    }

    if (op >= 0x40 && op <= 0x4f) { /* inc/dec r (legacy modes; REX in 64-bit) */
        int r = op & 7;
        bool dec = op >= 0x48;
        uint64_t a = cpu_reg_get(cpu, r, size, true);
        uint64_t res = (a + (dec ? -1ull : 1ull)) & size_mask(size);
        cpu->lf_cf = cpu_get_cf(cpu);
        cpu_lazy(cpu, dec ? LF_DEC : LF_INC, size, res, a, 1);
        cpu_reg_set(cpu, r, size, true, res);
        return;
    }
    if (op >= 0x50 && op <= 0x57) {
        unsigned ss = stack_size(cpu, in);
        cpu_push(cpu, cpu_reg_get(cpu, (op & 7) | ((in->rex & 1) << 3), ss, true), ss);
        return;
    }
    if (op >= 0x58 && op <= 0x5f) {
        unsigned ss = stack_size(cpu, in);
        uint64_t v = cpu_pop(cpu, ss);
        cpu_reg_set(cpu, (op & 7) | ((in->rex & 1) << 3), ss, true, v);
        return;
    }
    if (op >= 0x70 && op <= 0x7f) {
        if (cpu_cond(cpu, op & 0xf))
            jump(cpu, in, next + (uint64_t)(int64_t)(int8_t)in->imm);
        return;
    }
    if (op >= 0x91 && op <= 0x97) {
        int r = (op & 7) | ((in->rex & 1) << 3);
        uint64_t a = cpu_reg_get(cpu, R_AX, size, true), b = cpu_reg_get(cpu, r, size, true);
        cpu_reg_set(cpu, R_AX, size, true, b);
        cpu_reg_set(cpu, r, size, true, a);
        return;
    }
    if (op >= 0xb0 && op <= 0xb7) {
        cpu_reg_set(cpu, (op & 7) | ((in->rex & 1) << 3), 1, rex, in->imm);
        return;
    }
    if (op >= 0xb8 && op <= 0xbf) {
        cpu_reg_set(cpu, (op & 7) | ((in->rex & 1) << 3), size, true, in->imm);
        return;
    }
    if (op >= 0xd8 && op <= 0xdf) {
        if (!cpu_exec_x87(cpu, in))
            cpu_raise_ud(cpu);
        return;
    }

    switch (op) {
    case 0x60: { /* pusha */
        if (!legacy)
            cpu_raise_ud(cpu);
        uint64_t sp = cpu->regs[R_SP];
        for (int r = 0; r < 8; r++)
            cpu_push(cpu, r == R_SP ? sp : cpu->regs[r], size);
        return;
    }
    case 0x61: { /* popa */
        if (!legacy)
            cpu_raise_ud(cpu);
        for (int r = 7; r >= 0; r--) {
            uint64_t v = cpu_pop(cpu, size);
            if (r != R_SP)
                cpu_reg_set(cpu, r, size, true, v);
        }
        return;
    }
    case 0x63:
        if (!legacy) { /* movsxd */
            uint64_t v = (uint64_t)(int64_t)(int32_t)rm_read(cpu, in, 4);
            reg_write(cpu, in, size, v);
            return;
        }
        cpu_raise_ud(cpu); /* arpl */
    case 0x68: case 0x6a: {
        unsigned ss = stack_size(cpu, in);
        uint64_t v = op == 0x6a ? (uint64_t)(int64_t)(int8_t)in->imm : in->imm;
        cpu_push(cpu, v, ss);
        return;
    }
    case 0x69: case 0x6b: {
        uint64_t b = op == 0x6b ? (uint64_t)(int64_t)(int8_t)in->imm : in->imm;
        reg_write(cpu, in, size, imul2(cpu, size, rm_read(cpu, in, size), b));
        return;
    }
    case 0x6c: case 0x6d: case 0x6e: case 0x6f:
    case 0xa4: case 0xa5: case 0xa6: case 0xa7: case 0xaa: case 0xab:
    case 0xac: case 0xad: case 0xae: case 0xaf:
        string_op(cpu, in);
        return;
    case 0x80: case 0x81: case 0x82: case 0x83: {
        unsigned s = op == 0x81 || op == 0x83 ? size : 1;
        uint64_t imm = op == 0x83 ? (uint64_t)(int64_t)(int8_t)in->imm : in->imm;
        if (op == 0x82 && !legacy)
            cpu_raise_ud(cpu);
        alu_rm(cpu, in, in->reg & 7, s, imm);
        return;
    }
    case 0x84: case 0x85: {
        unsigned s = op == 0x84 ? 1 : size;
        alu(cpu, ALU_AND, s, rm_read(cpu, in, s), reg_read(cpu, in, s), false);
        return;
    }
    case 0x86: case 0x87: {
        unsigned s = op == 0x86 ? 1 : size;
        uint64_t v = reg_read(cpu, in, s);
        uint64_t old = rmw(cpu, in, s, true, xchg_fn, &v);
        reg_write(cpu, in, s, old);
        return;
    }
    case 0x88: rm_write(cpu, in, 1, reg_read(cpu, in, 1)); return;
    case 0x89: rm_write(cpu, in, size, reg_read(cpu, in, size)); return;
    case 0x8a: reg_write(cpu, in, 1, rm_read(cpu, in, 1)); return;
    case 0x8b: reg_write(cpu, in, size, rm_read(cpu, in, size)); return;
    case 0x8c: {
        unsigned sr = in->reg & 7;
        if (sr > S_GS)
            cpu_raise_ud(cpu);
        rm_write(cpu, in, in->mod == 3 ? size : 2, cpu->seg[sr].sel);
        return;
    }
    case 0x8d:
        if (in->mod == 3)
            cpu_raise_ud(cpu);
        reg_write(cpu, in, size, cpu_ea(cpu, in));
        return;
    case 0x8e:
        mov_to_sreg(cpu, in, in->reg & 7, (uint16_t)rm_read(cpu, in, 2));
        return;
    case 0x8f: {
        /* rSP-based addresses use the incremented rSP; rSP changes only at the end. */
        unsigned ss = stack_size(cpu, in);
        uint64_t mask = cpu_stack_mask(cpu);
        uint64_t sp = cpu->regs[R_SP];
        uint64_t v = cpu_read(cpu, S_SS, sp & mask, ss);
        uint64_t nsp = (sp & ~mask) | ((sp + ss) & mask);
        if (in->mod != 3) {
            cpu->regs[R_SP] = nsp;
            uint64_t ea = cpu_ea(cpu, in);
            cpu->regs[R_SP] = sp;
            cpu_write(cpu, cpu_ea_seg(in), ea, v, ss);
            cpu->regs[R_SP] = nsp;
        } else {
            cpu->regs[R_SP] = nsp;
            cpu_reg_set(cpu, in->rm, ss, true, v);
        }
        return;
    }
    case 0x90:
        if (in->rex & 1) {
            uint64_t a = cpu_reg_get(cpu, R_AX, size, true), b = cpu_reg_get(cpu, 8, size, true);
            cpu_reg_set(cpu, R_AX, size, true, b);
            cpu_reg_set(cpu, 8, size, true, a);
        }
        return; /* nop / pause */
    case 0x98:
        if (size == 2)
            cpu_reg_set(cpu, R_AX, 2, true, (uint64_t)(int64_t)(int8_t)cpu->regs[R_AX]);
        else if (size == 4)
            cpu_reg_set(cpu, R_AX, 4, true, (uint64_t)(int64_t)(int16_t)cpu->regs[R_AX]);
        else
            cpu->regs[R_AX] = (uint64_t)(int64_t)(int32_t)cpu->regs[R_AX];
        return;
    case 0x99: {
        bool neg = cpu->regs[R_AX] & sign_bit(size);
        cpu_reg_set(cpu, R_DX, size, true, neg ? ~0ull : 0);
        return;
    }
    case 0x9a:
        if (!legacy)
            cpu_raise_ud(cpu);
        cpu_far_jump(cpu, (uint16_t)in->imm2, in->imm, true, (uint8_t)size, next);
        return;
    case 0x9b: /* fwait */
        if ((cpu->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
            cpu_raise(cpu, EXC_NM, false, 0);
        return;
    case 0x9c: {
        unsigned ss = stack_size(cpu, in);
        cpu_push(cpu, cpu_get_rflags(cpu) & ~(uint64_t)(F_VM | F_RF), ss);
        return;
    }
    case 0x9d:
        popf(cpu, in);
        return;
    case 0x9e: {
        uint64_t ah = (cpu->regs[R_AX] >> 8) & (F_SF | F_ZF | F_AF | F_PF | F_CF);
        set_arith(cpu, F_SF | F_ZF | F_AF | F_PF | F_CF, ah);
        return;
    }
    case 0x9f:
        cpu_reg_set(cpu, 4, 1, false, (cpu_get_rflags(cpu) & 0xd5) | 2);
        return;
    case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
        unsigned s = (op & 1) ? size : 1;
        int seg = in->seg != S_NONE ? in->seg : S_DS;
        if (op < 0xa2)
            cpu_reg_set(cpu, R_AX, s, true, cpu_read(cpu, seg, in->imm, s));
        else
            cpu_write(cpu, seg, in->imm, cpu->regs[R_AX], s);
        return;
    }
    case 0xa8: case 0xa9: {
        unsigned s = op == 0xa8 ? 1 : size;
        alu(cpu, ALU_AND, s, cpu->regs[R_AX], in->imm, false);
        return;
    }
    case 0xc0: case 0xc1:
        shift_rm(cpu, in, op == 0xc0 ? 1 : size, (unsigned)in->imm);
        return;
    case 0xd0: case 0xd1:
        shift_rm(cpu, in, op == 0xd0 ? 1 : size, 1);
        return;
    case 0xd2: case 0xd3:
        shift_rm(cpu, in, op == 0xd2 ? 1 : size, (unsigned)cpu->regs[R_CX] & 0xff);
        return;
    case 0xc2: case 0xc3: {
        unsigned ss = stack_size(cpu, in);
        uint64_t t = cpu_pop(cpu, ss);
        if (op == 0xc2) {
            uint64_t mask = cpu_stack_mask(cpu);
            cpu->regs[R_SP] = (cpu->regs[R_SP] & ~mask) | ((cpu->regs[R_SP] + in->imm) & mask);
        }
        cpu->rip = cpu->code64 ? t : t & size_mask(ss);
        return;
    }
    case 0xc4: case 0xc5: { /* les / lds */
        uint64_t ea = cpu_ea(cpu, in);
        int seg = cpu_ea_seg(in);
        uint64_t off = cpu_read(cpu, seg, ea, size);
        uint16_t sel = (uint16_t)cpu_read(cpu, seg, (ea + size) & addr_mask(in), 2);
        mov_to_sreg(cpu, in, op == 0xc4 ? S_ES : S_DS, sel);
        reg_write(cpu, in, size, off);
        return;
    }
    case 0xc6:
        rm_write(cpu, in, 1, in->imm);
        return;
    case 0xc7:
        rm_write(cpu, in, size, in->imm);
        return;
    case 0xc8:
        exec_enter(cpu, in);
        return;
    case 0xc9: {
        unsigned ss = stack_size(cpu, in);
        uint64_t mask = cpu_stack_mask(cpu);
        uint64_t sp = cpu->regs[R_BP] & mask;
        uint64_t v = cpu_read(cpu, S_SS, sp, ss);
        cpu->regs[R_SP] = (cpu->regs[R_SP] & ~mask) | ((sp + ss) & mask);
        cpu_reg_set(cpu, R_BP, ss, true, v);
        return;
    }
    case 0xca: case 0xcb:
        cpu_far_ret(cpu, (uint8_t)(cpu->code64 && (in->rex & 8) ? 8 : size),
                    op == 0xca ? (uint16_t)in->imm : 0);
        return;
    case 0xcc:
        cpu_deliver(cpu, EXC_BP, false, 0, true, next);
        return;
    case 0xcd:
        if (!cpu_in_real_mode(cpu) && (cpu->rflags & F_VM))
            cpu_raise_gp(cpu, 0);
        cpu_deliver(cpu, (int)in->imm, false, 0, true, next);
        return;
    case 0xce:
        if (!legacy)
            cpu_raise_ud(cpu);
        if (cpu_cond(cpu, 0))
            cpu_deliver(cpu, EXC_OF, false, 0, true, next);
        return;
    case 0xcf:
        cpu_iret(cpu, (uint8_t)size);
        return;
    case 0xd4: case 0xd5:
        if (!legacy)
            cpu_raise_ud(cpu);
        bcd_adjust(cpu, in);
        return;
    case 0xd6: /* salc */
        if (!legacy)
            cpu_raise_ud(cpu);
        cpu_reg_set(cpu, R_AX, 1, false, cpu_get_cf(cpu) ? 0xff : 0);
        return;
    case 0xd7: {
        int seg = in->seg != S_NONE ? in->seg : S_DS;
        uint64_t a = (cpu->regs[R_BX] + (cpu->regs[R_AX] & 0xff)) & addr_mask(in);
        cpu_reg_set(cpu, R_AX, 1, false, cpu_read(cpu, seg, a, 1));
        return;
    }
    case 0xe0: case 0xe1: case 0xe2: {
        areg_add(cpu, in, R_CX, -1);
        bool take = areg(cpu, in, R_CX) != 0;
        if (op == 0xe0)
            take = take && !cpu_cond(cpu, 4);
        else if (op == 0xe1)
            take = take && cpu_cond(cpu, 4);
        if (take)
            jump(cpu, in, next + (uint64_t)(int64_t)(int8_t)in->imm);
        return;
    }
    case 0xe3:
        if (areg(cpu, in, R_CX) == 0)
            jump(cpu, in, next + (uint64_t)(int64_t)(int8_t)in->imm);
        return;
    case 0xe4: case 0xe5: {
        unsigned s = op == 0xe4 ? 1 : (size == 2 ? 2 : 4);
        cpu_reg_set(cpu, R_AX, s, true, port_in(cpu, (uint16_t)in->imm, s));
        return;
    }
    case 0xe6: case 0xe7: {
        unsigned s = op == 0xe6 ? 1 : (size == 2 ? 2 : 4);
        port_out(cpu, (uint16_t)in->imm, (uint32_t)cpu->regs[R_AX], s);
        return;
    }
    case 0xec: case 0xed: {
        unsigned s = op == 0xec ? 1 : (size == 2 ? 2 : 4);
        cpu_reg_set(cpu, R_AX, s, true, port_in(cpu, (uint16_t)cpu->regs[R_DX], s));
        return;
    }
    case 0xee: case 0xef: {
        unsigned s = op == 0xee ? 1 : (size == 2 ? 2 : 4);
        port_out(cpu, (uint16_t)cpu->regs[R_DX], (uint32_t)cpu->regs[R_AX], s);
        return;
    }
    case 0xe8: {
        unsigned ss = cpu->code64 ? 8 : size;
        cpu_push(cpu, next, ss);
        jump(cpu, in, next + in->imm);
        return;
    }
    case 0xe9:
        jump(cpu, in, next + in->imm);
        return;
    case 0xea:
        if (!legacy)
            cpu_raise_ud(cpu);
        cpu_far_jump(cpu, (uint16_t)in->imm2, in->imm, false, (uint8_t)size, next);
        return;
    case 0xeb:
        jump(cpu, in, next + (uint64_t)(int64_t)(int8_t)in->imm);
        return;
    case 0xf1:
        cpu_deliver(cpu, EXC_DB, false, 0, false, next);
        return;
    case 0xf4:
        if (cpu->cpl != 0)
            cpu_raise_gp(cpu, 0);
        cpu->halted = true;
        return;
    case 0xf5: set_arith(cpu, F_CF, cpu_get_cf(cpu) ? 0 : F_CF); return;
    case 0xf6: case 0xf7: {
        unsigned s = op == 0xf6 ? 1 : size;
        struct alu_ctx x = {0, s, 0, false};
        switch (in->reg & 7) {
        case 0: case 1:
            alu(cpu, ALU_AND, s, rm_read(cpu, in, s), in->imm, false);
            return;
        case 2: rmw(cpu, in, s, false, not_fn, &x); return;
        case 3: rmw(cpu, in, s, false, neg_fn, &x); return;
        default: group3_muldiv(cpu, in, s); return;
        }
    }
    case 0xf8: set_arith(cpu, F_CF, 0); return;
    case 0xf9: set_arith(cpu, F_CF, F_CF); return;
    case 0xfa: cli_sti(cpu, in, false); return;
    case 0xfb: cli_sti(cpu, in, true); return;
    case 0xfc: cpu->rflags &= ~(uint64_t)F_DF; return;
    case 0xfd: cpu->rflags |= F_DF; return;
    case 0xfe:
        if ((in->reg & 7) > 1)
            cpu_raise_ud(cpu);
        incdec_rm(cpu, in, 1, in->reg & 1);
        return;
    case 0xff:
        exec_group5(cpu, in, next);
        return;
    }
    cpu_raise_ud(cpu);
}

/* ---- the integer part of the 0F map ---- */

struct cmpxchg_ctx {
    unsigned size;
    uint64_t expected, src;
};

static void exec_cmpxchg(struct emu_cpu *cpu, const struct insn *in)
{
    unsigned size = in->op == 0xb0 ? 1 : in->opsize;
    uint64_t m = size_mask(size);
    uint64_t acc = cpu->regs[R_AX] & m, src = reg_read(cpu, in, size), old;
    if (in->mod == 3) {
        old = cpu_reg_get(cpu, in->rm, size, has_rex(in));
        if (old == acc)
            cpu_reg_set(cpu, in->rm, size, has_rex(in), src);
    } else {
        bool user = cpu->cpl == 3;
        uint64_t lin = cpu_lin(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size, ACC_WRITE);
        void *p = mmu_rmw_ptr(cpu, lin, size, user);
        if (p) {
            old = acc;
            cas(p, size, &old, src);
        } else {
            old = mmu_read_lin(cpu, lin, size, ACC_WRITE, user);
            mmu_write_lin(cpu, lin, old == acc ? src : old, size, user);
        }
    }
    alu(cpu, ALU_CMP, size, acc, old, false);
    if (old != acc)
        cpu_reg_set(cpu, R_AX, size, true, old);
}

static void exec_cmpxchg8b(struct emu_cpu *cpu, const struct insn *in)
{
    bool wide = in->opsize == 8; /* cmpxchg16b */
    unsigned size = wide ? 16 : 8;
    if (in->mod == 3)
        cpu_raise_ud(cpu);
    uint64_t lin = cpu_lin(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size, ACC_WRITE);
    if (wide && (lin & 15))
        cpu_raise_gp(cpu, 0);
    bool user = cpu->cpl == 3;
    bool eq;
    if (!wide) {
        uint64_t exp = (cpu->regs[R_AX] & 0xffffffffu) | (cpu->regs[R_DX] << 32);
        uint64_t src = (cpu->regs[R_BX] & 0xffffffffu) | (cpu->regs[R_CX] << 32);
        uint64_t old;
        void *p = mmu_rmw_ptr(cpu, lin, 8, user);
        if (p) {
            old = exp;
            eq = cas(p, 8, &old, src);
        } else {
            old = mmu_read_lin(cpu, lin, 8, ACC_WRITE, user);
            eq = old == exp;
            mmu_write_lin(cpu, lin, eq ? src : old, 8, user);
        }
        if (!eq) {
            cpu->regs[R_AX] = old & 0xffffffffu;
            cpu->regs[R_DX] = old >> 32;
        }
    } else {
        unsigned __int128 exp = ((unsigned __int128)cpu->regs[R_DX] << 64) | cpu->regs[R_AX];
        unsigned __int128 src = ((unsigned __int128)cpu->regs[R_CX] << 64) | cpu->regs[R_BX];
        unsigned __int128 old;
        const struct tlb_entry *e = mmu_translate(cpu, lin, ACC_WRITE, user);
        if (e->host) {
            unsigned __int128 *p = (unsigned __int128 *)(void *)(e->host + (lin & 0xfff));
#if defined(__x86_64__)
            uint64_t lo = (uint64_t)exp, hi = (uint64_t)(exp >> 64);
            bool ok;
            __asm__ volatile("lock cmpxchg16b %1"
                             : "=@ccz"(ok), "+m"(*p), "+a"(lo), "+d"(hi)
                             : "b"((uint64_t)src), "c"((uint64_t)(src >> 64))
                             : "memory");
            eq = ok;
            old = ((unsigned __int128)hi << 64) | lo;
#else
            old = *p;
            eq = old == exp;
            if (eq)
                *p = src;
#endif
        } else {
            uint64_t lo = mmu_read_lin(cpu, lin, 8, ACC_WRITE, user);
            uint64_t hi = mmu_read_lin(cpu, lin + 8, 8, ACC_WRITE, user);
            old = ((unsigned __int128)hi << 64) | lo;
            eq = old == exp;
            if (eq) {
                mmu_write_lin(cpu, lin, (uint64_t)src, 8, user);
                mmu_write_lin(cpu, lin + 8, (uint64_t)(src >> 64), 8, user);
            }
        }
        if (!eq) {
            cpu->regs[R_AX] = (uint64_t)old;
            cpu->regs[R_DX] = (uint64_t)(old >> 64);
        }
    }
    set_arith(cpu, F_ZF, eq ? F_ZF : 0);
}

struct xadd_ctx {
    unsigned size;
    uint64_t src;
};

static uint64_t xadd_fn(struct emu_cpu *cpu, uint64_t old, const void *c)
{
    const struct xadd_ctx *x = c;
    return alu(cpu, ALU_ADD, x->size, old, x->src, false);
}

static void exec_0f(struct emu_cpu *cpu, struct insn *in)
{
    uint8_t op = in->op;
    unsigned size = in->opsize;
    uint64_t next = cpu->rip;

    if (op >= 0x40 && op <= 0x4f) { /* cmovcc: the load happens either way */
        uint64_t v = rm_read(cpu, in, size);
        if (cpu_cond(cpu, op & 0xf))
            reg_write(cpu, in, size, v);
        else if (size == 4)
            reg_write(cpu, in, 4, reg_read(cpu, in, 4)); /* zero-extends anyway */
        return;
    }
    if (op >= 0x80 && op <= 0x8f) {
        if (cpu_cond(cpu, op & 0xf))
            jump(cpu, in, next + in->imm);
        return;
    }
    if (op >= 0x90 && op <= 0x9f) {
        rm_write(cpu, in, 1, cpu_cond(cpu, op & 0xf));
        return;
    }
    if (op >= 0xc8 && op <= 0xcf) {
        int r = (op & 7) | ((in->rex & 1) << 3);
        uint64_t v = cpu->regs[r];
        if (size == 8)
            cpu->regs[r] = __builtin_bswap64(v);
        else if (size == 4)
            cpu->regs[r] = __builtin_bswap32((uint32_t)v);
        else
            cpu_reg_set(cpu, r, 2, true, 0); /* undefined: zero like many CPUs */
        return;
    }

    switch (op) {
    case 0xa0: case 0xa8: {
        unsigned ss = stack_size(cpu, in);
        cpu_push(cpu, cpu->seg[op == 0xa0 ? S_FS : S_GS].sel, ss);
        return;
    }
    case 0xa1: case 0xa9: {
        unsigned ss = stack_size(cpu, in);
        uint64_t sp = cpu->regs[R_SP];
        uint16_t v = (uint16_t)cpu_pop(cpu, ss);
        uint64_t nsp = cpu->regs[R_SP];
        cpu->regs[R_SP] = sp;
        cpu_load_seg(cpu, op == 0xa1 ? S_FS : S_GS, v);
        cpu->regs[R_SP] = nsp;
        return;
    }
    case 0xa3: bit_test(cpu, in, 4, reg_read(cpu, in, size), true); return;
    case 0xab: bit_test(cpu, in, 5, reg_read(cpu, in, size), true); return;
    case 0xb3: bit_test(cpu, in, 6, reg_read(cpu, in, size), true); return;
    case 0xbb: bit_test(cpu, in, 7, reg_read(cpu, in, size), true); return;
    case 0xba:
        if ((in->reg & 7) < 4)
            cpu_raise_ud(cpu);
        bit_test(cpu, in, in->reg & 7, in->imm, false);
        return;
    case 0xa4: case 0xa5: case 0xac: case 0xad: {
        unsigned cnt = (op & 1) ? (unsigned)cpu->regs[R_CX] : (unsigned)in->imm;
        struct shd_ctx x = {size, cnt & (size == 8 ? 63 : 31), reg_read(cpu, in, size), op >= 0xac};
        if (x.count == 0) {
            rm_read(cpu, in, size);
            if (in->mod == 3 && size == 4)
                rm_write(cpu, in, 4, rm_read(cpu, in, 4));
            return;
        }
        rmw(cpu, in, size, false, shd_fn, &x);
        return;
    }
    case 0xaf:
        reg_write(cpu, in, size, imul2(cpu, size, reg_read(cpu, in, size), rm_read(cpu, in, size)));
        return;
    case 0xb0: case 0xb1:
        exec_cmpxchg(cpu, in);
        return;
    case 0xb6: case 0xb7:
        reg_write(cpu, in, size, rm_read(cpu, in, op == 0xb6 ? 1 : 2));
        return;
    case 0xbe:
        reg_write(cpu, in, size, (uint64_t)sext(rm_read(cpu, in, 1), 1));
        return;
    case 0xbf:
        reg_write(cpu, in, size, (uint64_t)sext(rm_read(cpu, in, 2), 2));
        return;
    case 0xbc: case 0xbd: { /* bsf / bsr (F3 = tzcnt/lzcnt not offered: plain bsf/bsr) */
        uint64_t v = rm_read(cpu, in, size);
        cpu_flags_materialize(cpu);
        if (!v) {
            cpu->rflags |= F_ZF; /* destination left as it was, all 64 bits (as hardware does) */
            return;
        }
        cpu->rflags &= ~(uint64_t)F_ZF;
        reg_write(cpu, in, size, op == 0xbc ? (uint64_t)__builtin_ctzll(v)
                                            : (uint64_t)(63 - __builtin_clzll(v)));
        return;
    }
    case 0xc0: case 0xc1: {
        unsigned s = op == 0xc0 ? 1 : size;
        struct xadd_ctx x = {s, reg_read(cpu, in, s)};
        if (in->mod == 3) { /* the destination is written last (matters if reg == rm) */
            uint64_t old = cpu_reg_get(cpu, in->rm, s, has_rex(in));
            uint64_t sum = xadd_fn(cpu, old, &x);
            reg_write(cpu, in, s, old);
            cpu_reg_set(cpu, in->rm, s, has_rex(in), sum);
            return;
        }
        uint64_t old = rmw(cpu, in, s, false, xadd_fn, &x);
        reg_write(cpu, in, s, old);
        return;
    }
    case 0xc7:
        if ((in->reg & 7) == 1) {
            exec_cmpxchg8b(cpu, in);
            return;
        }
        break;
    }
    if (!cpu_exec_system(cpu, in) && !cpu_exec_sse(cpu, in))
        cpu_raise_ud(cpu);
}

void cpu_exec(struct emu_cpu *cpu, struct insn *in)
{
    cpu->rip = in->start + in->len;
    if (!cpu->code64)
        cpu->rip &= 0xffffffffu;
    if (in->map == 0)
        exec_1byte(cpu, in);
    else if (in->map == 1)
        exec_0f(cpu, in);
    else if (!cpu_exec_sse(cpu, in))
        cpu_raise_ud(cpu);
}
