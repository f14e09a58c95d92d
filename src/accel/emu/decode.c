/* x86 instruction decoder: legacy prefixes, REX, the one-byte, 0F, 0F38 and
 * 0F3A maps, ModRM/SIB/displacement (16-, 32- and 64-bit addressing,
 * RIP-relative) and immediates. Produces a struct insn; the executors read
 * nothing else from the instruction stream. */
#include <string.h>

#include "accel/emu/cpu_internal.h"

/* Code fetch cursor: translates a page once, again only on page crossing. */
struct fetch {
    struct emu_cpu *cpu;
    uint64_t lin; /* linear address of the instruction's first byte */
    unsigned pos;
    const struct tlb_entry *e;
    uint64_t page_lin; /* linear page e maps, ~0 if none */
    bool user;
    bool wrap32;
};

static uint8_t fetch_u8(struct fetch *f)
{
    if (f->pos >= 15)
        cpu_raise_gp(f->cpu, 0); /* longer than 15 bytes */
    uint64_t lin = f->lin + f->pos;
    if (f->wrap32)
        lin &= 0xffffffffu;
    f->pos++;
    if ((lin & ~0xfffull) != f->page_lin) {
        f->e = mmu_translate(f->cpu, lin, ACC_EXEC, f->user);
        f->page_lin = lin & ~0xfffull;
    }
    if (f->e->host)
        return f->e->host[lin & 0xfff];
    return (uint8_t)phys_read(f->cpu, f->e->gpa_page + (lin & 0xfff), 1);
}

static uint64_t fetch_n(struct fetch *f, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)fetch_u8(f) << (8 * i);
    return v;
}

/* ModRM presence for the one-byte map, one bit per opcode. */
static bool modrm_1byte(uint8_t op)
{
    if (op < 0x40)
        return (op & 7) < 4;
    switch (op) {
    case 0x62: case 0x63: case 0x69: case 0x6b: case 0xc0: case 0xc1: case 0xc4: case 0xc5:
    case 0xc6: case 0xc7: case 0xd0: case 0xd1: case 0xd2: case 0xd3: case 0xf6: case 0xf7:
    case 0xfe: case 0xff:
        return true;
    }
    return (op >= 0x80 && op <= 0x8f) || (op >= 0xd8 && op <= 0xdf);
}

static bool modrm_0f(uint8_t op)
{
    switch (op) {
    case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0b: case 0x0e:
    case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35: case 0x37:
    case 0x77: case 0xa0: case 0xa1: case 0xa2: case 0xa8: case 0xa9: case 0xaa:
        return false;
    }
    if (op >= 0x80 && op <= 0x8f)
        return false;
    if (op >= 0xc8 && op <= 0xcf)
        return false;
    return true;
}

static void decode_modrm(struct fetch *f, struct insn *in)
{
    uint8_t m = fetch_u8(f);
    uint8_t rex = in->rex;
    in->has_modrm = true;
    in->modrm = m;
    in->mod = m >> 6;
    in->reg = ((m >> 3) & 7) | ((rex & 4) ? 8 : 0);
    in->rm = (m & 7) | ((rex & 1) ? 8 : 0);
    in->base = in->index = -1;
    in->scale = 0;
    in->disp = 0;
    in->rip_rel = false;
    if (in->mod == 3)
        return;

    if (in->addrsize == 2) {
        static const int8_t b16[8] = {R_BX, R_BX, R_BP, R_BP, R_SI, R_DI, R_BP, R_BX};
        static const int8_t i16[8] = {R_SI, R_DI, R_SI, R_DI, -1, -1, -1, -1};
        unsigned rm = m & 7;
        in->rm = rm;
        if (in->mod == 0 && rm == 6) {
            in->disp = (int16_t)fetch_n(f, 2);
            return;
        }
        in->base = b16[rm];
        in->index = i16[rm];
        if (in->mod == 1)
            in->disp = (int8_t)fetch_u8(f);
        else if (in->mod == 2)
            in->disp = (int16_t)fetch_n(f, 2);
        return;
    }

    unsigned rm = m & 7;
    if (rm == 4) {
        uint8_t sib = fetch_u8(f);
        unsigned idx = ((sib >> 3) & 7) | ((rex & 2) ? 8 : 0);
        unsigned base = (sib & 7) | ((rex & 1) ? 8 : 0);
        in->scale = sib >> 6;
        in->index = idx == 4 ? -1 : (int8_t)idx;
        if ((sib & 7) == 5 && in->mod == 0) {
            in->base = -1;
            in->disp = (int32_t)fetch_n(f, 4);
            return;
        }
        in->base = (int8_t)base;
    } else if (rm == 5 && in->mod == 0) {
        in->disp = (int32_t)fetch_n(f, 4);
        in->rip_rel = f->cpu->code64;
        return;
    } else {
        in->base = (int8_t)in->rm;
    }
    if (in->mod == 1)
        in->disp = (int8_t)fetch_u8(f);
    else if (in->mod == 2)
        in->disp = (int32_t)fetch_n(f, 4);
}

