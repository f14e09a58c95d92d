/* SSE and SSE2: the XMM register file, MXCSR, and the 0F-map instructions
 * gcc, glibc and the Linux kernel use (moves, integer SIMD, scalar and
 * packed float arithmetic, compares, conversions, shuffles, FXSAVE/FXRSTOR,
 * LDMXCSR/STMXCSR, fences). SSE3 and later are not offered in CPUID and
 * raise #UD. Floating point runs on the host's own IEEE arithmetic with the
 * guest's MXCSR rounding mode installed, so results and exception flags
 * match real hardware. */
#include <math.h>
#include <string.h>

#include "accel/emu/cpu_internal.h"

typedef union emu_xmm xmm_t;

#define MXCSR_MASK 0xffbfu /* writable bits: no DAZ-less CPUs here, DAZ supported */

/* ---- host MXCSR around float operations ---- */

static uint32_t fp_begin(struct emu_cpu *cpu)
{
    uint32_t host = 0;
#if defined(__x86_64__)
    uint32_t guest = (cpu->mxcsr & ~0x3fu) | 0x1f80u; /* all exceptions masked on the host */
    __asm__ volatile("stmxcsr %0" : "=m"(host));
    __asm__ volatile("ldmxcsr %0" : : "m"(guest) : "memory");
#else
    (void)cpu;
#endif
    return host;
}

static void fp_end(struct emu_cpu *cpu, uint32_t host)
{
#if defined(__x86_64__)
    uint32_t now;
    __asm__ volatile("stmxcsr %0" : "=m"(now) : : "memory");
    cpu->mxcsr |= now & 0x3f;
    __asm__ volatile("ldmxcsr %0" : : "m"(host) : "memory");
#else
    (void)cpu;
    (void)host;
#endif
}

/* ---- operand access ---- */

static void check_sse(struct emu_cpu *cpu)
{
    if ((cpu->cr0 & CR0_EM) || !(cpu->cr4 & CR4_OSFXSR))
        cpu_raise_ud(cpu);
    if (cpu->cr0 & CR0_TS)
        cpu_raise(cpu, EXC_NM, false, 0);
}

static uint64_t mem_lin(struct emu_cpu *cpu, const struct insn *in, unsigned size, enum acc acc)
{
    return cpu_lin(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size, acc);
}

/* Source operand: xmm register or memory of size bytes (zero-filled above). */
static xmm_t src_op(struct emu_cpu *cpu, const struct insn *in, unsigned size, bool aligned)
{
    xmm_t v;
    if (in->mod == 3)
        return cpu->xmm[in->rm];
    memset(&v, 0, sizeof(v));
    uint64_t lin = mem_lin(cpu, in, size, ACC_READ);
    if (aligned && (lin & 15))
        cpu_raise_gp(cpu, 0);
    mmu_read_buf(cpu, lin, &v, size, cpu->cpl == 3);
    return v;
}

static void store_op(struct emu_cpu *cpu, const struct insn *in, const xmm_t *v, unsigned size,
                     bool aligned)
{
    if (in->mod == 3) {
        if (size == 16)
            cpu->xmm[in->rm] = *v;
        else
            memcpy(&cpu->xmm[in->rm], v, size);
        return;
    }
    uint64_t lin = mem_lin(cpu, in, size, ACC_WRITE);
    if (aligned && (lin & 15))
        cpu_raise_gp(cpu, 0);
    mmu_write_buf(cpu, lin, v, size, cpu->cpl == 3);
}

static uint64_t gpr_rm(struct emu_cpu *cpu, const struct insn *in, unsigned size)
{
    if (in->mod == 3)
        return cpu_reg_get(cpu, in->rm, size, true);
    return cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size);
}

/* ---- integer SIMD helpers ---- */

