/* Lazy arithmetic flags: ALU operations record their operands and result
 * (cpu_lazy()); CF/PF/AF/ZF/SF/OF are computed here only when read. */
#include "accel/emu/cpu_internal.h"

static uint64_t flags_from_lazy(const struct emu_cpu *cpu)
{
    unsigned size = cpu->lf_size;
    uint64_t m = size_mask(size), sb = sign_bit(size);
    uint64_t res = cpu->lf_res & m, a = cpu->lf_a & m, b = cpu->lf_b & m;
    uint64_t f = 0;
    bool cf = false, of = false, af = false;

    switch (cpu->lf_op) {
    case LF_ADD:
        cf = res < a;
        of = ((a ^ res) & (b ^ res) & sb) != 0;
        af = ((a ^ b ^ res) & 0x10) != 0;
        break;
    case LF_ADC:
        cf = cpu->lf_cf ? res <= a : res < a;
        of = ((a ^ res) & (b ^ res) & sb) != 0;
        af = ((a ^ b ^ res) & 0x10) != 0;
        break;
    case LF_SUB:
        cf = a < b;
        of = ((a ^ b) & (a ^ res) & sb) != 0;
        af = ((a ^ b ^ res) & 0x10) != 0;
        break;
    case LF_SBB:
        cf = cpu->lf_cf ? a <= b : a < b;
        of = ((a ^ b) & (a ^ res) & sb) != 0;
        af = ((a ^ b ^ res) & 0x10) != 0;
        break;
    case LF_LOGIC:
        break;
    case LF_INC:
        cf = cpu->lf_cf;
        of = res == sb;
        af = (res & 0xf) == 0;
        break;
    case LF_DEC:
        cf = cpu->lf_cf;
        of = res == sb - 1;
        af = (res & 0xf) == 0xf;
        break;
    case LF_NONE:
        return cpu->rflags & F_ARITH;
    }
    if (cf)
        f |= F_CF;
    if (of)
        f |= F_OF;
    if (af)
        f |= F_AF;
    if (res == 0)
        f |= F_ZF;
    if (res & sb)
        f |= F_SF;
    if (!(__builtin_popcount((unsigned)(res & 0xff)) & 1))
        f |= F_PF;
    return f;
}

void cpu_flags_materialize(struct emu_cpu *cpu)
{
    if (cpu->lf_op == LF_NONE)
        return;
    cpu->rflags = (cpu->rflags & ~(uint64_t)F_ARITH) | flags_from_lazy(cpu);
    cpu->lf_op = LF_NONE;
}

uint64_t cpu_get_rflags(struct emu_cpu *cpu)
{
    cpu_flags_materialize(cpu);
    return cpu->rflags | 2;
}

void cpu_set_rflags(struct emu_cpu *cpu, uint64_t f)
{
    cpu->lf_op = LF_NONE;
    cpu->rflags = (f | 2) & 0x3f7fd7;
}

bool cpu_get_cf(struct emu_cpu *cpu)
{
    switch (cpu->lf_op) {
    case LF_LOGIC:
        return false;
    case LF_INC:
    case LF_DEC:
        return cpu->lf_cf;
    case LF_NONE:
        return cpu->rflags & F_CF;
    case LF_ADD: {
        uint64_t m = size_mask(cpu->lf_size);
        return (cpu->lf_res & m) < (cpu->lf_a & m);
    }
    case LF_SUB: {
        uint64_t m = size_mask(cpu->lf_size);
        return (cpu->lf_a & m) < (cpu->lf_b & m);
    }
    default:
        return flags_from_lazy(cpu) & F_CF;
    }
}

/* Condition codes in the order of Jcc/SETcc/CMOVcc encodings. */
bool cpu_cond(struct emu_cpu *cpu, unsigned cc)
{
    uint64_t f;
    bool r;
    if (cpu->lf_op != LF_NONE && (cc >> 1) == 2) { /* Z/NZ: the common case, no full compute */
        r = (cpu->lf_res & size_mask(cpu->lf_size)) == 0;
        return (cc & 1) ? !r : r;
    }
    if (cpu->lf_op == LF_SUB && (cc >> 1) != 0 && (cc >> 1) != 5) {
        /* After CMP/SUB the condition is a comparison of the operands. */
        unsigned size = cpu->lf_size;
        uint64_t m = size_mask(size), a = cpu->lf_a & m, b = cpu->lf_b & m;
        int64_t sa = sext(a, size), sb = sext(b, size);
        switch (cc >> 1) {
        case 1: r = a < b; break;                       /* B */
        case 3: r = a <= b; break;                      /* BE */
        case 4: r = (cpu->lf_res >> (size * 8 - 1)) & 1; break; /* S */
        case 6: r = sa < sb; break;                     /* L */
        default: r = sa <= sb; break;                   /* LE */
        }
        return (cc & 1) ? !r : r;
    }
    f = cpu->lf_op == LF_NONE ? cpu->rflags : flags_from_lazy(cpu);
    switch (cc >> 1) {
    case 0: r = f & F_OF; break;
    case 1: r = f & F_CF; break;
    case 2: r = f & F_ZF; break;
    case 3: r = f & (F_CF | F_ZF); break;
    case 4: r = f & F_SF; break;
    case 5: r = f & F_PF; break;
    case 6: r = !!(f & F_SF) != !!(f & F_OF); break;
    default: r = (f & F_ZF) || (!!(f & F_SF) != !!(f & F_OF)); break;
    }
    return (cc & 1) ? !r : r;
}
