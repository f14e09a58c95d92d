/* x87 FPU basics (loads/stores of all formats, arithmetic, compares,
 * constants, FSQRT/FRNDINT/FSCALE/FPREM and the transcendentals through the
 * host's own x87, control/status words) and FXSAVE/FXRSTOR.
 *
 * Registers are kept in their architectural 80-bit form; arithmetic uses the
 * host's long double (the same 80-bit format on x86 hosts) with the guest's
 * FCW (rounding, precision) installed. Floating-point exceptions are always
 * treated as masked: status flags are not modelled beyond C0-C3, TOP and SF. */
#include <string.h>

#include "accel/emu/cpu_internal.h"

#define FSW_C0 (1u << 8)
#define FSW_C1 (1u << 9)
#define FSW_C2 (1u << 10)
#define FSW_C3 (1u << 14)

void cpu_fpu_reset(struct emu_cpu *cpu)
{
    cpu->fcw = 0x37f;
    cpu->fsw = 0;
    cpu->ftw = 0;
    cpu->ftop = 0;
    cpu->fop = 0;
    cpu->fip = cpu->fdp = 0;
    memset(cpu->fpr, 0, sizeof(cpu->fpr));
    memset(cpu->xmm, 0, sizeof(cpu->xmm));
    cpu->mxcsr = 0x1f80;
}

/* ---- 80-bit <-> long double ---- */

static long double to_ld(uint64_t mant, uint16_t exp)
{
    long double v = 0;
#if defined(__x86_64__) || defined(__i386__)
    memcpy(&v, &mant, 8);
    memcpy((uint8_t *)&v + 8, &exp, 2);
#else
    (void)mant;
    (void)exp;
#endif
    return v;
}

static void from_ld(long double v, uint64_t *mant, uint16_t *exp)
{
#if defined(__x86_64__) || defined(__i386__)
    memcpy(mant, &v, 8);
    memcpy(exp, (uint8_t *)&v + 8, 2);
#else
    (void)v;
    *mant = 0;
    *exp = 0;
#endif
}

static unsigned phys(struct emu_cpu *cpu, unsigned i)
{
    return (cpu->ftop + i) & 7;
}

static long double st_get(struct emu_cpu *cpu, unsigned i)
{
    unsigned p = phys(cpu, i);
    return to_ld(cpu->fpr[p].mant, cpu->fpr[p].exp);
}

static void st_set(struct emu_cpu *cpu, unsigned i, long double v)
{
    unsigned p = phys(cpu, i);
    from_ld(v, &cpu->fpr[p].mant, &cpu->fpr[p].exp);
    cpu->ftw |= (uint16_t)(1u << p);
}

static void fpush(struct emu_cpu *cpu, long double v)
{
    cpu->ftop = (cpu->ftop - 1) & 7;
    st_set(cpu, 0, v);
}

static void fpop(struct emu_cpu *cpu)
{
    cpu->ftw &= (uint16_t)~(1u << phys(cpu, 0));
    cpu->ftop = (cpu->ftop + 1) & 7;
}

/* ---- host FCW around arithmetic ---- */

static uint16_t fp87_begin(struct emu_cpu *cpu)
{
    uint16_t host = 0x37f;
#if defined(__x86_64__) || defined(__i386__)
    uint16_t guest = (uint16_t)(cpu->fcw | 0x3f);
    __asm__ volatile("fnstcw %0" : "=m"(host));
    __asm__ volatile("fldcw %0" : : "m"(guest) : "memory");
#else
    (void)cpu;
#endif
    return host;
}

static void fp87_end(uint16_t host)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("fnclex; fldcw %0" : : "m"(host) : "memory");
#else
    (void)host;
#endif
}

static long double arith(unsigned op, long double a, long double b)
{
    volatile long double x = a, y = b, r;
    switch (op & 7) {
    case 0: r = x + y; break;
    case 1: r = x * y; break;
    case 4: r = x - y; break;
    case 5: r = y - x; break;
    case 6: r = x / y; break;
    default: r = y / x; break;
    }
    return r;
}

static void set_cc(struct emu_cpu *cpu, long double a, long double b)
{
    uint16_t f = cpu->fsw & (uint16_t)~(FSW_C0 | FSW_C2 | FSW_C3);
    if (a != a || b != b)
        f |= FSW_C0 | FSW_C2 | FSW_C3;
    else if (a < b)
        f |= FSW_C0;
    else if (a == b)
        f |= FSW_C3;
    cpu->fsw = f;
}