/* Operand-size immediate: 2 or 4 bytes (8-byte operands take a sign-extended imm32). */
static uint64_t fetch_immz(struct fetch *f, const struct insn *in)
{
    if (in->opsize == 2)
        return fetch_n(f, 2);
    return (uint64_t)(int64_t)(int32_t)fetch_n(f, 4);
}

static void decode_imm_1byte(struct fetch *f, struct insn *in)
{
    uint8_t op = in->op;
    if (op < 0x40 && (op & 7) == 4) {
        in->imm = fetch_u8(f);
        return;
    }
    if (op < 0x40 && (op & 7) == 5) {
        in->imm = fetch_immz(f, in);
        return;
    }
    switch (op) {
    case 0x68: case 0x69: case 0x81: case 0xa9: case 0xc7:
        in->imm = fetch_immz(f, in);
        return;
    case 0x6a: case 0x6b: case 0x80: case 0x82: case 0x83: case 0xa8: case 0xc0: case 0xc1:
    case 0xc6: case 0xcd: case 0xd4: case 0xd5: case 0xeb:
        in->imm = fetch_u8(f);
        return;
    case 0xe8: case 0xe9:
        in->imm = in->opsize == 2 && !f->cpu->code64 ? (uint64_t)(int16_t)fetch_n(f, 2)
                                                     : (uint64_t)(int32_t)fetch_n(f, 4);
        return;
    case 0xc2: case 0xca:
        in->imm = fetch_n(f, 2);
        return;
    case 0xc8:
        in->imm = fetch_n(f, 2);
        in->imm2 = fetch_u8(f);
        return;
    case 0x9a: case 0xea:
        in->imm = fetch_n(f, in->opsize == 2 ? 2 : 4);
        in->imm2 = fetch_n(f, 2);
        return;
    case 0xa0: case 0xa1: case 0xa2: case 0xa3:
        in->imm = fetch_n(f, in->addrsize);
        return;
    case 0xf6: case 0xf7:
        if ((in->reg & 7) < 2)
            in->imm = op == 0xf6 ? fetch_u8(f) : fetch_immz(f, in);
        return;
    }
    if (op >= 0x70 && op <= 0x7f)
        in->imm = fetch_u8(f);
    else if (op >= 0xe0 && op <= 0xe7)
        in->imm = fetch_u8(f);
    else if (op >= 0xb0 && op <= 0xb7)
        in->imm = fetch_u8(f);
    else if (op >= 0xb8 && op <= 0xbf)
        in->imm = in->opsize == 8 ? fetch_n(f, 8) : fetch_n(f, in->opsize);
}