static int64_t sat(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void shift_words(xmm_t *d, unsigned esize, unsigned kind, uint64_t count)
{
    /* kind: 0 logical right, 1 arithmetic right, 2 left */
    unsigned bits = esize * 8, n = 16 / esize;
    for (unsigned i = 0; i < n; i++) {
        uint64_t v;
        switch (esize) {
        case 2: v = d->w[i]; break;
        case 4: v = d->d[i]; break;
        default: v = d->q[i]; break;
        }
        if (kind == 0)
            v = count >= bits ? 0 : v >> count;
        else if (kind == 2)
            v = count >= bits ? 0 : v << count;
        else
            v = (uint64_t)(sext(v, esize) >> (count >= bits ? bits - 1 : count));
        switch (esize) {
        case 2: d->w[i] = (uint16_t)v; break;
        case 4: d->d[i] = (uint32_t)v; break;
        default: d->q[i] = v; break;
        }
    }
}

static void byte_shift(xmm_t *d, unsigned count, bool left)
{
    xmm_t r;
    memset(&r, 0, sizeof(r));
    if (count > 16)
        count = 16;
    for (unsigned i = 0; i < 16; i++) {
        if (left) {
            if (i >= count)
                r.b[i] = d->b[i - count];
        } else if (i + count < 16) {
            r.b[i] = d->b[i + count];
        }
    }
    *d = r;
}

/* 66 0F xx integer ops on (d, s). Returns false if op is not one of them. */
static bool int_op(struct emu_cpu *cpu, uint8_t op, xmm_t *d, const xmm_t *s)
{
    xmm_t r = *d;
    (void)cpu;
    switch (op) {
    case 0x60: for (int i = 0; i < 8; i++) { r.b[2 * i] = d->b[i]; r.b[2 * i + 1] = s->b[i]; } break;
    case 0x61: for (int i = 0; i < 4; i++) { r.w[2 * i] = d->w[i]; r.w[2 * i + 1] = s->w[i]; } break;
    case 0x62: for (int i = 0; i < 2; i++) { r.d[2 * i] = d->d[i]; r.d[2 * i + 1] = s->d[i]; } break;
    case 0x63:
        for (int i = 0; i < 8; i++) {
            r.sb[i] = (int8_t)sat(d->sw[i], -128, 127);
            r.sb[8 + i] = (int8_t)sat(s->sw[i], -128, 127);
        }
        break;
    case 0x64: for (int i = 0; i < 16; i++) r.b[i] = d->sb[i] > s->sb[i] ? 0xff : 0; break;
    case 0x65: for (int i = 0; i < 8; i++) r.w[i] = d->sw[i] > s->sw[i] ? 0xffff : 0; break;
    case 0x66: for (int i = 0; i < 4; i++) r.d[i] = d->sd[i] > s->sd[i] ? ~0u : 0; break;
    case 0x67:
        for (int i = 0; i < 8; i++) {
            r.b[i] = (uint8_t)sat(d->sw[i], 0, 255);
            r.b[8 + i] = (uint8_t)sat(s->sw[i], 0, 255);
        }
        break;
    case 0x68: for (int i = 0; i < 8; i++) { r.b[2 * i] = d->b[8 + i]; r.b[2 * i + 1] = s->b[8 + i]; } break;
    case 0x69: for (int i = 0; i < 4; i++) { r.w[2 * i] = d->w[4 + i]; r.w[2 * i + 1] = s->w[4 + i]; } break;
    case 0x6a: for (int i = 0; i < 2; i++) { r.d[2 * i] = d->d[2 + i]; r.d[2 * i + 1] = s->d[2 + i]; } break;
    case 0x6b:
        for (int i = 0; i < 4; i++) {
            r.sw[i] = (int16_t)sat(d->sd[i], -32768, 32767);
            r.sw[4 + i] = (int16_t)sat(s->sd[i], -32768, 32767);
        }
        break;
    case 0x6c: r.q[0] = d->q[0]; r.q[1] = s->q[0]; break;
    case 0x6d: r.q[0] = d->q[1]; r.q[1] = s->q[1]; break;
    case 0x74: for (int i = 0; i < 16; i++) r.b[i] = d->b[i] == s->b[i] ? 0xff : 0; break;
    case 0x75: for (int i = 0; i < 8; i++) r.w[i] = d->w[i] == s->w[i] ? 0xffff : 0; break;
    case 0x76: for (int i = 0; i < 4; i++) r.d[i] = d->d[i] == s->d[i] ? ~0u : 0; break;
    case 0xd1: shift_words(&r, 2, 0, s->q[0]); break;
    case 0xd2: shift_words(&r, 4, 0, s->q[0]); break;
    case 0xd3: shift_words(&r, 8, 0, s->q[0]); break;
    case 0xd4: for (int i = 0; i < 2; i++) r.q[i] = d->q[i] + s->q[i]; break;
    case 0xd5: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)(d->sw[i] * s->sw[i]); break;
    case 0xd8: for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)sat((int)d->b[i] - s->b[i], 0, 255); break;
    case 0xd9: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)sat((int)d->w[i] - s->w[i], 0, 65535); break;
    case 0xda: for (int i = 0; i < 16; i++) r.b[i] = d->b[i] < s->b[i] ? d->b[i] : s->b[i]; break;
    case 0xdb: for (int i = 0; i < 2; i++) r.q[i] = d->q[i] & s->q[i]; break;
    case 0xdc: for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)sat((int)d->b[i] + s->b[i], 0, 255); break;
    case 0xdd: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)sat((int)d->w[i] + s->w[i], 0, 65535); break;
    case 0xde: for (int i = 0; i < 16; i++) r.b[i] = d->b[i] > s->b[i] ? d->b[i] : s->b[i]; break;
    case 0xdf: for (int i = 0; i < 2; i++) r.q[i] = ~d->q[i] & s->q[i]; break;
    case 0xe0: for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)((d->b[i] + s->b[i] + 1) >> 1); break;
    case 0xe1: shift_words(&r, 2, 1, s->q[0]); break;
    case 0xe2: shift_words(&r, 4, 1, s->q[0]); break;
    case 0xe3: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)((d->w[i] + s->w[i] + 1) >> 1); break;
    case 0xe4: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)(((uint32_t)d->w[i] * s->w[i]) >> 16); break;
    case 0xe5: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)(((int32_t)d->sw[i] * s->sw[i]) >> 16); break;
    case 0xe8: for (int i = 0; i < 16; i++) r.sb[i] = (int8_t)sat(d->sb[i] - s->sb[i], -128, 127); break;
    case 0xe9: for (int i = 0; i < 8; i++) r.sw[i] = (int16_t)sat(d->sw[i] - s->sw[i], -32768, 32767); break;
    case 0xea: for (int i = 0; i < 8; i++) r.sw[i] = d->sw[i] < s->sw[i] ? d->sw[i] : s->sw[i]; break;
    case 0xeb: for (int i = 0; i < 2; i++) r.q[i] = d->q[i] | s->q[i]; break;
    case 0xec: for (int i = 0; i < 16; i++) r.sb[i] = (int8_t)sat(d->sb[i] + s->sb[i], -128, 127); break;
    case 0xed: for (int i = 0; i < 8; i++) r.sw[i] = (int16_t)sat(d->sw[i] + s->sw[i], -32768, 32767); break;
    case 0xee: for (int i = 0; i < 8; i++) r.sw[i] = d->sw[i] > s->sw[i] ? d->sw[i] : s->sw[i]; break;
    case 0xef: for (int i = 0; i < 2; i++) r.q[i] = d->q[i] ^ s->q[i]; break;
    case 0xf1: shift_words(&r, 2, 2, s->q[0]); break;
    case 0xf2: shift_words(&r, 4, 2, s->q[0]); break;
    case 0xf3: shift_words(&r, 8, 2, s->q[0]); break;
    case 0xf4: for (int i = 0; i < 2; i++) r.q[i] = (uint64_t)d->d[2 * i] * s->d[2 * i]; break;
    case 0xf5:
        for (int i = 0; i < 4; i++)
            r.sd[i] = (int32_t)((uint32_t)((int32_t)d->sw[2 * i] * s->sw[2 * i]) +
                                (uint32_t)((int32_t)d->sw[2 * i + 1] * s->sw[2 * i + 1]));
        break;
    case 0xf6:
        for (int h = 0; h < 2; h++) {
            unsigned sum = 0;
            for (int i = 0; i < 8; i++) {
                int diff = (int)d->b[8 * h + i] - s->b[8 * h + i];
                sum += (unsigned)(diff < 0 ? -diff : diff);
            }
            r.q[h] = sum;
        }
        break;
    case 0xf8: for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)(d->b[i] - s->b[i]); break;
    case 0xf9: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)(d->w[i] - s->w[i]); break;
    case 0xfa: for (int i = 0; i < 4; i++) r.d[i] = d->d[i] - s->d[i]; break;
    case 0xfb: for (int i = 0; i < 2; i++) r.q[i] = d->q[i] - s->q[i]; break;
    case 0xfc: for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)(d->b[i] + s->b[i]); break;
    case 0xfd: for (int i = 0; i < 8; i++) r.w[i] = (uint16_t)(d->w[i] + s->w[i]); break;
    case 0xfe: for (int i = 0; i < 4; i++) r.d[i] = d->d[i] + s->d[i]; break;
    default:
        return false;
    }
    *d = r;
    return true;
}