static void set_eflags_cmp(struct emu_cpu *cpu, long double a, long double b)
{
    uint64_t f;
    if (a != a || b != b)
        f = F_ZF | F_PF | F_CF;
    else if (a < b)
        f = F_CF;
    else if (a == b)
        f = F_ZF;
    else
        f = 0;
    cpu_flags_materialize(cpu);
    cpu->rflags = (cpu->rflags & ~(uint64_t)F_ARITH) | f;
}

/* ---- memory operands ---- */

static uint64_t ea_lin(struct emu_cpu *cpu, const struct insn *in, unsigned size, enum acc acc)
{
    return cpu_lin(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), size, acc);
}

static long double load_mem(struct emu_cpu *cpu, const struct insn *in, unsigned kind)
{
    /* kind: 0 m32fp, 1 m32int, 2 m64fp, 3 m16int, 4 m64int, 5 m80fp */
    bool user = cpu->cpl == 3;
    switch (kind) {
    case 0: {
        uint32_t v = (uint32_t)mmu_read_lin(cpu, ea_lin(cpu, in, 4, ACC_READ), 4, ACC_READ, user);
        float f;
        memcpy(&f, &v, 4);
        return f;
    }
    case 1:
        return (int32_t)mmu_read_lin(cpu, ea_lin(cpu, in, 4, ACC_READ), 4, ACC_READ, user);
    case 2: {
        uint64_t v = mmu_read_lin(cpu, ea_lin(cpu, in, 8, ACC_READ), 8, ACC_READ, user);
        double d;
        memcpy(&d, &v, 8);
        return d;
    }
    case 3:
        return (int16_t)mmu_read_lin(cpu, ea_lin(cpu, in, 2, ACC_READ), 2, ACC_READ, user);
    case 4:
        return (int64_t)mmu_read_lin(cpu, ea_lin(cpu, in, 8, ACC_READ), 8, ACC_READ, user);
    default: {
        uint64_t lin = ea_lin(cpu, in, 10, ACC_READ);
        uint64_t m = mmu_read_lin(cpu, lin, 8, ACC_READ, user);
        uint16_t e = (uint16_t)mmu_read_lin(cpu, lin + 8, 2, ACC_READ, user);
        return to_ld(m, e);
    }
    }
}

static int64_t round_int(struct emu_cpu *cpu, long double v, int64_t lo, int64_t hi, int64_t indef)
{
    long double r;
#if defined(__x86_64__) || defined(__i386__)
    uint16_t h = fp87_begin(cpu);
    r = v;
    __asm__("frndint" : "+t"(r));
    fp87_end(h);
#else
    (void)cpu;
    r = v;
#endif
    if (r != r || r < (long double)lo || r > (long double)hi)
        return indef;
    return (int64_t)r;
}

static void store_mem(struct emu_cpu *cpu, const struct insn *in, unsigned kind, long double v)
{
    bool user = cpu->cpl == 3;
    uint16_t h;
    switch (kind) {
    case 0: {
        h = fp87_begin(cpu);
        volatile float f = (float)v;
        fp87_end(h);
        float ff = f;
        uint32_t u;
        memcpy(&u, &ff, 4);
        mmu_write_lin(cpu, ea_lin(cpu, in, 4, ACC_WRITE), u, 4, user);
        return;
    }
    case 1:
        mmu_write_lin(cpu, ea_lin(cpu, in, 4, ACC_WRITE),
                      (uint64_t)round_int(cpu, v, INT32_MIN, INT32_MAX, INT32_MIN), 4, user);
        return;
    case 2: {
        h = fp87_begin(cpu);
        volatile double d = (double)v;
        fp87_end(h);
        double dd = d;
        uint64_t u;
        memcpy(&u, &dd, 8);
        mmu_write_lin(cpu, ea_lin(cpu, in, 8, ACC_WRITE), u, 8, user);
        return;
    }
    case 3:
        mmu_write_lin(cpu, ea_lin(cpu, in, 2, ACC_WRITE),
                      (uint64_t)round_int(cpu, v, INT16_MIN, INT16_MAX, INT16_MIN), 2, user);
        return;
    case 4:
        mmu_write_lin(cpu, ea_lin(cpu, in, 8, ACC_WRITE),
                      (uint64_t)round_int(cpu, v, INT64_MIN, INT64_MAX, INT64_MIN), 8, user);
        return;
    default: {
        uint64_t lin = ea_lin(cpu, in, 10, ACC_WRITE), m;
        uint16_t e;
        from_ld(v, &m, &e);
        mmu_translate(cpu, lin + 9, ACC_WRITE, user);
        mmu_write_lin(cpu, lin, m, 8, user);
        mmu_write_lin(cpu, lin + 8, e, 2, user);
        return;
    }
    }
}