static void decode_full(struct emu_cpu *cpu, struct insn *in)
{
    struct fetch f = {
        .cpu = cpu,
        .lin = cpu->seg[S_CS].base + cpu->rip,
        .page_lin = ~0ull,
        .user = cpu->cpl == 3,
        .wrap32 = !cpu->code64,
    };
    uint8_t b;
    bool p66 = false, p67 = false;

    memset(in, 0, sizeof(*in));
    in->start = cpu->rip;
    in->seg = S_NONE;
    in->base = in->index = -1;

    for (;;) {
        b = fetch_u8(&f);
        switch (b) {
        case 0xf0: in->lock = true; in->rex = 0; continue;
        case 0xf2: case 0xf3: in->rep = b; in->rex = 0; continue;
        case 0x26: in->seg = S_ES; in->rex = 0; continue;
        case 0x2e: in->seg = S_CS; in->rex = 0; continue;
        case 0x36: in->seg = S_SS; in->rex = 0; continue;
        case 0x3e: in->seg = S_DS; in->rex = 0; continue;
        case 0x64: in->seg = S_FS; in->rex = 0; continue;
        case 0x65: in->seg = S_GS; in->rex = 0; continue;
        case 0x66: p66 = true; in->rex = 0; continue;
        case 0x67: p67 = true; in->rex = 0; continue;
        }
        if (cpu->code64 && (b & 0xf0) == 0x40) {
            in->rex = b;
            continue;
        }
        break;
    }
    if (cpu->code64) {
        /* Only FS/GS overrides have an effect in 64-bit mode. */
        if (in->seg != S_FS && in->seg != S_GS)
            in->seg = S_NONE;
        in->opsize = (in->rex & 8) ? 8 : p66 ? 2 : 4;
        in->addrsize = p67 ? 4 : 8;
    } else {
        unsigned d = cpu->code_size;
        in->opsize = p66 ? (d == 4 ? 2 : 4) : d;
        in->addrsize = p67 ? (d == 4 ? 2 : 4) : d;
    }
    in->opsize_prefix = p66;

    in->map = 0;
    if (b == 0x0f) {
        b = fetch_u8(&f);
        in->map = 1;
        if (b == 0x38 || b == 0x3a) {
            in->map = b == 0x38 ? 2 : 3;
            b = fetch_u8(&f);
        }
    }
    in->op = b;

    switch (in->map) {
    case 0:
        if (cpu->code64 && (b == 0xc4 || b == 0xc5 || b == 0x62)) {
            cpu_raise_ud(cpu); /* VEX/EVEX: AVX is not offered */
        }
        if (modrm_1byte(b))
            decode_modrm(&f, in);
        if ((b == 0xc4 || b == 0xc5) && in->mod == 3)
            cpu_raise_ud(cpu); /* VEX in legacy modes */
        decode_imm_1byte(&f, in);
        break;
    case 1:
        if (modrm_0f(b))
            decode_modrm(&f, in);
        if (b >= 0x80 && b <= 0x8f) {
            in->imm = in->opsize == 2 && !cpu->code64 ? (uint64_t)(int16_t)fetch_n(&f, 2)
                                                      : (uint64_t)(int32_t)fetch_n(&f, 4);
        } else if ((b >= 0x70 && b <= 0x73) || b == 0xa4 || b == 0xac || b == 0xba ||
                   b == 0xc2 || b == 0xc4 || b == 0xc5 || b == 0xc6) {
            in->imm = fetch_u8(&f);
        }
        break;
    case 2:
        decode_modrm(&f, in);
        break;
    case 3:
        decode_modrm(&f, in);
        in->imm = fetch_u8(&f);
        break;
    }
    in->len = (uint8_t)f.pos;
}

void cpu_decode(struct emu_cpu *cpu, struct insn *in)
{
    decode_full(cpu, in);
}

int cpu_ea_seg(const struct insn *in)
{
    if (in->seg != S_NONE)
        return in->seg;
    if (in->base == R_BP || in->base == R_SP)
        return S_SS;
    return S_DS;
}

uint64_t cpu_ea(struct emu_cpu *cpu, const struct insn *in)
{
    uint64_t ea = (uint64_t)in->disp;
    if (in->rip_rel)
        ea += in->start + in->len;
    if (in->base >= 0)
        ea += cpu->regs[in->base];
    if (in->index >= 0)
        ea += cpu->regs[in->index] << in->scale;
    if (in->addrsize == 2)
        ea &= 0xffff;
    else if (in->addrsize == 4)
        ea &= 0xffffffffu;
    return ea;
}