/* ---- float helpers ---- */

static float f_sqrt(float x)
{
#if defined(__x86_64__)
    float r;
    __asm__("sqrtss %1, %0" : "=x"(r) : "x"(x));
    return r;
#else
    return sqrtf(x);
#endif
}

static double d_sqrt(double x)
{
#if defined(__x86_64__)
    double r;
    __asm__("sqrtsd %1, %0" : "=x"(r) : "x"(x));
    return r;
#else
    return sqrt(x);
#endif
}

/* Arithmetic op (0x51 sqrt, 0x58 add, 0x59 mul, 0x5c sub, 0x5d min, 0x5e div, 0x5f max). */
static float f_op(uint8_t op, float a, float b)
{
    volatile float x = a, y = b, r;
    switch (op) {
    case 0x51: r = f_sqrt(y); break;
    case 0x58: r = x + y; break;
    case 0x59: r = x * y; break;
    case 0x5c: r = x - y; break;
    case 0x5d: r = x < y ? x : y; break;
    case 0x5e: r = x / y; break;
    default: r = x > y ? x : y; break;
    }
    return r;
}

static double d_op(uint8_t op, double a, double b)
{
    volatile double x = a, y = b, r;
    switch (op) {
    case 0x51: r = d_sqrt(y); break;
    case 0x58: r = x + y; break;
    case 0x59: r = x * y; break;
    case 0x5c: r = x - y; break;
    case 0x5d: r = x < y ? x : y; break;
    case 0x5e: r = x / y; break;
    default: r = x > y ? x : y; break;
    }
    return r;
}

/* CMPPS predicate imm8[2:0] on one element; true if the relation holds.
 * On x86 hosts the host's own CMPSS/CMPSD runs, so exception flags (IE on
 * NaNs, DE on denormals) land in the host MXCSR exactly as on hardware. */