static uint16_t fsw_value(const struct emu_cpu *cpu)
{
    return (uint16_t)((cpu->fsw & ~0x3800u) | ((unsigned)cpu->ftop << 11));
}

/* ---- transcendental and misc D9 E0-FF ops via the host x87 ---- */
static void exec_d9_special(struct emu_cpu *cpu, uint8_t modrm)
{
    long double a = st_get(cpu, 0), b = st_get(cpu, 1);
    uint16_t h;
    switch (modrm) {
    case 0xe0: st_set(cpu, 0, -a); return;
    case 0xe1: st_set(cpu, 0, a < 0 ? -a : a); return;
    case 0xe4: set_cc(cpu, a, 0.0L); return;
    case 0xe5: { /* fxam */
        uint16_t f = cpu->fsw & (uint16_t)~(FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3);
        unsigned p = phys(cpu, 0);
        uint16_t e = cpu->fpr[p].exp;
        uint64_t m = cpu->fpr[p].mant;
        if (e & 0x8000)
            f |= FSW_C1;
        if (!(cpu->ftw & (1u << p)))
            f |= FSW_C3 | FSW_C0; /* empty */
        else if ((e & 0x7fff) == 0x7fff)
            f |= (m << 1) ? FSW_C0 : (FSW_C0 | FSW_C2); /* NaN / infinity */
        else if ((e & 0x7fff) == 0 && m == 0)
            f |= FSW_C3;
        else if ((e & 0x7fff) == 0)
            f |= FSW_C3 | FSW_C2;
        else
            f |= FSW_C2;
        cpu->fsw = f;
        return;
    }
    case 0xe8: fpush(cpu, 1.0L); return;
    case 0xe9: fpush(cpu, 3.321928094887362347870319429489390175864831393L); return;
    case 0xea: fpush(cpu, 1.442695040888963407359924681001892137426645954L); return;
    case 0xeb: fpush(cpu, 3.141592653589793238462643383279502884197169399L); return;
    case 0xec: fpush(cpu, 0.301029995663981195213738894724493026768189881L); return;
    case 0xed: fpush(cpu, 0.693147180559945309417232121458176568075500134L); return;
    case 0xee: fpush(cpu, 0.0L); return;
    case 0xf6: cpu->ftop = (cpu->ftop - 1) & 7; return;
    case 0xf7: cpu->ftop = (cpu->ftop + 1) & 7; return;
    }
#if defined(__x86_64__) || defined(__i386__)
    h = fp87_begin(cpu);
    uint16_t sw = 0;
    switch (modrm) {
    case 0xf0: __asm__("f2xm1" : "+t"(a)); st_set(cpu, 0, a); break;
    case 0xf1: __asm__("fyl2x" : "+t"(a), "+u"(b)); fpop(cpu); st_set(cpu, 0, b); break;
    case 0xf2: __asm__("fptan; fstp %%st(0)" : "+t"(a)); st_set(cpu, 0, a); fpush(cpu, 1.0L); break;
    case 0xf3: __asm__("fpatan" : "+t"(a), "+u"(b)); fpop(cpu); st_set(cpu, 0, b); break;
    case 0xf8: __asm__("fprem; fnstsw %%ax" : "+t"(a), "=a"(sw) : "u"(b)); st_set(cpu, 0, a);
        cpu->fsw = (uint16_t)((cpu->fsw & ~0x4700u) | (sw & 0x4700u)); break;
    case 0xf5: __asm__("fprem1; fnstsw %%ax" : "+t"(a), "=a"(sw) : "u"(b)); st_set(cpu, 0, a);
        cpu->fsw = (uint16_t)((cpu->fsw & ~0x4700u) | (sw & 0x4700u)); break;
    case 0xf9: __asm__("fyl2xp1" : "+t"(a), "+u"(b)); fpop(cpu); st_set(cpu, 0, b); break;
    case 0xfa: __asm__("fsqrt" : "+t"(a)); st_set(cpu, 0, a); break;
    case 0xfb: { long double c = a; __asm__("fsin" : "+t"(a)); __asm__("fcos" : "+t"(c));
        st_set(cpu, 0, a); fpush(cpu, c); break; }
    case 0xfc: __asm__("frndint" : "+t"(a)); st_set(cpu, 0, a); break;
    case 0xfd: __asm__("fscale" : "+t"(a) : "u"(b)); st_set(cpu, 0, a); break;
    case 0xfe: __asm__("fsin" : "+t"(a)); st_set(cpu, 0, a); break;
    case 0xff: __asm__("fcos" : "+t"(a)); st_set(cpu, 0, a); break;
    case 0xf4: { /* fxtract */
        long double sig = a, ex;
        __asm__("fxtract" : "+t"(sig), "=u"(ex));
        st_set(cpu, 0, ex);
        fpush(cpu, sig);
        break;
    }
    default:
        fp87_end(h);
        cpu_raise_ud(cpu);
    }
    fp87_end(h);
#else
    (void)h;
    (void)b;
    cpu_raise_ud(cpu);
#endif
}

