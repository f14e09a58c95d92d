/* Internal state and helpers shared by the software CPU's files
 * (cpu_state.c, mmu.c, decode.c, exec*.c, cpu_except.c, fpu_sse.c).
 * Not an interface for the platform: that is cpu.h. */
#ifndef EMBER_ACCEL_EMU_CPU_INTERNAL_H
#define EMBER_ACCEL_EMU_CPU_INTERNAL_H

#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "accel/emu/cpu.h"

/* General-purpose register numbers (ModRM / REX encoding order). */
enum { R_AX, R_CX, R_DX, R_BX, R_SP, R_BP, R_SI, R_DI };
/* Segment register numbers (sreg encoding order). */
enum { S_ES, S_CS, S_SS, S_DS, S_FS, S_GS, S_NONE = 7 };

/* RFLAGS bits */
#define F_CF (1u << 0)
#define F_PF (1u << 2)
#define F_AF (1u << 4)
#define F_ZF (1u << 6)
#define F_SF (1u << 7)
#define F_TF (1u << 8)
#define F_IF (1u << 9)
#define F_DF (1u << 10)
#define F_OF (1u << 11)
#define F_IOPL (3u << 12)
#define F_NT (1u << 14)
#define F_RF (1u << 16)
#define F_VM (1u << 17)
#define F_AC (1u << 18)
#define F_VIF (1u << 19)
#define F_VIP (1u << 20)
#define F_ID (1u << 21)
#define F_ARITH (F_CF | F_PF | F_AF | F_ZF | F_SF | F_OF)

#define CR0_PE (1u << 0)
#define CR0_MP (1u << 1)
#define CR0_EM (1u << 2)
#define CR0_TS (1u << 3)
#define CR0_ET (1u << 4)
#define CR0_NE (1u << 5)
#define CR0_WP (1u << 16)
#define CR0_AM (1u << 18)
#define CR0_NW (1u << 29)
#define CR0_CD (1u << 30)
#define CR0_PG (1u << 31)

#define CR4_VME (1u << 0)
#define CR4_PVI (1u << 1)
#define CR4_TSD (1u << 2)
#define CR4_DE (1u << 3)
#define CR4_PSE (1u << 4)
#define CR4_PAE (1u << 5)
#define CR4_MCE (1u << 6)
#define CR4_PGE (1u << 7)
#define CR4_PCE (1u << 8)
#define CR4_OSFXSR (1u << 9)
#define CR4_OSXMMEXCPT (1u << 10)
#define CR4_UMIP (1u << 11)
#define CR4_FSGSBASE (1u << 16)
#define CR4_PCIDE (1u << 17)
#define CR4_SMEP (1u << 20)
#define CR4_SMAP (1u << 21)

#define EFER_SCE (1u << 0)
#define EFER_LME (1u << 8)
#define EFER_LMA (1u << 10)
#define EFER_NXE (1u << 11)

/* Exception vectors */
enum {
    EXC_DE = 0, EXC_DB = 1, EXC_NMI = 2, EXC_BP = 3, EXC_OF = 4, EXC_BR = 5, EXC_UD = 6,
    EXC_NM = 7, EXC_DF = 8, EXC_TS = 10, EXC_NP = 11, EXC_SS = 12, EXC_GP = 13, EXC_PF = 14,
    EXC_MF = 16, EXC_AC = 17, EXC_MC = 18, EXC_XM = 19,
};

/* #PF error code bits */
#define PFEC_P (1u << 0)
#define PFEC_W (1u << 1)
#define PFEC_U (1u << 2)
#define PFEC_RSVD (1u << 3)
#define PFEC_I (1u << 4)

/* Segment register cache. attr uses the descriptor's byte 5 and the high
 * nibble of byte 6: type[3:0] s[4] dpl[6:5] p[7] avl[12] l[13] db[14] g[15]. */
struct emu_seg {
    uint64_t base;
    uint32_t limit;
    uint16_t sel;
    uint16_t attr;
};
#define SA_TYPE(a) ((a)&0xf)
#define SA_S (1u << 4)
#define SA_DPL(a) (((a) >> 5) & 3)
#define SA_P (1u << 7)
#define SA_AVL (1u << 12)
#define SA_L (1u << 13)
#define SA_DB (1u << 14)
#define SA_G (1u << 15)

/* Lazy arithmetic flags: the last flag-setting ALU operation, from which
 * CF/PF/AF/ZF/SF/OF are computed only when something reads them. */
enum lazy_op {
    LF_NONE, /* cpu->rflags holds the arithmetic flags */
    LF_ADD, LF_ADC, LF_SUB, LF_SBB, LF_LOGIC, LF_INC, LF_DEC,
};