#if defined(__x86_64__)
#define CMP_CASE(n)                                                                                \
    case n:                                                                                        \
        if (dbl)                                                                                   \
            __asm__ volatile("cmpsd $" #n ", %1, %0" : "+x"(x.d) : "x"(y.d));                     \
        else                                                                                       \
            __asm__ volatile("cmpss $" #n ", %1, %0" : "+x"(x.f) : "x"(y.f));                     \
        break;
#endif

union fpval {
    float f;
    double d;
    uint64_t u;
};

static bool fcmp(unsigned pred, const xmm_t *a, const xmm_t *b, unsigned i, bool dbl)
{
    union fpval x, y;
    x.u = y.u = 0;
    if (dbl) {
        x.d = a->dbl[i];
        y.d = b->dbl[i];
    } else {
        x.f = a->f[i];
        y.f = b->f[i];
    }
#if defined(__x86_64__)
    switch (pred & 7) {
        CMP_CASE(0) CMP_CASE(1) CMP_CASE(2) CMP_CASE(3) CMP_CASE(4) CMP_CASE(5) CMP_CASE(6)
        CMP_CASE(7)
    }
    return dbl ? x.u != 0 : (uint32_t)x.u != 0;
#else
    double p = dbl ? x.d : x.f, q = dbl ? y.d : y.f;
    bool unord = isnan(p) || isnan(q);
    switch (pred & 7) {
    case 0: return !unord && p == q;
    case 1: return !unord && p < q;
    case 2: return !unord && p <= q;
    case 3: return unord;
    case 4: return unord || p != q;
    case 5: return unord || !(p < q);
    case 6: return unord || !(p <= q);
    default: return !unord;
    }
#endif
}

/* (U)COMISS/SD: ZF PF CF from the host instruction itself. */
static uint64_t fcomi(bool ordered_signal, const xmm_t *a, const xmm_t *b, bool dbl)
{
#if defined(__x86_64__)
    uint8_t zf, pf, cf;
    if (dbl && ordered_signal)
        __asm__ volatile("comisd %3, %4; setz %0; setp %1; setc %2"
                         : "=r"(zf), "=r"(pf), "=r"(cf) : "x"(b->dbl[0]), "x"(a->dbl[0]) : "cc");
    else if (dbl)
        __asm__ volatile("ucomisd %3, %4; setz %0; setp %1; setc %2"
                         : "=r"(zf), "=r"(pf), "=r"(cf) : "x"(b->dbl[0]), "x"(a->dbl[0]) : "cc");
    else if (ordered_signal)
        __asm__ volatile("comiss %3, %4; setz %0; setp %1; setc %2"
                         : "=r"(zf), "=r"(pf), "=r"(cf) : "x"(b->f[0]), "x"(a->f[0]) : "cc");
    else
        __asm__ volatile("ucomiss %3, %4; setz %0; setp %1; setc %2"
                         : "=r"(zf), "=r"(pf), "=r"(cf) : "x"(b->f[0]), "x"(a->f[0]) : "cc");
    return (zf ? F_ZF : 0) | (pf ? F_PF : 0) | (cf ? F_CF : 0);
#else
    double p = dbl ? a->dbl[0] : a->f[0], q = dbl ? b->dbl[0] : b->f[0];
    (void)ordered_signal;
    if (isnan(p) || isnan(q))
        return F_ZF | F_PF | F_CF;
    return p < q ? F_CF : p == q ? F_ZF : 0;
#endif
}

/* Float -> integer with the MXCSR rounding (or truncation); out of range
 * and NaN give the "integer indefinite" value. */
static int64_t f2i(struct emu_cpu *cpu, double x, unsigned size, bool truncate)
{
    int64_t indef = size == 8 ? INT64_MIN : INT32_MIN;
    double lim = size == 8 ? 9223372036854775808.0 : 2147483648.0;
    if (isnan(x)) {
        cpu->mxcsr |= 1; /* IE */
        return indef;
    }
    double r;
    unsigned rc = truncate ? 3 : (cpu->mxcsr >> 13) & 3;
    double t = (double)(int64_t)0 + x;
    if (t >= 9223372036854775808.0 || t < -9223372036854775808.0) {
        cpu->mxcsr |= 1;
        return indef;
    }
    int64_t ti = (int64_t)t; /* toward zero */
    double frac = t - (double)ti;
    switch (rc) {
    case 0:
        if (frac > 0.5 || (frac == 0.5 && (ti & 1)))
            ti++;
        else if (frac < -0.5 || (frac == -0.5 && (ti & 1)))
            ti--;
        break;
    case 1:
        if (frac < 0)
            ti--;
        break;
    case 2:
        if (frac > 0)
            ti++;
        break;
    default:
        break;
    }
    r = (double)ti;
    if (r >= lim || r < -lim) {
        cpu->mxcsr |= 1;
        return indef;
    }
    if (frac != 0)
        cpu->mxcsr |= 0x20; /* PE */
    return ti;
}

/* ---- the instruction groups ---- */

static bool exec_moves(struct emu_cpu *cpu, struct insn *in, unsigned pfx)
{
    xmm_t *d = &cpu->xmm[in->reg];
    xmm_t v;
    uint8_t op = in->op;
    switch (op) {
    case 0x10:
        if (pfx == 0xf3 || pfx == 0xf2) {
            unsigned n = pfx == 0xf3 ? 4 : 8;
            v = src_op(cpu, in, n, false);
            if (in->mod == 3)
                memcpy(d, &v, n);
            else
                *d = v;
        } else {
            *d = src_op(cpu, in, 16, false);
        }
        return true;
    case 0x11:
        if (pfx == 0xf3 || pfx == 0xf2)
            store_op(cpu, in, d, pfx == 0xf3 ? 4 : 8, false);
        else
            store_op(cpu, in, d, 16, false);
        return true;
    case 0x12: case 0x13: case 0x16: case 0x17:
        if (pfx == 0xf2 || pfx == 0xf3)
            return false; /* SSE3 */
        if (op == 0x13 || op == 0x17) {
            if (in->mod == 3)
                return false;
            v.q[0] = d->q[op == 0x17];
            store_op(cpu, in, &v, 8, false);
            return true;
        }
        if (in->mod == 3) { /* movhlps / movlhps */
            if (op == 0x12)
                d->q[0] = cpu->xmm[in->rm].q[1];
            else
                d->q[1] = cpu->xmm[in->rm].q[0];
            return true;
        }
        v = src_op(cpu, in, 8, false);
        d->q[op == 0x16] = v.q[0];
        return true;
    case 0x28:
        *d = src_op(cpu, in, 16, true);
        return true;
    case 0x29: case 0x2b:
        if (op == 0x2b && in->mod == 3)
            return false;
        store_op(cpu, in, d, 16, true);
        return true;
    case 0x6f:
        if (pfx != 0x66 && pfx != 0xf3)
            return false;
        *d = src_op(cpu, in, 16, pfx == 0x66);
        return true;
    case 0x7f:
        if (pfx != 0x66 && pfx != 0xf3)
            return false;
        store_op(cpu, in, d, 16, pfx == 0x66);
        return true;
    case 0xe7:
        if (pfx != 0x66 || in->mod == 3)
            return false;
        store_op(cpu, in, d, 16, true);
        return true;
    case 0x6e:
        if (pfx != 0x66)
            return false;
        memset(d, 0, sizeof(*d));
        d->q[0] = gpr_rm(cpu, in, in->rex & 8 ? 8 : 4);
        return true;
    case 0x7e:
        if (pfx == 0xf3) { /* movq xmm, xmm/m64 */
            v = src_op(cpu, in, 8, false);
            d->q[0] = v.q[0];
            d->q[1] = 0;
            return true;
        }
        if (pfx != 0x66)
            return false;
        {
            unsigned n = in->rex & 8 ? 8 : 4;
            uint64_t val = n == 8 ? d->q[0] : d->d[0];
            if (in->mod == 3)
                cpu_reg_set(cpu, in->rm, n, true, val);
            else
                cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), val, n);
        }
        return true;
    case 0xd6:
        if (pfx != 0x66)
            return false;
        if (in->mod == 3) {
            cpu->xmm[in->rm].q[0] = d->q[0];
            cpu->xmm[in->rm].q[1] = 0;
        } else {
            store_op(cpu, in, d, 8, false);
        }
        return true;
    }
    return false;
}

