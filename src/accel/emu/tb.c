/* Translation blocks: straight-line runs of decoded instructions, cached per
 * vCPU and keyed by the guest-physical address of their first byte, so each
 * instruction is decoded once rather than every time it executes.
 *
 * Recording: a block is decoded while it first executes (decode, execute,
 * append), so a decode fault happens at exactly the instruction and time it
 * would without the cache. Recording stops after an instruction that changes
 * control flow, the CPU mode, address translation or interrupt state
 * (insn_ends_block()), before an instruction that crosses the page, and at
 * TB_MAX_INSNS. A block never spans two guest pages, so one TLB lookup at
 * block entry checks execute permission for all of it.
 *
 * Invalidation: every guest RAM page has a 32-bit word shared by all vCPUs
 * (struct code_map): bit 0 says "some block was decoded from this page", the
 * rest is a generation. Recording sets bit 0 (atomically, before reading the
 * bytes) and remembers the word; a block is valid while the word still has
 * that value. A store by any vCPU to a page whose bit 0 is set adds 1 to the
 * word (clearing the bit, bumping the generation) after the store, which
 * invalidates every block from that page on every vCPU; the storing vCPU also
 * leaves its current block after the storing instruction, so self-modifying
 * code is seen by the very next instruction. DMA and loaders reach guest RAM
 * behind the CPU's back and call emu_invalidate_code() (via guest_mem's
 * write hook). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "accel/emu/cpu_internal.h"

/* ---- code pages ------------------------------------------------------------ */

struct code_map_region {
    uint64_t gpa, pages;
    uint32_t *words;
};

/* Shared by every vCPU on the same struct guest_mem; refcounted. */
struct code_map {
    const struct guest_mem *mem;
    unsigned refs;
    unsigned nr;
    struct code_map_region r[GUEST_MEM_MAX_REGIONS];
    struct code_map *next;
};

static pthread_mutex_t code_maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct code_map *code_maps;

static void code_map_destroy(struct code_map *m)
{
    for (unsigned i = 0; i < m->nr; i++)
        free(m->r[i].words);
    free(m);
}

static struct code_map *code_map_create(const struct guest_mem *mem)
{
    struct code_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->mem = mem;
    m->refs = 1;
    for (unsigned i = 0; i < mem->nr_regions && i < GUEST_MEM_MAX_REGIONS; i++) {
        const struct guest_mem_region *g = &mem->regions[i];
        uint64_t first = g->gpa >> 12, last = (g->gpa + g->size + 4095) >> 12;
        m->r[i].gpa = first << 12;
        m->r[i].pages = last - first;
        m->r[i].words = calloc(m->r[i].pages ? m->r[i].pages : 1, sizeof(uint32_t));
        if (!m->r[i].words) {
            m->nr = i;
            code_map_destroy(m);
            return NULL;
        }
        m->nr = i + 1;
    }
    return m;
}

/* Callers hold code_maps_lock. */
static struct code_map *code_map_find(const struct guest_mem *mem)
{
    for (struct code_map *m = code_maps; m; m = m->next)
        if (m->mem == mem)
            return m;
    return NULL;
}

struct code_map *code_map_get(const struct guest_mem *mem)
{
    pthread_mutex_lock(&code_maps_lock);
    struct code_map *m = code_map_find(mem);
    if (m) {
        m->refs++;
    } else if ((m = code_map_create(mem))) {
        m->next = code_maps;
        code_maps = m;
    }
    pthread_mutex_unlock(&code_maps_lock);
    return m;
}

void code_map_put(struct code_map *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&code_maps_lock);
    if (--m->refs == 0) {
        for (struct code_map **pp = &code_maps; *pp; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
        code_map_destroy(m);
    }
    pthread_mutex_unlock(&code_maps_lock);
}

uint32_t *code_map_word(struct code_map *m, uint64_t gpa)
{
    if (!m)
        return NULL;
    for (unsigned i = 0; i < m->nr; i++) {
        uint64_t off = gpa - m->r[i].gpa;
        if (gpa >= m->r[i].gpa && (off >> 12) < m->r[i].pages)
            return &m->r[i].words[off >> 12];
    }
    return NULL;
}