/* Software TLB: direct-mapped, one entry per virtual page number hash. */
#define TLB_BITS 8
#define TLB_SIZE (1u << TLB_BITS)
struct tlb_entry {
    uint64_t vpn;      /* virtual page number + 1 (0 = empty) */
    uint64_t gpa_page; /* guest-physical page address */
    uint8_t *host;     /* host pointer to the page, NULL for MMIO */
    uint32_t *code;    /* the page's code word (tb.c), NULL outside RAM */
    uint8_t user;      /* U/S: user-accessible along the whole walk */
    uint8_t rw;        /* R/W along the whole walk */
    uint8_t dirty;     /* D already set (or paging off): writes may hit */
    uint8_t nx;        /* execute disabled */
    uint8_t global;
    uint8_t page_shift; /* 12, 21/22 or 30: size of the guest page it came from (INVLPG) */
};

/* Access kinds for translation */
enum acc { ACC_READ = 0, ACC_WRITE = 1, ACC_EXEC = 2 };

/* A decoded instruction. */
struct insn {
    uint64_t start;    /* rip of the first byte */
    uint8_t len;
    uint8_t opsize;    /* 2, 4, 8 */
    uint8_t addrsize;  /* 2, 4, 8 */
    uint8_t seg;       /* segment override or S_NONE */
    uint8_t rex;       /* REX byte or 0 */
    uint8_t rep;       /* 0, 0xf2, 0xf3 */
    bool lock;
    bool opsize_prefix; /* 66 seen (SSE mandatory prefix) */
    uint8_t map;       /* 0 = one byte, 1 = 0f, 2 = 0f38, 3 = 0f3a */
    uint8_t op;
    bool has_modrm;
    uint8_t modrm, mod, reg, rm; /* reg/rm include REX.R/REX.B */
    /* memory operand (mod != 3) */
    bool rip_rel;
    int8_t base, index; /* -1 = none */
    uint8_t scale;
    int64_t disp;
    uint64_t imm, imm2;
    /* exec_fast.c's handler for this form, or NULL (cpu_exec()) */
    void (*fast)(struct emu_cpu *cpu, const struct insn *in);
};

union emu_xmm {
    uint8_t b[16];
    int8_t sb[16];
    uint16_t w[8];
    int16_t sw[8];
    uint32_t d[4];
    int32_t sd[4];
    uint64_t q[2];
    int64_t sq[2];
    float f[4];
    double dbl[2];
};

/* Translation blocks (tb.c): per-vCPU direct-mapped table of decoded
 * straight-line code, keyed by guest-physical address. */
#define TB_HASH_BITS 12
#define TB_HASH_SIZE (1u << TB_HASH_BITS)
#define TB_MAX_INSNS 32
struct tb;
struct code_map;

struct emu_cpu {
    uint64_t regs[16];
    uint64_t rip;
    uint64_t rflags; /* arithmetic bits valid only when lf_op == LF_NONE */
    enum lazy_op lf_op;
    uint8_t lf_size;
    uint64_t lf_res, lf_a, lf_b;
    uint64_t lf_cf; /* carry in for ADC/SBB, preserved CF for INC/DEC */

    struct emu_seg seg[6];
    struct emu_seg ldtr, tr;
    uint64_t gdt_base, idt_base;
    uint16_t gdt_limit, idt_limit;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer;
    uint64_t dr[8];
    uint8_t cpl;
    bool code64;      /* CS.L in long mode */
    uint8_t code_size; /* default operand size of CS: 2 or 4 (8 never: 64-bit uses 4) */

    /* MSRs */
    uint64_t star, lstar, cstar, sfmask, kernel_gs_base;
    uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
    uint64_t pat, misc_enable, tsc_offset, tsc_aux;
    uint64_t mtrr_def_type, mtrr_fixed[11], mtrr_var[16];

    /* x87 / SSE */
    struct { uint64_t mant; uint16_t exp; } fpr[8]; /* physical x87 registers (ST(i) = fpr[(top + i) & 7]) */
    uint16_t fcw, fsw, ftw; /* ftw: 1 bit per physical register, 1 = valid */
    uint8_t ftop;
    uint16_t fop;
    uint64_t fip, fdp;
    union emu_xmm xmm[16];
    uint32_t mxcsr;

    /* Events */
    atomic_bool irq_check;
    bool halted;
    bool nmi_blocked;       /* between NMI delivery and IRET */
    uint64_t shadow_rip;    /* interrupt shadow (STI / MOV SS) covers the instruction at this rip */
    bool shadow;
    int delivering;         /* exception vector being delivered, -1 none: for #DF / triple fault */

    /* Fault unwinding out of the middle of an instruction */
    jmp_buf fault_jmp;
    uint64_t insn_rip;      /* rip of the instruction being executed (faults restart here) */
    int fault_vec;
    bool fault_has_err;
    uint32_t fault_err;
    bool internal_error;
    const char *internal_why;