static bool exec_float(struct emu_cpu *cpu, struct insn *in, unsigned pfx)
{
    uint8_t op = in->op;
    xmm_t *d = &cpu->xmm[in->reg];
    bool scalar = pfx == 0xf3 || pfx == 0xf2;
    bool dbl = pfx == 0x66 || pfx == 0xf2;
    unsigned msize = scalar ? (dbl ? 8 : 4) : 16;
    uint32_t host;
    xmm_t s;

    switch (op) {
    case 0x51: case 0x58: case 0x59: case 0x5c: case 0x5d: case 0x5e: case 0x5f:
        s = src_op(cpu, in, msize, !scalar);
        host = fp_begin(cpu);
        if (dbl)
            for (unsigned i = 0; i < (scalar ? 1u : 2u); i++)
                d->dbl[i] = d_op(op, d->dbl[i], s.dbl[i]);
        else
            for (unsigned i = 0; i < (scalar ? 1u : 4u); i++)
                d->f[i] = f_op(op, d->f[i], s.f[i]);
        fp_end(cpu, host);
        return true;
    case 0x54: case 0x55: case 0x56: case 0x57:
        if (scalar)
            return false;
        s = src_op(cpu, in, 16, true);
        for (int i = 0; i < 2; i++) {
            uint64_t a = d->q[i], bq = s.q[i];
            d->q[i] = op == 0x54 ? a & bq : op == 0x55 ? ~a & bq : op == 0x56 ? a | bq : a ^ bq;
        }
        return true;
    case 0x14: case 0x15: {
        if (scalar)
            return false;
        s = src_op(cpu, in, 16, true);
        xmm_t r;
        unsigned h = op == 0x15;
        if (dbl) {
            r.q[0] = d->q[h];
            r.q[1] = s.q[h];
        } else {
            r.d[0] = d->d[2 * h];
            r.d[1] = s.d[2 * h];
            r.d[2] = d->d[2 * h + 1];
            r.d[3] = s.d[2 * h + 1];
        }
        *d = r;
        return true;
    }
    case 0xc6: {
        if (scalar)
            return false;
        s = src_op(cpu, in, 16, true);
        xmm_t r;
        unsigned imm8 = (unsigned)in->imm;
        if (dbl) {
            r.q[0] = d->q[imm8 & 1];
            r.q[1] = s.q[(imm8 >> 1) & 1];
        } else {
            r.d[0] = d->d[imm8 & 3];
            r.d[1] = d->d[(imm8 >> 2) & 3];
            r.d[2] = s.d[(imm8 >> 4) & 3];
            r.d[3] = s.d[(imm8 >> 6) & 3];
        }
        *d = r;
        return true;
    }
    case 0xc2: {
        s = src_op(cpu, in, msize, !scalar);
        unsigned pred = (unsigned)in->imm & 7;
        unsigned n = scalar ? 1 : dbl ? 2 : 4;
        xmm_t r = *d;
        host = fp_begin(cpu);
        for (unsigned i = 0; i < n; i++) {
            bool t = fcmp(pred, d, &s, i, dbl);
            if (dbl)
                r.q[i] = t ? ~0ull : 0;
            else
                r.d[i] = t ? ~0u : 0;
        }
        fp_end(cpu, host);
        *d = r;
        return true;
    }
    case 0x2e: case 0x2f: {
        if (scalar)
            return false;
        s = src_op(cpu, in, dbl ? 8 : 4, false);
        host = fp_begin(cpu);
        uint64_t f = fcomi(op == 0x2f, d, &s, dbl);
        fp_end(cpu, host);
        cpu_flags_materialize(cpu);
        cpu->rflags = (cpu->rflags & ~(uint64_t)F_ARITH) | f;
        return true;
    }
    case 0x50: {
        if (scalar || in->mod != 3)
            return false;
        const xmm_t *x = &cpu->xmm[in->rm];
        uint32_t m = 0;
        if (dbl)
            m = (uint32_t)((x->q[0] >> 63) | ((x->q[1] >> 63) << 1));
        else
            for (int i = 0; i < 4; i++)
                m |= (x->d[i] >> 31) << i;
        cpu_reg_set(cpu, in->reg, 4, true, m);
        return true;
    }
    case 0x2a: { /* cvtsi2ss / cvtsi2sd */
        if (!scalar)
            return false;
        unsigned n = in->rex & 8 ? 8 : 4;
        int64_t v = sext(gpr_rm(cpu, in, n), n);
        host = fp_begin(cpu);
        if (dbl) {
            volatile double r = (double)v;
            d->dbl[0] = r;
        } else {
            volatile float r = (float)v;
            d->f[0] = r;
        }
        fp_end(cpu, host);
        return true;
    }
    case 0x2c: case 0x2d: { /* cvt(t)ss2si / cvt(t)sd2si */
        if (!scalar)
            return false;
        unsigned n = in->rex & 8 ? 8 : 4;
        s = src_op(cpu, in, dbl ? 8 : 4, false);
        double x = dbl ? s.dbl[0] : s.f[0];
        int64_t r = f2i(cpu, x, n, op == 0x2c);
        cpu_reg_set(cpu, in->reg, n, true, (uint64_t)r);
        return true;
    }
    case 0x5a: { /* cvtps2pd cvtpd2ps cvtss2sd cvtsd2ss */
        xmm_t r = *d;
        s = src_op(cpu, in, pfx == 0 ? 8 : pfx == 0x66 ? 16 : msize, pfx == 0x66);
        host = fp_begin(cpu);
        switch (pfx) {
        case 0: r.dbl[0] = s.f[0]; r.dbl[1] = s.f[1]; break;
        case 0x66: r.f[0] = (float)s.dbl[0]; r.f[1] = (float)s.dbl[1]; r.q[1] = 0; break;
        case 0xf3: r.dbl[0] = s.f[0]; break;
        default: { volatile float t = (float)s.dbl[0]; r.f[0] = t; break; }
        }
        fp_end(cpu, host);
        *d = r;
        return true;
    }
    case 0x5b: { /* cvtdq2ps cvtps2dq cvttps2dq */
        if (pfx == 0xf2)
            return false;
        s = src_op(cpu, in, 16, true);
        xmm_t r;
        host = fp_begin(cpu);
        for (int i = 0; i < 4; i++) {
            if (pfx == 0) {
                volatile float t = (float)s.sd[i];
                r.f[i] = t;
            } else {
                r.sd[i] = (int32_t)f2i(cpu, s.f[i], 4, pfx == 0xf3);
            }
        }
        fp_end(cpu, host);
        *d = r;
        return true;
    }
    case 0xe6: { /* cvttpd2dq (66) cvtdq2pd (F3) cvtpd2dq (F2) */
        if (pfx == 0)
            return false;
        s = src_op(cpu, in, pfx == 0xf3 ? 8 : 16, pfx != 0xf3);
        xmm_t r;
        memset(&r, 0, sizeof(r));
        if (pfx == 0xf3) {
            r.dbl[0] = s.sd[0];
            r.dbl[1] = s.sd[1];
        } else {
            r.sd[0] = (int32_t)f2i(cpu, s.dbl[0], 4, pfx == 0x66);
            r.sd[1] = (int32_t)f2i(cpu, s.dbl[1], 4, pfx == 0x66);
        }
        *d = r;
        return true;
    }
    }
    return false;
}