static void fninit(struct emu_cpu *cpu)
{
    cpu->fcw = 0x37f;
    cpu->fsw = 0;
    cpu->ftw = 0;
    cpu->ftop = 0;
    cpu->fip = cpu->fdp = 0;
    cpu->fop = 0;
}

bool cpu_exec_x87(struct emu_cpu *cpu, struct insn *in)
{
    uint8_t op = in->op;
    unsigned ext = in->reg & 7, i = in->rm & 7;
    if (cpu->cr0 & (CR0_EM | CR0_TS))
        cpu_raise(cpu, EXC_NM, false, 0);
    cpu->fop = (uint16_t)(((op & 7) << 8) | in->modrm);
    uint16_t h;

    if (in->mod != 3) {
        switch (op) {
        case 0xd8: case 0xda: case 0xdc: case 0xde: {
            static const unsigned kinds[4] = {0, 1, 2, 3};
            long double m = load_mem(cpu, in, kinds[(op - 0xd8) / 2]);
            long double a = st_get(cpu, 0);
            if (ext == 2 || ext == 3) {
                set_cc(cpu, a, m);
                if (ext == 3)
                    fpop(cpu);
                return true;
            }
            h = fp87_begin(cpu);
            long double r = arith(ext == 0 ? 0 : ext == 1 ? 1 : ext, a, m);
            fp87_end(h);
            st_set(cpu, 0, r);
            return true;
        }
        case 0xd9:
            switch (ext) {
            case 0: fpush(cpu, load_mem(cpu, in, 0)); return true;
            case 2: store_mem(cpu, in, 0, st_get(cpu, 0)); return true;
            case 3: store_mem(cpu, in, 0, st_get(cpu, 0)); fpop(cpu); return true;
            case 5:
                cpu->fcw = (uint16_t)cpu_read(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), 2);
                return true;
            case 7:
                cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), cpu->fcw, 2);
                return true;
            case 4: case 6: {
                /* fldenv / fnstenv, 28-byte protected-mode 32-bit format */
                uint64_t ea = cpu_ea(cpu, in);
                int seg = cpu_ea_seg(in);
                if (ext == 6) {
                    cpu_write(cpu, seg, ea, cpu->fcw, 4);
                    cpu_write(cpu, seg, ea + 4, fsw_value(cpu), 4);
                    uint32_t tw = 0;
                    for (unsigned p = 0; p < 8; p++)
                        if (!(cpu->ftw & (1u << p)))
                            tw |= 3u << (2 * p);
                    cpu_write(cpu, seg, ea + 8, tw, 4);
                    for (unsigned k = 12; k < 28; k += 4)
                        cpu_write(cpu, seg, ea + k, 0, 4);
                    cpu->fcw |= 0x3f;
                } else {
                    cpu->fcw = (uint16_t)cpu_read(cpu, seg, ea, 2);
                    uint16_t sw = (uint16_t)cpu_read(cpu, seg, ea + 4, 2);
                    uint32_t tw = (uint32_t)cpu_read(cpu, seg, ea + 8, 2);
                    cpu->fsw = sw & (uint16_t)~0x3800u;
                    cpu->ftop = (sw >> 11) & 7;
                    cpu->ftw = 0;
                    for (unsigned p = 0; p < 8; p++)
                        if (((tw >> (2 * p)) & 3) != 3)
                            cpu->ftw |= (uint16_t)(1u << p);
                }
                return true;
            }
            }
            break;
        case 0xdb:
            switch (ext) {
            case 0: fpush(cpu, load_mem(cpu, in, 1)); return true;
            case 1: { /* fisttp m32 (SSE3) not offered */
                break;
            }
            case 2: store_mem(cpu, in, 1, st_get(cpu, 0)); return true;
            case 3: store_mem(cpu, in, 1, st_get(cpu, 0)); fpop(cpu); return true;
            case 5: fpush(cpu, load_mem(cpu, in, 5)); return true;
            case 7: store_mem(cpu, in, 5, st_get(cpu, 0)); fpop(cpu); return true;
            }
            break;
        case 0xdd:
            switch (ext) {
            case 0: fpush(cpu, load_mem(cpu, in, 2)); return true;
            case 2: store_mem(cpu, in, 2, st_get(cpu, 0)); return true;
            case 3: store_mem(cpu, in, 2, st_get(cpu, 0)); fpop(cpu); return true;
            case 7: cpu_write(cpu, cpu_ea_seg(in), cpu_ea(cpu, in), fsw_value(cpu), 2); return true;
            }
            break;
        case 0xdf:
            switch (ext) {
            case 0: fpush(cpu, load_mem(cpu, in, 3)); return true;
            case 2: store_mem(cpu, in, 3, st_get(cpu, 0)); return true;
            case 3: store_mem(cpu, in, 3, st_get(cpu, 0)); fpop(cpu); return true;
            case 5: fpush(cpu, load_mem(cpu, in, 4)); return true;
            case 7: store_mem(cpu, in, 4, st_get(cpu, 0)); fpop(cpu); return true;
            }
            break;
        }
        return false;
    }

    /* register forms */
    long double a = st_get(cpu, 0), s = st_get(cpu, i);
    switch (op) {
    case 0xd8:
        if (ext == 2 || ext == 3) {
            set_cc(cpu, a, s);
            if (ext == 3)
                fpop(cpu);
            return true;
        }
        h = fp87_begin(cpu);
        st_set(cpu, 0, arith(ext, a, s));
        fp87_end(h);
        return true;
    case 0xdc: case 0xde: {
        if (op == 0xde && in->modrm == 0xd9) { /* fcompp */
            set_cc(cpu, a, st_get(cpu, 1));
            fpop(cpu);
            fpop(cpu);
            return true;
        }
        if (ext == 2 || ext == 3)
            return false;
        /* st(i) = st(i) op st(0); the sub/div "r" sense is swapped in this form */
        unsigned o = ext;
        if (ext >= 4)
            o = ext ^ 1;
        h = fp87_begin(cpu);
        st_set(cpu, i, arith(o, s, a));
        fp87_end(h);
        if (op == 0xde)
            fpop(cpu);
        return true;
    }
    case 0xd9:
        switch (ext) {
        case 0: fpush(cpu, s); return true;
        case 1: st_set(cpu, i, a); st_set(cpu, 0, s); return true;
        case 2: if (i == 0) return true; break; /* fnop */
        default: exec_d9_special(cpu, in->modrm); return true;
        }
        break;
    case 0xda:
        if (in->modrm == 0xe9) { /* fucompp */
            set_cc(cpu, a, st_get(cpu, 1));
            fpop(cpu);
            fpop(cpu);
            return true;
        }
        if (ext < 4) { /* fcmovb/e/be/u */
            static const unsigned cc[4] = {2, 4, 6, 0xa};
            if (cpu_cond(cpu, cc[ext]))
                st_set(cpu, 0, s);
            return true;
        }
        break;
    case 0xdb:
        if (ext < 4) { /* fcmovnb/ne/nbe/nu */
            static const unsigned cc[4] = {3, 5, 7, 0xb};
            if (cpu_cond(cpu, cc[ext]))
                st_set(cpu, 0, s);
            return true;
        }
        if (in->modrm == 0xe2) { cpu->fsw &= 0x7f00; return true; } /* fnclex */
        if (in->modrm == 0xe3) { fninit(cpu); return true; }
        if (ext == 5 || ext == 6) { set_eflags_cmp(cpu, a, s); return true; }
        if (in->modrm == 0xe0 || in->modrm == 0xe1 || in->modrm == 0xe4)
            return true; /* fneni/fndisi/fnsetpm: no-ops */
        break;
    case 0xdd:
        switch (ext) {
        case 0: cpu->ftw &= (uint16_t)~(1u << phys(cpu, i)); return true; /* ffree */
        case 2: st_set(cpu, i, a); return true;
        case 3: st_set(cpu, i, a); fpop(cpu); return true;
        case 4: set_cc(cpu, a, s); return true;
        case 5: set_cc(cpu, a, s); fpop(cpu); return true;
        }
        break;
    case 0xdf:
        if (in->modrm == 0xe0) {
            cpu_reg_set(cpu, R_AX, 2, true, fsw_value(cpu));
            return true;
        }
        if (ext == 5 || ext == 6) {
            set_eflags_cmp(cpu, a, s);
            fpop(cpu);
            return true;
        }
        break;
    }
    return false;
}

