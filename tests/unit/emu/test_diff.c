/* Differential test of the software CPU against the host CPU.
 *
 * A seeded generator writes random user-mode instruction sequences (integer
 * ALU, flags, shifts/rotates, mul/div with guarded divisors, bit ops,
 * string ops, SSE2) into an executable buffer. Each sequence runs natively
 * (diff_run() in test_diff_tramp.S loads registers from a struct, calls the
 * code, stores registers back) and in the emulator from the same register
 * and memory state; registers, defined flags and the data buffer must agree.
 *
 * Code and data live at the same fixed addresses on both sides (the emulator
 * maps copies at those guest-physical addresses, identity-paged), so
 * addresses computed by the code compare equal. r15 holds the data buffer
 * address and is never written by generated code; rsp is not touched except
 * by balanced push/pop.
 *
 * EMBER_DIFF_SEED=n and EMBER_DIFF_CASES=n reproduce or extend a run. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "accel/emu/cpu_internal.h"

#define CODE_ADDR 0x20000000ull
#define DATA_ADDR 0x10000000ull
#define CODE_SIZE 0x10000
#define DATA_SIZE 0x1000
#define LOW_RAM (1u << 20)

struct diff_regs {
    uint64_t gpr[16];
    uint64_t rflags;
    uint8_t xmm[16][16];
    uint32_t mxcsr;
    uint32_t pad;
};
_Static_assert(offsetof(struct diff_regs, rflags) == 128, "layout shared with asm");
_Static_assert(offsetof(struct diff_regs, xmm) == 136, "layout shared with asm");
_Static_assert(offsetof(struct diff_regs, mxcsr) == 392, "layout shared with asm");

void diff_run(struct diff_regs *r, void *code);

/* ---- random numbers (xorshift64*) ---- */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static unsigned rndn(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* ---- generator ---- */
#define FL_ALL (F_CF | F_PF | F_AF | F_ZF | F_SF | F_OF)

struct gen {
    uint8_t *p;
    size_t n;
    uint32_t undef; /* flags currently undefined */
    bool sse;
};

static void b(struct gen *g, uint8_t v)
{
    g->p[g->n++] = v;
}

static void imm(struct gen *g, uint64_t v, unsigned size)
{
    for (unsigned i = 0; i < size; i++)
        b(g, (uint8_t)(v >> (8 * i)));
}

/* A general register the generated code may use: not rsp, not r15. */
static unsigned rreg(void)
{
    static const unsigned regs[] = {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    return regs[rndn(14)];
}

static unsigned rsize(void)
{
    static const unsigned s[] = {1, 2, 4, 8};
    return s[rndn(4)];
}

/* Prefixes + opcode for a reg/rm instruction. mem: rm is [r15 + disp8]. */
static void emit_modrm(struct gen *g, const uint8_t *op, unsigned oplen, unsigned size,
                       unsigned reg, unsigned rm, bool mem, bool force_rex)
{
    uint8_t rex = 0;
    if (size == 2)
        b(g, 0x66);
    if (size == 8)
        rex |= 8;
    if (reg & 8)
        rex |= 4;
    if (mem || (rm & 8))
        rex |= 1;
    if (size == 1 && ((reg >= 4 && reg < 8) || (!mem && rm >= 4 && rm < 8)))
        force_rex = true; /* keep 8-bit regs 4-7 meaning spl..dil (never sp: excluded) */
    if (rex || force_rex)
        b(g, 0x40 | rex);
    for (unsigned i = 0; i < oplen; i++)
        b(g, op[i]);
    if (mem) {
        b(g, (uint8_t)(0x40 | ((reg & 7) << 3) | 7)); /* [r15 + disp8] */
        b(g, (uint8_t)(rndn(15) * 8));
    } else {
        b(g, (uint8_t)(0xc0 | ((reg & 7) << 3) | (rm & 7)));
    }
}

static void define_flags(struct gen *g)
{
    /* cmp r, r' defines all six arithmetic flags */
    uint8_t op = 0x39;
    emit_modrm(g, &op, 1, 8, rreg(), rreg(), false, false);
    g->undef = 0;
}

static void reads_flags(struct gen *g)
{
    if (g->undef)
        define_flags(g);
}

static unsigned size_bits(unsigned size)
{
    return size * 8;
}

static void gen_alu(struct gen *g)
{
    unsigned size = rsize(), aop = rndn(8);
    bool mem = rndn(4) == 0;
    if (aop == 2 || aop == 3)
        reads_flags(g);
    switch (rndn(3)) {
    case 0: { /* op rm, reg  /  op reg, rm */
        uint8_t op = (uint8_t)(aop * 8 + (size == 1 ? 0 : 1) + (rndn(2) ? 2 : 0));
        emit_modrm(g, &op, 1, size, rreg(), rreg(), mem, false);
        break;
    }
    case 1: { /* op rm, imm */
        uint8_t op = size == 1 ? 0x80 : (rndn(2) ? 0x83 : 0x81);
        emit_modrm(g, &op, 1, size, aop, rreg(), mem, false);
        imm(g, rnd(), op == 0x81 ? (size == 2 ? 2 : 4) : 1);
        break;
    }
    default: { /* test */
        uint8_t op = size == 1 ? 0x84 : 0x85;
        emit_modrm(g, &op, 1, size, rreg(), rreg(), mem, false);
        aop = 4;
        break;
    }
    }
    g->undef = (aop == 1 || aop == 4 || aop == 6) ? F_AF : 0;
}

static void gen_unary(struct gen *g)
{
    unsigned size = rsize(), sub = rndn(4);
    uint8_t op = size == 1 ? (sub < 2 ? 0xfe : 0xf6) : (sub < 2 ? 0xff : 0xf7);
    unsigned ext = sub < 2 ? sub : sub; /* inc dec | not(2) neg(3) */
    emit_modrm(g, &op, 1, size, ext, rreg(), rndn(4) == 0, false);
    if (sub == 3)
        g->undef = 0;
    else if (sub < 2)
        g->undef &= F_CF;
}

static void gen_shift(struct gen *g)
{
    unsigned size = rsize(), sub = rndn(8), bits = size_bits(size);
    unsigned form = rndn(3), count;
    uint8_t op;
    if (sub == 2 || sub == 3)
        reads_flags(g);
    if (form == 0) {
        op = size == 1 ? 0xd0 : 0xd1;
        count = 1;
    } else if (form == 1) {
        op = size == 1 ? 0xc0 : 0xc1;
        count = rndn(bits + 8);
    } else {
        count = rndn(bits + 8);
        b(g, 0xb1); /* mov $count, %cl */
        b(g, (uint8_t)count);
        op = size == 1 ? 0xd2 : 0xd3;
    }
    emit_modrm(g, &op, 1, size, sub, rreg(), rndn(4) == 0, false);
    if (form == 1)
        b(g, (uint8_t)count);
    unsigned m = count & (size == 8 ? 63 : 31);
    if (m == 0)
        return;
    if (sub < 4) { /* rotates: CF and OF only */
        g->undef &= ~(uint32_t)(F_CF | F_OF);
        if (m != 1)
            g->undef |= F_OF;
        if (sub >= 2 && (size < 4))
            g->undef |= F_OF; /* rcl/rcr: OF defined for a count of 1 only */
        return;
    }
    g->undef = F_AF;
    if (m != 1)
        g->undef |= F_OF;
    if (m >= bits)
        g->undef |= F_CF | F_OF;
}

static void gen_muldiv(struct gen *g)
{
    unsigned size = rsize(), sub = 4 + rndn(4);
    unsigned r = rreg();
    while (r == 0 || r == 2)
        r = rreg();
    if (sub >= 6) {
        /* Guard: divisor r has |r| >= 2 and the dividend's high half is a
         * sign/zero extension of the low half, so the quotient fits. */
        uint8_t and_op = 0x83;
        emit_modrm(g, &and_op, 1, size, 4, r, false, false); /* and $0x7f, r */
        b(g, 0x7f);
        if (size == 1) {
            uint8_t o = 0x80;
            emit_modrm(g, &o, 1, 1, 4, r, false, false);
            b(g, 0x7f);
            emit_modrm(g, &o, 1, 1, 1, r, false, false); /* or $2 */
            b(g, 0x02);
        } else {
            emit_modrm(g, &and_op, 1, size, 1, r, false, false); /* or $2, r */
            b(g, 0x02);
        }
        if (sub == 6) { /* zero the high half */
            if (size == 1) {
                b(g, 0xb4); /* mov $0, %ah */
                b(g, 0);
            } else {
                uint8_t x = 0x31;
                emit_modrm(g, &x, 1, 4, 2, 2, false, false); /* xor %edx, %edx */
            }
        } else {
            if (size == 1) {
                b(g, 0x66);
                b(g, 0x98); /* cbw */
            } else {
                if (size == 2)
                    b(g, 0x66);
                if (size == 8)
                    b(g, 0x48);
                b(g, 0x99); /* cwd/cdq/cqo */
            }
        }
    }
    uint8_t op = size == 1 ? 0xf6 : 0xf7;
    emit_modrm(g, &op, 1, size, sub, r, false, false);
    g->undef = sub >= 6 ? FL_ALL : (F_SF | F_ZF | F_AF | F_PF);
}

static void gen_imul(struct gen *g)
{
    unsigned size = 2 << rndn(3);
    switch (rndn(2)) {
    case 0: {
        uint8_t op[2] = {0x0f, 0xaf};
        emit_modrm(g, op, 2, size, rreg(), rreg(), rndn(4) == 0, false);
        break;
    }
    default: {
        uint8_t op = rndn(2) ? 0x6b : 0x69;
        emit_modrm(g, &op, 1, size, rreg(), rreg(), rndn(4) == 0, false);
        imm(g, rnd(), op == 0x6b ? 1 : (size == 2 ? 2 : 4));
        break;
    }
    }
    g->undef = F_SF | F_ZF | F_AF | F_PF;
}

static void gen_bitop(struct gen *g)
{
    unsigned size = 2 << rndn(3);
    switch (rndn(3)) {
    case 0: { /* bt/bts/btr/btc reg, reg */
        static const uint8_t ops[] = {0xa3, 0xab, 0xb3, 0xbb};
        uint8_t op[2] = {0x0f, ops[rndn(4)]};
        emit_modrm(g, op, 2, size, rreg(), rreg(), false, false);
        g->undef |= F_OF | F_SF | F_AF | F_PF;
        g->undef &= ~(uint32_t)F_CF;
        break;
    }
    case 1: { /* bt* rm, imm8 */
        uint8_t op[2] = {0x0f, 0xba};
        emit_modrm(g, op, 2, size, 4 + rndn(4), rreg(), rndn(3) == 0, false);
        b(g, (uint8_t)rnd());
        g->undef |= F_OF | F_SF | F_AF | F_PF;
        g->undef &= ~(uint32_t)F_CF;
        break;
    }
    default: { /* bsf / bsr with a nonzero source */
        unsigned src = rreg();
        uint8_t o = 0x83;
        emit_modrm(g, &o, 1, size, 1, src, false, false); /* or $imm8, src */
        b(g, (uint8_t)(1u << rndn(7)));
        uint8_t op[2] = {0x0f, (uint8_t)(0xbc + rndn(2))};
        emit_modrm(g, op, 2, size, rreg(), src, false, false);
        g->undef = FL_ALL & ~(uint32_t)F_ZF;
        break;
    }
    }
}

static void gen_move(struct gen *g)
{
    unsigned size = rsize();
    switch (rndn(12)) {
    case 0: { /* mov */
        uint8_t op = (uint8_t)((size == 1 ? 0x88 : 0x89) + (rndn(2) ? 2 : 0));
        emit_modrm(g, &op, 1, size, rreg(), rreg(), rndn(3) == 0, false);
        break;
    }
    case 1: { /* mov r, imm */
        unsigned r = rreg();
        if (size == 8 || (r & 8) || size == 2) {
            if (size == 2)
                b(g, 0x66);
            b(g, (uint8_t)(0x40 | (size == 8 ? 8 : 0) | ((r & 8) ? 1 : 0)));
        }
        b(g, (uint8_t)((size == 1 ? 0xb0 : 0xb8) + (r & 7)));
        imm(g, rnd(), size == 8 ? 8 : size == 1 ? 1 : size);
        if (size == 1 && !(r & 8) && !(g->n && g->p[g->n - 3] == 0x40)) {
            /* plain b0+r without REX: r 4-7 is ah..bh: fine */
        }
        break;
    }
    case 2: { /* movzx / movsx */
        unsigned dsize = 2 << rndn(3);
        uint8_t op[2] = {0x0f, (uint8_t)(0xb6 + rndn(2) + (rndn(2) ? 8 : 0))};
        emit_modrm(g, op, 2, dsize, rreg(), rreg(), rndn(3) == 0, op[1] == 0xb6 || op[1] == 0xbe);
        break;
    }
    case 3: { /* movsxd */
        uint8_t op = 0x63;
        emit_modrm(g, &op, 1, 8, rreg(), rreg(), rndn(3) == 0, false);
        break;
    }
    case 4: { /* cmovcc */
        reads_flags(g);
        unsigned s = 2 << rndn(3);
        uint8_t op[2] = {0x0f, (uint8_t)(0x40 + rndn(16))};
        emit_modrm(g, op, 2, s, rreg(), rreg(), rndn(3) == 0, false);
        break;
    }
    case 5: { /* setcc */
        reads_flags(g);
        uint8_t op[2] = {0x0f, (uint8_t)(0x90 + rndn(16))};
        emit_modrm(g, op, 2, 1, 0, rreg(), rndn(3) == 0, false);
        break;
    }
    case 6: { /* xchg */
        uint8_t op = size == 1 ? 0x86 : 0x87;
        emit_modrm(g, &op, 1, size, rreg(), rreg(), rndn(3) == 0, false);
        break;
    }
    case 7: { /* lea */
        unsigned s = 2 << rndn(3), r = rreg(), base = rreg(), idx = rreg();
        uint8_t rex = (uint8_t)((s == 8 ? 8 : 0) | ((r & 8) ? 4 : 0) | ((idx & 8) ? 2 : 0) |
                                ((base & 8) ? 1 : 0));
        if (s == 2)
            b(g, 0x66);
        if (rex)
            b(g, 0x40 | rex);
        b(g, 0x8d);
        b(g, (uint8_t)(0x80 | ((r & 7) << 3) | 4));
        b(g, (uint8_t)((rndn(4) << 6) | ((idx & 7) << 3) | (base & 7)));
        imm(g, rnd(), 4);
        break;
    }
    case 8: { /* bswap */
        unsigned r = rreg(), s = rndn(2) ? 8 : 4;
        if (s == 8 || (r & 8))
            b(g, (uint8_t)(0x40 | (s == 8 ? 8 : 0) | ((r & 8) ? 1 : 0)));
        b(g, 0x0f);
        b(g, (uint8_t)(0xc8 + (r & 7)));
        break;
    }
    case 9: { /* cbw/cwde/cdqe, cwd/cdq/cqo */
        unsigned s = 2 << rndn(3);
        if (s == 2)
            b(g, 0x66);
        if (s == 8)
            b(g, 0x48);
        b(g, (uint8_t)(0x98 + rndn(2)));
        break;
    }
    case 10: { /* xadd / cmpxchg */
        uint8_t op[2] = {0x0f, (uint8_t)((rndn(2) ? 0xc0 : 0xb0) + (size == 1 ? 0 : 1))};
        emit_modrm(g, op, 2, size, rreg(), rreg(), rndn(3) == 0, false);
        g->undef = 0;
        break;
    }
    default: { /* push r / pop r' */
        unsigned a = rreg(), c = rreg();
        if (a & 8)
            b(g, 0x41);
        b(g, (uint8_t)(0x50 + (a & 7)));
        if (c & 8)
            b(g, 0x41);
        b(g, (uint8_t)(0x58 + (c & 7)));
        break;
    }
    }
}

static void gen_flagops(struct gen *g)
{
    switch (rndn(6)) {
    case 0: b(g, 0xf8); g->undef &= ~(uint32_t)F_CF; break; /* clc */
    case 1: b(g, 0xf9); g->undef &= ~(uint32_t)F_CF; break; /* stc */
    case 2: reads_flags(g); b(g, 0xf5); break;               /* cmc */
    case 3: reads_flags(g); b(g, 0x9f); break;               /* lahf */
    case 4: b(g, 0x9e); g->undef &= ~(uint32_t)(F_SF | F_ZF | F_AF | F_PF | F_CF); break; /* sahf */
    default: { /* adc/sbb via reads */
        reads_flags(g);
        unsigned size = rsize();
        uint8_t op = (uint8_t)((rndn(2) ? 0x10 : 0x18) + (size == 1 ? 0 : 1));
        emit_modrm(g, &op, 1, size, rreg(), rreg(), false, false);
        g->undef = 0;
        break;
    }
    }
}

static void gen_shd(struct gen *g)
{
    unsigned size = 2 << rndn(3), bits = size * 8;
    unsigned count = rndn(bits);
    bool cl = rndn(2);
    uint8_t op[2] = {0x0f, (uint8_t)((rndn(2) ? 0xa4 : 0xac) + (cl ? 1 : 0))};
    if (cl) {
        b(g, 0xb1);
        b(g, (uint8_t)count);
    }
    emit_modrm(g, op, 2, size, rreg(), rreg(), rndn(4) == 0, false);
    if (!cl)
        b(g, (uint8_t)count);
    unsigned m = count & (size == 8 ? 63 : 31);
    if (!m)
        return;
    g->undef = F_AF;
    if (m != 1)
        g->undef |= F_OF;
    if (m > bits)
        g->undef = FL_ALL;
}

static void gen_string(struct gen *g)
{
    /* lea disp(%r15), %rsi / %rdi ; mov $n, %ecx ; [rep] op */
    static const uint8_t ops[] = {0xa4, 0xa5, 0xaa, 0xab, 0xac, 0xad, 0xa6, 0xa7, 0xae, 0xaf};
    uint8_t op = ops[rndn(10)];
    unsigned size = op & 1 ? (2 << rndn(3)) : 1;
    unsigned count = rndn(12);
    bool df = rndn(4) == 0;
    b(g, 0x49); b(g, 0x8d); b(g, 0xb7); imm(g, 0x400 + rndn(0x200), 4); /* lea d(%r15),%rsi */
    b(g, 0x49); b(g, 0x8d); b(g, 0xbf); imm(g, 0xa00 + rndn(0x200), 4); /* lea d(%r15),%rdi */
    b(g, 0xb9); imm(g, count, 4);                                       /* mov $n, %ecx */
    b(g, df ? 0xfd : 0xfc);
    bool cmp = op == 0xa6 || op == 0xa7 || op == 0xae || op == 0xaf;
    if (rndn(4))
        b(g, cmp && rndn(2) ? 0xf2 : 0xf3);
    if (size == 2)
        b(g, 0x66);
    if (size == 8)
        b(g, 0x48);
    b(g, op);
    b(g, 0xfc); /* cld */
    if (cmp && count)
        g->undef = 0;
}

/* ---- SSE2 ---- */
static void emit_sse(struct gen *g, uint8_t prefix, uint8_t op, unsigned reg, unsigned rm, bool mem,
                     bool rexw)
{
    uint8_t rex = (uint8_t)((rexw ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((mem || (rm & 8)) ? 1 : 0));
    if (prefix)
        b(g, prefix);
    if (rex)
        b(g, 0x40 | rex);
    b(g, 0x0f);
    b(g, op);
    if (mem) {
        b(g, (uint8_t)(0x80 | ((reg & 7) << 3) | 7)); /* [r15 + disp32], 16-aligned */
        imm(g, 0x100 + 16 * rndn(32), 4);
    } else {
        b(g, (uint8_t)(0xc0 | ((reg & 7) << 3) | (rm & 7)));
    }
}

static void gen_sse(struct gen *g)
{
    /* integer / logical ops valid with 66 prefix, xmm, xmm/m128 */
    static const uint8_t int66[] = {
        0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xe3, 0xe4, 0xe5,
        0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef, 0xf4, 0xf5, 0xf6, 0xf8, 0xf9, 0xfa,
        0xfb, 0xfc, 0xfd, 0xfe, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
        0x6a, 0x6b, 0x6c, 0x6d, 0x74, 0x75, 0x76, 0xd1, 0xd2, 0xd3, 0xe1, 0xe2, 0xf1, 0xf2,
        0xf3, 0x6f, 0x7f, 0x14, 0x15, 0x54, 0x55, 0x56, 0x57, 0x28, 0x10};
    static const uint8_t fp[] = {0x51, 0x58, 0x59, 0x5c, 0x5d, 0x5e, 0x5f};
    unsigned reg = rndn(16), rm = rndn(16);
    bool mem = rndn(4) == 0;
    switch (rndn(9)) {
    case 0: case 1: case 2: {
        uint8_t op = int66[rndn(sizeof(int66))];
        emit_sse(g, 0x66, op, reg, rm, mem, false);
        break;
    }
    case 3: { /* shifts by immediate: 66 0f 71/72/73 /2 /4 /6 (/3 /7 dq) */
        static const uint8_t ops[] = {0x71, 0x71, 0x71, 0x72, 0x72, 0x72, 0x73, 0x73, 0x73, 0x73};
        static const uint8_t ext[] = {2, 4, 6, 2, 4, 6, 2, 6, 3, 7};
        unsigned i = rndn(10);
        emit_sse(g, 0x66, ops[i], ext[i], rm, false, false);
        b(g, (uint8_t)rndn(40));
        break;
    }
    case 4: { /* pshufd / pshuflw / pshufhw / shufps / shufpd */
        static const uint8_t pre[] = {0x66, 0xf2, 0xf3, 0x00, 0x66};
        unsigned i = rndn(5);
        emit_sse(g, pre[i], i >= 3 ? 0xc6 : 0x70, reg, rm, mem, false);
        b(g, (uint8_t)rnd());
        break;
    }
    case 5: { /* scalar/packed float arithmetic (on random bits: NaNs included) */
        static const uint8_t pre[] = {0x00, 0x66, 0xf2, 0xf3};
        emit_sse(g, pre[rndn(4)], fp[rndn(sizeof(fp))], reg, rm, mem, false);
        break;
    }
    case 6: { /* ucomis / comis */
        emit_sse(g, rndn(2) ? 0x66 : 0x00, rndn(2) ? 0x2e : 0x2f, reg, rm, mem, false);
        g->undef = 0;
        break;
    }
    case 7: { /* movd/movq gpr <-> xmm, pmovmskb, movmskps/pd */
        unsigned r = rreg();
        switch (rndn(4)) {
        case 0: emit_sse(g, 0x66, 0x6e, reg, r, false, rndn(2)); break;
        case 1: emit_sse(g, 0x66, 0x7e, reg, r, false, rndn(2)); break;
        case 2: emit_sse(g, 0x66, 0xd7, r, rm, false, false); break;
        default: emit_sse(g, rndn(2) ? 0x66 : 0, 0x50, r, rm, false, false); break;
        }
        break;
    }
    default: { /* conversions */
        unsigned r = rreg();
        switch (rndn(6)) {
        case 0: emit_sse(g, 0xf2, 0x2a, reg, r, false, rndn(2)); break; /* cvtsi2sd */
        case 1: emit_sse(g, 0xf3, 0x2a, reg, r, false, rndn(2)); break; /* cvtsi2ss */
        case 2: emit_sse(g, 0xf2, 0x2c, r, rm, false, rndn(2)); break;  /* cvttsd2si */
        case 3: emit_sse(g, 0xf3, 0x2d, r, rm, false, rndn(2)); break;  /* cvtss2si */
        case 4: emit_sse(g, 0xf2, 0x5a, reg, rm, mem, false); break;    /* cvtsd2ss */
        default: emit_sse(g, 0x00, 0x5b, reg, rm, mem, false); break;  /* cvtdq2ps */
        }
        break;
    }
    }
}

/* MMX: load two MMX registers from GPRs, one op, move the result back, EMMS. */
static void gen_mmx(struct gen *g)
{
    static const uint8_t ops[] = {
        0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0,
        0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef, 0xf1,
        0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0x60, 0x61,
        0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x74, 0x75, 0x76};
    unsigned m1 = rndn(8), m2 = rndn(8), r1 = rreg(), r2 = rreg(), out = rreg();
    emit_sse(g, 0, 0x6e, m1, r1, false, true); /* movq r1, mm1 */
    emit_sse(g, 0, 0x6e, m2, r2, false, true);
    switch (rndn(4)) {
    case 0: /* pshufw */
        emit_sse(g, 0, 0x70, m1, m2, false, false);
        b(g, (uint8_t)rnd());
        break;
    case 1: { /* shift by immediate */
        static const uint8_t sops[] = {0x71, 0x71, 0x71, 0x72, 0x72, 0x72, 0x73, 0x73};
        static const uint8_t ext[] = {2, 4, 6, 2, 4, 6, 2, 6};
        unsigned i = rndn(8);
        emit_sse(g, 0, sops[i], ext[i], m1, false, false);
        b(g, (uint8_t)rndn(70));
        break;
    }
    default:
        emit_sse(g, 0, ops[rndn(sizeof(ops))], m1, m2, false, false);
        break;
    }
    emit_sse(g, 0, 0x7e, m1, out, false, true); /* movq mm1, out */
    b(g, 0x0f);
    b(g, 0x77); /* emms */
}

static void gen_sequence(struct gen *g, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        unsigned k = rndn(g->sse ? 12 : 10);
        switch (k) {
        case 0: case 1: gen_alu(g); break;
        case 2: gen_unary(g); break;
        case 3: gen_shift(g); break;
        case 4: gen_muldiv(g); break;
        case 5: gen_imul(g); break;
        case 6: gen_bitop(g); break;
        case 7: gen_move(g); break;
        case 8: rndn(2) ? gen_flagops(g) : gen_shd(g); break;
        case 9: gen_string(g); break;
        default: rndn(4) ? gen_sse(g) : gen_mmx(g); break;
        }
    }
}

/* ---- emulator side ---- */
static uint8_t *low_ram, *emu_code, *emu_data;
static uint8_t *host_code, *host_data;
static struct guest_mem emu_mem;
static struct emu_cpu *cpu;
static struct emu_platform_ops no_ops;

static void put64(uint64_t gpa, uint64_t v)
{
    memcpy(low_ram + gpa, &v, 8);
}

static bool emu_setup(void)
{
    host_code = mmap((void *)CODE_ADDR, CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    host_data = mmap((void *)DATA_ADDR, DATA_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (host_code != (void *)CODE_ADDR || host_data != (void *)DATA_ADDR)
        return false;
    low_ram = calloc(1, LOW_RAM);
    emu_code = calloc(1, CODE_SIZE);
    emu_data = calloc(1, DATA_SIZE);
    if (!low_ram || !emu_code || !emu_data)
        return false;
    guest_mem_add(&emu_mem, 0, LOW_RAM, low_ram);
    guest_mem_add(&emu_mem, CODE_ADDR, CODE_SIZE, emu_code);
    guest_mem_add(&emu_mem, DATA_ADDR, DATA_SIZE, emu_data);
    /* identity map 0..1 GiB with 2 MiB pages */
    put64(0x1000, 0x2000 | 7);
    put64(0x2000, 0x3000 | 7);
    for (uint64_t i = 0; i < 512; i++)
        put64(0x3000 + 8 * i, (i << 21) | 0x87);
    cpu = emu_cpu_new(&emu_mem, &no_ops, 0, 1);
    return cpu != NULL;
}

static void emu_run_case(struct diff_regs *r, size_t code_len)
{
    struct cpu_state s;
    memset(&s, 0, sizeof(s));
    uint64_t *dst = &s.rax;
    static const int order[16] = {R_AX, R_BX, R_CX, R_DX, R_SI, R_DI, R_SP, R_BP,
                                  8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 16; i++)
        dst[i] = r->gpr[order[i]];
    s.rsp = 0x80000;
    s.rip = CODE_ADDR;
    s.rflags = r->rflags;
    struct cpu_segment cs = {.limit = 0xffffffff, .selector = 8, .type = 0xb, .s = 1, .present = 1,
                             .l = 1, .g = 1};
    struct cpu_segment ds = {.limit = 0xffffffff, .selector = 16, .type = 3, .s = 1, .present = 1,
                             .db = 1, .g = 1};
    s.cs = cs;
    s.ds = s.es = s.ss = s.fs = s.gs = ds;
    s.tr = (struct cpu_segment){.type = 0xb, .present = 1, .limit = 0x67};
    s.cr0 = 0x80050033;
    s.cr3 = 0x1000;
    s.cr4 = 0x6a0;
    s.efer = 0xd01;
    emu_cpu_set_state(cpu, &s);
    memcpy(cpu->xmm, r->xmm, sizeof(r->xmm));
    cpu->mxcsr = r->mxcsr;
    atomic_bool stop = false;
    enum emu_exit e = emu_cpu_run(cpu, &stop);
    emu_cpu_get_state(cpu, &s);
    for (int i = 0; i < 16; i++)
        r->gpr[order[i]] = dst[i];
    r->rflags = s.rflags;
    memcpy(r->xmm, cpu->xmm, sizeof(r->xmm));
    r->mxcsr = cpu->mxcsr;
    if (e != EMU_EXIT_HLT || s.rip != CODE_ADDR + code_len + 1) {
        r->gpr[R_SP] = 0xdead; /* marks "did not finish": compared below */
        fprintf(stderr, "emulator stopped at rip %#llx (exit %d), expected %#llx\n",
                (unsigned long long)s.rip, e, (unsigned long long)(CODE_ADDR + code_len + 1));
    }
}

static uint64_t current_seed;
static void crash_handler(int sig)
{
    fprintf(stderr, "host crashed (signal %d) running case seed %#llx\n", sig,
            (unsigned long long)current_seed);
    _exit(1);
}

static void dump_code(const uint8_t *p, size_t n)
{
    fprintf(stderr, "code:");
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", p[i]);
    fprintf(stderr, "\n");
}

/* A fixed instruction sequence instead of a generated one (regressions). */
static const uint8_t *fixed_code;
static size_t fixed_len;
static uint32_t fixed_undef;

/* Runs one case from seed; returns true if both sides agree. */
static bool run_case(uint64_t seed, unsigned ninsn, bool sse, bool verbose)
{
    struct gen g = {.p = host_code, .sse = sse};
    struct diff_regs init, host, emu;
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    current_seed = seed;
    memset(&init, 0, sizeof(init));
    for (int i = 0; i < 16; i++) {
        uint64_t v = rnd();
        switch (rndn(4)) {
        case 0: v &= 0xff; break;
        case 1: v = (uint64_t)(int64_t)(int32_t)v; break;
        default: break;
        }
        init.gpr[i] = v;
    }
    init.gpr[15] = DATA_ADDR;
    init.gpr[R_SP] = 0;
    init.rflags = 0x202 | (rnd() & FL_ALL);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            init.xmm[i][j] = (uint8_t)rnd();
    init.mxcsr = 0x1f80;
    for (unsigned i = 0; i < DATA_SIZE; i++)
        host_data[i] = (uint8_t)rnd();
    memcpy(emu_data, host_data, DATA_SIZE);

    if (fixed_code) {
        memcpy(host_code, fixed_code, fixed_len);
        g.n = fixed_len;
        g.undef = fixed_undef;
    } else {
        gen_sequence(&g, ninsn);
    }
    size_t len = g.n;
    memcpy(emu_code, host_code, len);
    emu_code[len] = 0xf4; /* hlt */
    host_code[len] = 0xc3; /* ret */

    host = init;
    diff_run(&host, host_code);
    emu = init;
    emu_run_case(&emu, len);

    bool ok = true;
    for (int i = 0; i < 16; i++) {
        if (i == R_SP)
            continue;
        if (host.gpr[i] != emu.gpr[i]) {
            if (verbose)
                fprintf(stderr, "reg %d: host %#llx emu %#llx\n", i,
                        (unsigned long long)host.gpr[i], (unsigned long long)emu.gpr[i]);
            ok = false;
        }
    }
    if (emu.gpr[R_SP] == 0xdead)
        ok = false;
    uint64_t fmask = (FL_ALL & ~(uint64_t)g.undef) | F_DF;
    if ((host.rflags & fmask) != (emu.rflags & fmask)) {
        if (verbose)
            fprintf(stderr, "rflags: host %#llx emu %#llx (mask %#llx)\n",
                    (unsigned long long)host.rflags, (unsigned long long)emu.rflags,
                    (unsigned long long)fmask);
        ok = false;
    }
    if (host.mxcsr != emu.mxcsr) {
        if (verbose)
            fprintf(stderr, "mxcsr: host %#x emu %#x\n", host.mxcsr, emu.mxcsr);
        ok = false;
    }
    if (memcmp(host.xmm, emu.xmm, sizeof(host.xmm))) {
        if (verbose)
            for (int i = 0; i < 16; i++)
                if (memcmp(host.xmm[i], emu.xmm[i], 16))
                    fprintf(stderr, "xmm%d: host %016llx%016llx emu %016llx%016llx\n", i,
                            *(unsigned long long *)(void *)&host.xmm[i][8],
                            *(unsigned long long *)(void *)&host.xmm[i][0],
                            *(unsigned long long *)(void *)&emu.xmm[i][8],
                            *(unsigned long long *)(void *)&emu.xmm[i][0]);
        ok = false;
    }
    if (memcmp(host_data, emu_data, DATA_SIZE)) {
        if (verbose)
            for (unsigned i = 0; i < DATA_SIZE; i++)
                if (host_data[i] != emu_data[i]) {
                    fprintf(stderr, "data[%#x]: host %02x emu %02x\n", i, host_data[i], emu_data[i]);
                    break;
                }
        ok = false;
    }
    if (!ok && verbose) {
        fprintf(stderr, "MISMATCH: seed %#llx (%u insns, sse %d)\n", (unsigned long long)seed,
                ninsn, sse);
        dump_code(host_code, len);
    }
    return ok;
}

static int group_setup(void **state)
{
    (void)state;
    if (!emu_setup()) {
        fprintf(stderr, "test_diff: cannot map fixed code/data addresses; skipped\n");
        exit(77);
    }
    signal(SIGSEGV, crash_handler);
    signal(SIGFPE, crash_handler);
    signal(SIGILL, crash_handler);
    signal(SIGBUS, crash_handler);
    return 0;
}

static unsigned env_unsigned(const char *name, unsigned def)
{
    const char *s = getenv(name);
    return s ? (unsigned)strtoul(s, NULL, 0) : def;
}

static void run_many(bool sse, unsigned ninsn, uint64_t base)
{
    unsigned cases = env_unsigned("EMBER_DIFF_CASES", 2000);
    uint64_t seed0 = getenv("EMBER_DIFF_SEED") ? strtoull(getenv("EMBER_DIFF_SEED"), NULL, 0) : base;
    unsigned fails = 0;
    for (unsigned i = 0; i < cases && fails < 5; i++) {
        uint64_t seed = seed0 + i;
        if (!run_case(seed, ninsn, sse, true))
            fails++;
    }
    if (fails)
        fprintf(stderr, "rerun one case with EMBER_DIFF_SEED=<seed> EMBER_DIFF_CASES=1\n");
    assert_int_equal(fails, 0);
}

static void test_diff_integer_single(void **state)
{
    (void)state;
    run_many(false, 1, 0x10000);
}

static void test_diff_integer_seq(void **state)
{
    (void)state;
    run_many(false, 8, 0x20000);
}

static void test_diff_sse(void **state)
{
    (void)state;
    run_many(true, 6, 0x30000);
}

/* Byte sequences that once disagreed, each run from several random states. */
static void test_diff_regressions(void **state)
{
    static const struct {
        const char *what;
        uint8_t code[16];
        size_t len;
        uint32_t undef;
    } cases[] = {
        {"xadd with reg == rm (64-bit)", {0x48, 0x0f, 0xc1, 0xc9}, 4, 0},
        {"xadd with reg == rm (8-bit, REX)", {0x45, 0x0f, 0xc0, 0xf6}, 4, 0},
        {"shl r32 by cl=32 still zero-extends", {0xb1, 0x20, 0x41, 0xd3, 0xe1}, 5, F_AF},
        {"shl r32 by 0 still zero-extends", {0xb1, 0x00, 0x41, 0xd3, 0xe4}, 5, 0},
        {"rep scasb with rcx=0 leaves flags", {0x31, 0xc9, 0xf3, 0xae}, 4, F_AF},
        {"comiss on denormals sets MXCSR.DE", {0x0f, 0x2f, 0xc7}, 3, 0},
        {"bsf 32-bit, zero source", {0x31, 0xc0, 0x0f, 0xbc, 0xd0}, 5, F_ARITH & ~F_ZF},
        {"cmpxchg8b-free lock xadd to memory", {0xf0, 0x49, 0x0f, 0xc1, 0x07}, 5, 0},
    };
    unsigned fails = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fixed_code = cases[i].code;
        fixed_len = cases[i].len;
        fixed_undef = cases[i].undef;
        for (uint64_t seed = 1; seed <= 20; seed++) {
            if (!run_case(seed * 1000 + i, 0, false, true)) {
                fprintf(stderr, "regression: %s\n", cases[i].what);
                fails++;
                break;
            }
        }
    }
    fixed_code = NULL;
    assert_int_equal(fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diff_regressions),
        cmocka_unit_test(test_diff_integer_single),
        cmocka_unit_test(test_diff_integer_seq),
        cmocka_unit_test(test_diff_sse),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