/* A page with blocks was written: invalidate them (see the top comment). */
static bool code_word_bump(uint32_t *w)
{
    uint32_t v = __atomic_load_n(w, __ATOMIC_RELAXED);
    while (v & 1) {
        if (__atomic_compare_exchange_n(w, &v, v + 1, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return true;
    }
    return false;
}

void code_page_written(struct emu_cpu *cpu, uint32_t *w)
{
    if (code_word_bump(w))
        cpu->exit_tb = true;
}

void emu_invalidate_code(struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    if (!len || gpa + len < gpa)
        return;
    pthread_mutex_lock(&code_maps_lock);
    struct code_map *m = code_map_find(mem);
    for (uint64_t p = gpa & ~0xfffull; m && p < gpa + len && p >= (gpa & ~0xfffull); p += 4096) {
        uint32_t *w = code_map_word(m, p);
        if (w)
            code_word_bump(w);
    }
    pthread_mutex_unlock(&code_maps_lock);
}

/* ---- blocks ----------------------------------------------------------------- */

struct tb {
    uint64_t gpa;     /* guest-physical address of the first byte */
    uint32_t *page;   /* code word of its page */
    uint32_t page_val; /* *page when it was recorded; valid while equal */
    uint8_t mode;     /* code64 | code_size << 1: what decoding depended on */
    uint8_t n;
    struct insn insns[];
};

static unsigned tb_index(uint64_t gpa, uint8_t mode)
{
    uint64_t h = (gpa ^ (gpa >> TB_HASH_BITS) ^ ((uint64_t)mode << 7)) * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> (64 - TB_HASH_BITS));
}

bool tb_init(struct emu_cpu *cpu)
{
    cpu->tbs = calloc(TB_HASH_SIZE, sizeof(*cpu->tbs));
    cpu->tb_rec = malloc(sizeof(struct tb) + TB_MAX_INSNS * sizeof(struct insn));
    return cpu->tbs && cpu->tb_rec;
}

void tb_flush(struct emu_cpu *cpu)
{
    for (unsigned i = 0; cpu->tbs && i < TB_HASH_SIZE; i++) {
        free(cpu->tbs[i]);
        cpu->tbs[i] = NULL;
    }
}

void tb_free(struct emu_cpu *cpu)
{
    tb_flush(cpu);
    free(cpu->tbs);
    free(cpu->tb_rec);
}

/* Instructions after which the rest of a block could be stale: control
 * transfers that always leave (far/indirect ones, INT, IRET, SYSCALL), segment
 * and mode changes, CR/MSR/descriptor-table writes, INVLPG, HLT, CLI/STI/POPF
 * (interrupt window) and port I/O (devices may raise an interrupt). Near
 * jumps need no entry: a block ends at run time wherever RIP does not fall
 * through. */
static bool insn_ends_block(const struct insn *in)
{
    uint8_t op = in->op;
    if (in->map == 0) {
        switch (op) {
        case 0x07: case 0x17: case 0x1f: /* pop es/ss/ds */
        case 0x6c: case 0x6d: case 0x6e: case 0x6f: /* ins/outs */
        case 0x8e: /* mov sreg */
        case 0x9a: case 0xea: case 0xca: case 0xcb: /* far call/jmp/ret */
        case 0x9d: /* popf */
        case 0xc4: case 0xc5: /* les/lds */
        case 0xcc: case 0xcd: case 0xce: case 0xcf: case 0xf1: /* int, iret */
        case 0xe4: case 0xe5: case 0xe6: case 0xe7: case 0xec: case 0xed: case 0xee: case 0xef:
        case 0xf4: case 0xfa: case 0xfb: /* hlt, cli, sti */
            return true;
        case 0xff:
            return (in->reg & 7) == 3 || (in->reg & 7) == 5; /* far indirect */
        }
        return false;
    }
    if (in->map == 1)
        return op < 0x10 || (op >= 0x20 && op < 0x40) || op == 0xa1 || op == 0xa2 ||
               op == 0xa9 || op == 0xb2 || op == 0xb4 || op == 0xb5;
    return false;
}

static uint64_t next_rip(const struct emu_cpu *cpu, const struct insn *in)
{
    uint64_t n = in->start + in->len;
    return cpu->code64 ? n : n & 0xffffffffu;
}

/* Fast handlers exist only for 64-bit code: RIP needs no truncation. */
static inline void exec_insn(struct emu_cpu *cpu, struct insn *in)
{
    if (in->fast) {
        cpu->rip = in->start + in->len;
        in->fast(cpu, in);
    } else {
        cpu_exec(cpu, in);
    }
}

static void tb_exec(struct emu_cpu *cpu, struct tb *tb, unsigned max)
{
    unsigned n = tb->n < max ? tb->n : max;
    cpu->exit_tb = false;
    for (unsigned i = 0; i < n; i++) {
        struct insn *in = &tb->insns[i];
        in->start = cpu->insn_rip = cpu->rip;
        exec_insn(cpu, in);
        cpu->insn_count++;
        if (cpu->exit_tb || cpu->rip != next_rip(cpu, in))
            return;
    }
}

static void tb_install(struct emu_cpu *cpu, unsigned idx, const struct tb *rec)
{
    size_t size = sizeof(struct tb) + rec->n * sizeof(struct insn);
    struct tb *tb = malloc(size);
    if (!tb)
        return; /* not cached: it runs uncached again next time */
    memcpy(tb, rec, size);
    free(cpu->tbs[idx]);
    cpu->tbs[idx] = tb;
}

/* Decode-and-execute, appending each instruction to a new block. */
static void tb_record(struct emu_cpu *cpu, uint64_t gpa, uint8_t mode, uint32_t *page,
                      unsigned idx, unsigned max)
{
    struct tb *r = cpu->tb_rec;
    unsigned off = gpa & 0xfff;
    r->gpa = gpa;
    r->mode = mode;
    r->page = page;
    r->n = 0;
    /* Mark before reading the bytes: a store from now on invalidates. */
    r->page_val = __atomic_or_fetch(page, 1, __ATOMIC_SEQ_CST);
    cpu->exit_tb = false;
    for (;;) {
        struct insn *in = &r->insns[r->n];
        cpu->insn_rip = cpu->rip;
        cpu_decode(cpu, in);
        cpu_fast_select(cpu, in);
        bool fits = off + in->len <= 4096;
        bool ends = insn_ends_block(in);
        exec_insn(cpu, in);
        cpu->insn_count++;
        if (!fits)
            break;
        r->n++;
        off += in->len;
        if (ends || cpu->exit_tb || cpu->rip != next_rip(cpu, in) || r->n >= TB_MAX_INSNS ||
            r->n >= max)
            break;
    }
    if (r->n)
        tb_install(cpu, idx, r);
}

/* One instruction without the block cache: code outside RAM, single-step,
 * interrupt shadow. */
static void exec_uncached(struct emu_cpu *cpu)
{
    struct insn in;
    cpu->insn_rip = cpu->rip;
    cpu_decode(cpu, &in);
    cpu_exec(cpu, &in);
    cpu->insn_count++;
}

void tb_run(struct emu_cpu *cpu, unsigned max)
{
    uint64_t lin = cpu->seg[S_CS].base + cpu->rip;
    if (!cpu->code64)
        lin &= 0xffffffffu;
    cpu->insn_rip = cpu->rip;
    if (cpu->shadow || max == 1) {
        exec_uncached(cpu);
        return;
    }
    const struct tlb_entry *e = mmu_lookup(cpu, lin, ACC_EXEC, cpu->cpl == 3);
    if (!e->host || !e->code) {
        exec_uncached(cpu);
        return;
    }
    uint64_t gpa = e->gpa_page | (lin & 0xfff);
    uint8_t mode = (uint8_t)(cpu->code64 | (cpu->code_size << 1));
    unsigned idx = tb_index(gpa, mode);
    struct tb *tb = cpu->tbs[idx];
    if (tb && tb->gpa == gpa && tb->mode == mode && tb->page == e->code &&
        __atomic_load_n(e->code, __ATOMIC_RELAXED) == tb->page_val)
        tb_exec(cpu, tb, max);
    else
        tb_record(cpu, gpa, mode, e->code, idx, max);
}