    struct tlb_entry tlb[TLB_SIZE];
    uint64_t insn_count;
    uint64_t insn_limit; /* tests: emu_cpu_run returns EMU_EXIT_STOP at this count (0 = none) */
    struct tb **tbs;          /* TB_HASH_SIZE slots */
    struct tb *tb_rec;        /* the block being recorded */
    struct code_map *code_map; /* shared with the other vCPUs on the same guest_mem */
    bool exit_tb;             /* a store hit a code page: leave the current block */

    struct guest_mem *mem;
    const struct emu_platform_ops *ops;
    unsigned apic_id, nr_cpus;
    uint64_t tsc_epoch_ns;
};

/* ---- faults (cpu_except.c) ---- */
_Noreturn void cpu_raise(struct emu_cpu *cpu, int vec, bool has_err, uint32_t err);
_Noreturn void cpu_raise_gp(struct emu_cpu *cpu, uint32_t err);
_Noreturn void cpu_raise_ud(struct emu_cpu *cpu);
_Noreturn void cpu_internal(struct emu_cpu *cpu, const char *why);
/* Deliver an event through the IDT/IVT. soft: INT n (DPL check, rip = next). */
void cpu_deliver(struct emu_cpu *cpu, int vec, bool has_err, uint32_t err, bool soft, uint64_t next_rip);
/* Segment loads with protection checks (real mode: base = sel << 4). */
void cpu_load_seg(struct emu_cpu *cpu, int sreg, uint16_t sel);
void cpu_load_cs(struct emu_cpu *cpu, uint16_t sel, uint64_t desc, int new_cpl);
uint64_t cpu_read_descriptor(struct emu_cpu *cpu, uint16_t sel, int exc);
void cpu_seg_from_desc(struct emu_seg *s, uint16_t sel, uint64_t desc);
void cpu_update_mode(struct emu_cpu *cpu);
void cpu_far_jump(struct emu_cpu *cpu, uint16_t sel, uint64_t off, bool call, uint8_t opsize, uint64_t next_rip);
void cpu_far_ret(struct emu_cpu *cpu, uint8_t opsize, uint16_t imm);
void cpu_iret(struct emu_cpu *cpu, uint8_t opsize);
void cpu_syscall(struct emu_cpu *cpu, uint64_t next_rip);
void cpu_sysret(struct emu_cpu *cpu, uint8_t opsize);
void cpu_sysenter(struct emu_cpu *cpu);
void cpu_sysexit(struct emu_cpu *cpu, uint8_t opsize);
bool cpu_in_real_mode(const struct emu_cpu *cpu);
bool cpu_long_mode(const struct emu_cpu *cpu);

/* ---- flags (exec_flags.c) ---- */
uint64_t cpu_get_rflags(struct emu_cpu *cpu);
void cpu_set_rflags(struct emu_cpu *cpu, uint64_t f);
bool cpu_get_cf(struct emu_cpu *cpu);
bool cpu_cond(struct emu_cpu *cpu, unsigned cc);
void cpu_flags_materialize(struct emu_cpu *cpu);
static inline void cpu_lazy(struct emu_cpu *cpu, enum lazy_op op, unsigned size, uint64_t res,
                            uint64_t a, uint64_t b)
{
    cpu->lf_op = op;
    cpu->lf_size = (uint8_t)size;
    cpu->lf_res = res;
    cpu->lf_a = a;
    cpu->lf_b = b;
}

/* ---- MMU (mmu.c) ---- */
void mmu_flush(struct emu_cpu *cpu, bool include_global);
void mmu_invlpg(struct emu_cpu *cpu, uint64_t lin);
/* Translate lin for an access; raises #PF. Returns the TLB entry. */
const struct tlb_entry *mmu_translate(struct emu_cpu *cpu, uint64_t lin, enum acc acc, bool user);
/* TLB hit fast path; falls back to mmu_translate() (walk, faults). */
static inline const struct tlb_entry *mmu_lookup(struct emu_cpu *cpu, uint64_t lin, enum acc acc,
                                                 bool user)
{
    const struct tlb_entry *e = &cpu->tlb[(lin >> 12) & (TLB_SIZE - 1)];
    if (e->vpn == (lin >> 12) + 1 && (!user || e->user) && (acc != ACC_EXEC || !e->nx) &&
        (acc != ACC_WRITE || (e->dirty && (e->rw || (!user && !(cpu->cr0 & CR0_WP))))))
        return e;
    return mmu_translate(cpu, lin, acc, user);
}
uint64_t mmu_read_lin(struct emu_cpu *cpu, uint64_t lin, unsigned size, enum acc acc, bool user);
void mmu_write_lin(struct emu_cpu *cpu, uint64_t lin, uint64_t val, unsigned size, bool user);
void mmu_read_buf(struct emu_cpu *cpu, uint64_t lin, void *buf, unsigned len, bool user);
void mmu_write_buf(struct emu_cpu *cpu, uint64_t lin, const void *buf, unsigned len, bool user);
/* Host pointer to size bytes at lin for an atomic RMW, or NULL (MMIO / crosses a page). */
void *mmu_rmw_ptr(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool user);
/* Physical accesses (page walks, descriptor tables use linear -> these). */
uint64_t phys_read(struct emu_cpu *cpu, uint64_t gpa, unsigned size);
void phys_write(struct emu_cpu *cpu, uint64_t gpa, uint64_t val, unsigned size);