/* ---- FXSAVE / FXRSTOR (64-bit layout; FIP/FDP as 64-bit offsets) ---- */

void cpu_fxsave(struct emu_cpu *cpu, uint64_t lin)
{
    uint8_t b[512];
    memset(b, 0, sizeof(b));
    uint16_t fsw = fsw_value(cpu);
    uint8_t abridged = (uint8_t)cpu->ftw;
    memcpy(b + 0, &cpu->fcw, 2);
    memcpy(b + 2, &fsw, 2);
    b[4] = abridged;
    memcpy(b + 6, &cpu->fop, 2);
    memcpy(b + 8, &cpu->fip, 8);
    memcpy(b + 16, &cpu->fdp, 8);
    uint32_t mask = 0xffbf;
    memcpy(b + 24, &cpu->mxcsr, 4);
    memcpy(b + 28, &mask, 4);
    for (unsigned i = 0; i < 8; i++) {
        unsigned p = phys(cpu, i);
        memcpy(b + 32 + 16 * i, &cpu->fpr[p].mant, 8);
        memcpy(b + 40 + 16 * i, &cpu->fpr[p].exp, 2);
    }
    unsigned nx = cpu->code64 ? 16 : 8;
    for (unsigned i = 0; i < nx; i++)
        memcpy(b + 160 + 16 * i, &cpu->xmm[i], 16);
    mmu_write_buf(cpu, lin, b, 512, cpu->cpl == 3);
}