static bool exec_shuffle(struct emu_cpu *cpu, struct insn *in, unsigned pfx)
{
    uint8_t op = in->op;
    xmm_t *d = &cpu->xmm[in->reg];
    unsigned imm8 = (unsigned)in->imm;
    switch (op) {
    case 0x70: {
        if (pfx == 0)
            return false;
        xmm_t s = src_op(cpu, in, 16, pfx == 0x66), r = s;
        if (pfx == 0x66)
            for (int i = 0; i < 4; i++)
                r.d[i] = s.d[(imm8 >> (2 * i)) & 3];
        else if (pfx == 0xf2)
            for (int i = 0; i < 4; i++)
                r.w[i] = s.w[(imm8 >> (2 * i)) & 3];
        else
            for (int i = 0; i < 4; i++)
                r.w[4 + i] = s.w[4 + ((imm8 >> (2 * i)) & 3)];
        *d = r;
        return true;
    }
    case 0x71: case 0x72: case 0x73: {
        if (pfx != 0x66 || in->mod != 3)
            return false;
        xmm_t *x = &cpu->xmm[in->rm];
        unsigned ext = in->reg & 7, esize = op == 0x71 ? 2 : op == 0x72 ? 4 : 8;
        if (op == 0x73 && (ext == 3 || ext == 7)) {
            byte_shift(x, imm8, ext == 7);
            return true;
        }
        if (ext == 2)
            shift_words(x, esize, 0, imm8);
        else if (ext == 4 && op != 0x73)
            shift_words(x, esize, 1, imm8);
        else if (ext == 6)
            shift_words(x, esize, 2, imm8);
        else
            return false;
        return true;
    }
    case 0xc4: { /* pinsrw */
        if (pfx != 0x66)
            return false;
        d->w[imm8 & 7] = (uint16_t)gpr_rm(cpu, in, 2);
        return true;
    }
    case 0xc5: { /* pextrw */
        if (pfx != 0x66 || in->mod != 3)
            return false;
        cpu_reg_set(cpu, in->reg, 4, true, cpu->xmm[in->rm].w[imm8 & 7]);
        return true;
    }
    case 0xd7: { /* pmovmskb */
        if (pfx != 0x66 || in->mod != 3)
            return false;
        uint32_t m = 0;
        for (int i = 0; i < 16; i++)
            m |= (uint32_t)(cpu->xmm[in->rm].b[i] >> 7) << i;
        cpu_reg_set(cpu, in->reg, 4, true, m);
        return true;
    }
    }
    return false;
}