/* Segment-relative access helpers (exec.c): seg is S_* ; checks canonical/limit. */
uint64_t cpu_lin(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size, enum acc acc);
uint64_t cpu_read(struct emu_cpu *cpu, int seg, uint64_t off, unsigned size);
void cpu_write(struct emu_cpu *cpu, int seg, uint64_t off, uint64_t val, unsigned size);
/* System accesses (descriptor tables, TSS, IDT): supervisor, linear address. */
uint64_t cpu_sys_read(struct emu_cpu *cpu, uint64_t lin, unsigned size);
void cpu_sys_write(struct emu_cpu *cpu, uint64_t lin, uint64_t val, unsigned size);
void cpu_push(struct emu_cpu *cpu, uint64_t val, unsigned size);
uint64_t cpu_pop(struct emu_cpu *cpu, unsigned size);
uint64_t cpu_stack_mask(const struct emu_cpu *cpu);

/* ---- translation blocks and code pages (tb.c) ---- */
struct code_map *code_map_get(const struct guest_mem *mem);
void code_map_put(struct code_map *m);
uint32_t *code_map_word(struct code_map *m, uint64_t gpa);
void code_page_written(struct emu_cpu *cpu, uint32_t *w);
/* After a store to RAM through a TLB entry: invalidate the page's blocks if
 * it has any. Cheap when it has none: one load. */
static inline void code_note_write(struct emu_cpu *cpu, uint32_t *w)
{
    if (w && __builtin_expect(__atomic_load_n(w, __ATOMIC_RELAXED) & 1, 0))
        code_page_written(cpu, w);
}
bool tb_init(struct emu_cpu *cpu);
void tb_free(struct emu_cpu *cpu);
void tb_flush(struct emu_cpu *cpu);
/* Runs one block (at most max instructions) from cpu->rip; faults longjmp. */
void tb_run(struct emu_cpu *cpu, unsigned max);

/* ---- decode (decode.c) ---- */
/* Fetches and decodes the instruction at cpu->rip. Raises #UD/#PF/#GP. */
void cpu_decode(struct emu_cpu *cpu, struct insn *in);

/* ---- execute (exec.c, exec_sys.c, fpu_sse.c) ---- */
void cpu_exec(struct emu_cpu *cpu, struct insn *in);
/* Sets in->fast when exec_fast.c has a handler for the form (64-bit mode). */
void cpu_fast_select(const struct emu_cpu *cpu, struct insn *in);
bool cpu_exec_system(struct emu_cpu *cpu, struct insn *in); /* 0f xx system ops; false = not handled */
bool cpu_exec_sse(struct emu_cpu *cpu, struct insn *in);    /* false = not handled */
bool cpu_exec_x87(struct emu_cpu *cpu, struct insn *in);    /* d8-df */
void cpu_fpu_reset(struct emu_cpu *cpu);
void cpu_fxsave(struct emu_cpu *cpu, uint64_t lin);
void cpu_fxrstor(struct emu_cpu *cpu, uint64_t lin);
void cpu_cpuid(struct emu_cpu *cpu);
void cpu_rdmsr(struct emu_cpu *cpu);
void cpu_wrmsr(struct emu_cpu *cpu);
void cpu_write_cr(struct emu_cpu *cpu, int n, uint64_t val);
uint64_t cpu_read_cr(struct emu_cpu *cpu, int n);

/* Effective address of in's memory operand (offset within its segment). */
uint64_t cpu_ea(struct emu_cpu *cpu, const struct insn *in);
int cpu_ea_seg(const struct insn *in);

/* Register access by size, with the legacy AH..BH mapping for size 1 w/o REX. */
uint64_t cpu_reg_get(struct emu_cpu *cpu, int r, unsigned size, bool rex);
void cpu_reg_set(struct emu_cpu *cpu, int r, unsigned size, bool rex, uint64_t v);

static inline uint64_t size_mask(unsigned size)
{
    return size >= 8 ? ~0ull : ((1ull << (size * 8)) - 1);
}
static inline uint64_t sign_bit(unsigned size)
{
    return 1ull << (size * 8 - 1);
}
static inline int64_t sext(uint64_t v, unsigned size)
{
    unsigned sh = 64 - size * 8;
    return (int64_t)(v << sh) >> sh;
}

#endif