void cpu_fxrstor(struct emu_cpu *cpu, uint64_t lin)
{
    uint8_t b[512];
    mmu_read_buf(cpu, lin, b, 512, cpu->cpl == 3);
    uint32_t mxcsr;
    memcpy(&mxcsr, b + 24, 4);
    if (mxcsr & ~0xffbfu)
        cpu_raise_gp(cpu, 0);
    uint16_t fsw;
    memcpy(&cpu->fcw, b + 0, 2);
    memcpy(&fsw, b + 2, 2);
    cpu->fsw = fsw & (uint16_t)~0x3800u;
    cpu->ftop = (fsw >> 11) & 7;
    cpu->ftw = b[4];
    memcpy(&cpu->fop, b + 6, 2);
    memcpy(&cpu->fip, b + 8, 8);
    memcpy(&cpu->fdp, b + 16, 8);
    cpu->mxcsr = mxcsr;
    for (unsigned i = 0; i < 8; i++) {
        unsigned p = phys(cpu, i);
        memcpy(&cpu->fpr[p].mant, b + 32 + 16 * i, 8);
        memcpy(&cpu->fpr[p].exp, b + 40 + 16 * i, 2);
    }
    unsigned nx = cpu->code64 ? 16 : 8;
    for (unsigned i = 0; i < nx; i++)
        memcpy(&cpu->xmm[i], b + 160 + 16 * i, 16);
}