/* 0F AE: FXSAVE, FXRSTOR, LDMXCSR, STMXCSR, fences, CLFLUSH. */
static bool exec_group15(struct emu_cpu *cpu, struct insn *in)
{
    unsigned ext = in->reg & 7;
    if (in->mod == 3)
        return ext >= 5; /* lfence / mfence / sfence */
    if (in->rep || in->opsize_prefix) {
        if (ext == 7)
            return true; /* clflushopt / clwb: nothing cached */
        return false;
    }
    uint64_t ea = cpu_ea(cpu, in);
    int seg = cpu_ea_seg(in);
    switch (ext) {
    case 0: case 1: {
        if (cpu->cr0 & (CR0_EM | CR0_TS))
            cpu_raise(cpu, (cpu->cr0 & CR0_EM) ? EXC_UD : EXC_NM, false, 0);
        uint64_t lin = cpu_lin(cpu, seg, ea, 512, ext ? ACC_READ : ACC_WRITE);
        if (lin & 15)
            cpu_raise_gp(cpu, 0);
        if (ext == 0)
            cpu_fxsave(cpu, lin);
        else
            cpu_fxrstor(cpu, lin);
        return true;
    }
    case 2: case 3:
        check_sse(cpu);
        if (ext == 2) {
            uint32_t v = (uint32_t)cpu_read(cpu, seg, ea, 4);
            if (v & ~MXCSR_MASK)
                cpu_raise_gp(cpu, 0);
            cpu->mxcsr = v;
        } else {
            cpu_write(cpu, seg, ea, cpu->mxcsr, 4);
        }
        return true;
    case 7:
        cpu_lin(cpu, seg, ea, 1, ACC_READ); /* clflush: segment checks only */
        return true;
    }
    return false;
}

/* ---- MMX: MM0-7 alias the x87 registers' 64-bit significands ---- */

static uint64_t mm_get(struct emu_cpu *cpu, unsigned i)
{
    return cpu->fpr[i & 7].mant;
}

static void mm_set(struct emu_cpu *cpu, unsigned i, uint64_t v)
{
    cpu->fpr[i & 7].mant = v;
    cpu->fpr[i & 7].exp = 0xffff;
}

static uint64_t mm_src(struct emu_cpu *cpu, const struct insn *in)
{
    if (in->mod == 3)
        return mm_get(cpu, in->rm);
    return cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), 8);
}

static bool exec_mmx(struct emu_cpu *cpu, struct insn *in)
{
    uint8_t op = in->op;
    unsigned r = in->reg & 7;
    if (cpu->cr0 & CR0_EM)
        cpu_raise_ud(cpu);
    if (cpu->cr0 & CR0_TS)
        cpu_raise(cpu, EXC_NM, false, 0);
    cpu->ftop = 0;
    cpu->ftw = 0xff;
    switch (op) {
    case 0x6e:
        mm_set(cpu, r, gpr_rm(cpu, in, in->rex & 8 ? 8 : 4));
        return true;
    case 0x7e: {
        unsigned n = in->rex & 8 ? 8 : 4;
        uint64_t v = mm_get(cpu, r) & size_mask(n);
        if (in->mod == 3)
            cpu_reg_set(cpu, in->rm, n, true, v);
        else
            cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), v, n);
        return true;
    }
    case 0x6f:
        mm_set(cpu, r, mm_src(cpu, in));
        return true;
    case 0x7f: case 0xe7:
        if (in->mod == 3) {
            if (op == 0xe7)
                return false;
            mm_set(cpu, in->rm, mm_get(cpu, r));
        } else {
            cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), mm_get(cpu, r), 8);
        }
        return true;
    case 0x70: {
        uint64_t v = mm_src(cpu, in), res = 0;
        for (unsigned i = 0; i < 4; i++)
            res |= ((v >> (16 * ((in->imm >> (2 * i)) & 3))) & 0xffff) << (16 * i);
        mm_set(cpu, r, res);
        return true;
    }
    case 0x71: case 0x72: case 0x73: {
        if (in->mod != 3)
            return false;
        unsigned ext = in->reg & 7, esize = op == 0x71 ? 2 : op == 0x72 ? 4 : 8;
        xmm_t x;
        memset(&x, 0, sizeof(x));
        x.q[0] = mm_get(cpu, in->rm);
        if (ext == 2)
            shift_words(&x, esize, 0, in->imm);
        else if (ext == 4 && op != 0x73)
            shift_words(&x, esize, 1, in->imm);
        else if (ext == 6)
            shift_words(&x, esize, 2, in->imm);
        else
            return false;
        mm_set(cpu, in->rm, x.q[0]);
        return true;
    }
    case 0xc4: {
        uint64_t v = mm_get(cpu, r);
        unsigned sh = 16 * (in->imm & 3);
        v = (v & ~(0xffffull << sh)) | ((gpr_rm(cpu, in, 2) & 0xffff) << sh);
        mm_set(cpu, r, v);
        return true;
    }
    case 0xc5:
        if (in->mod != 3)
            return false;
        cpu_reg_set(cpu, in->reg, 4, true, (mm_get(cpu, in->rm) >> (16 * (in->imm & 3))) & 0xffff);
        return true;
    case 0xd7: {
        if (in->mod != 3)
            return false;
        uint64_t v = mm_get(cpu, in->rm);
        uint32_t m = 0;
        for (unsigned i = 0; i < 8; i++)
            m |= (uint32_t)((v >> (8 * i + 7)) & 1) << i;
        cpu_reg_set(cpu, in->reg, 4, true, m);
        return true;
    }
    case 0x6c: case 0x6d: case 0xd6: case 0xe6: case 0xf7:
        return false;
    }
    /* Element-wise ops: the 128-bit code on the low half. Unpack-high and
     * pack ops need their operands placed so the low 64 bits come out right. */
    uint64_t a = mm_get(cpu, r), b = mm_src(cpu, in);
    xmm_t d, sv;
    memset(&d, 0, sizeof(d));
    memset(&sv, 0, sizeof(sv));
    if (op >= 0x68 && op <= 0x6a) {
        d.q[1] = a;
        sv.q[1] = b;
        if (!int_op(cpu, op, &d, &sv))
            return false;
        mm_set(cpu, r, d.q[1]);
        return true;
    }
    if (op == 0x63 || op == 0x67 || op == 0x6b) {
        d.q[0] = a;
        d.q[1] = b;
        sv = d;
        if (!int_op(cpu, op, &d, &sv))
            return false;
        mm_set(cpu, r, d.q[0]);
        return true;
    }
    d.q[0] = a;
    sv.q[0] = b;
    if (!int_op(cpu, op, &d, &sv))
        return false;
    mm_set(cpu, r, d.q[0]);
    return true;
}

bool cpu_exec_sse(struct emu_cpu *cpu, struct insn *in)
{
    if (in->map != 1)
        return false; /* 0F38 / 0F3A: SSSE3 and later are not offered */
    uint8_t op = in->op;
    unsigned pfx = in->rep ? in->rep : in->opsize_prefix ? 0x66 : 0;

    if (op == 0xae)
        return exec_group15(cpu, in);
    if (op == 0xc3) { /* movnti */
        if (in->mod == 3)
            return false;
        unsigned n = in->rex & 8 ? 8 : 4;
        cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), cpu_reg_get(cpu, in->reg, n, true), n);
        return true;
    }
    if (op == 0x77) { /* emms */
        cpu->ftw = 0;
        return true;
    }
    bool sse_op = (op >= 0x10 && op <= 0x17) || (op >= 0x28 && op <= 0x2f) ||
                  (op >= 0x50 && op <= 0x7f) || op == 0xc2 || (op >= 0xc4 && op <= 0xc6) ||
                  op >= 0xd0;
    if (!sse_op)
        return false;
    if (pfx == 0 && ((op >= 0x60 && op <= 0x7f) || op >= 0xd0 || op == 0xc4 || op == 0xc5))
        return exec_mmx(cpu, in);
    check_sse(cpu);
    if (exec_moves(cpu, in, pfx) || exec_float(cpu, in, pfx) || exec_shuffle(cpu, in, pfx))
        return true;
    if (pfx == 0x66 && (op >= 0x60 || op == 0xd0)) {
        xmm_t s = src_op(cpu, in, 16, true);
        return int_op(cpu, op, &cpu->xmm[in->reg], &s);
    }
    return false;
}
