/* The software MMU: guest page walks (32-bit, PAE, 4-level), permission
 * checks and #PF, accessed/dirty bits (set atomically: other vCPUs walk the
 * same tables), and a direct-mapped software TLB per vCPU. */
#include <string.h>

#include "accel/emu/cpu_internal.h"

#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_G (1ull << 8)
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

void mmu_flush(struct emu_cpu *cpu, bool include_global)
{
    for (unsigned i = 0; i < TLB_SIZE; i++)
        if (include_global || !cpu->tlb[i].global)
            cpu->tlb[i].vpn = 0;
}

void mmu_invlpg(struct emu_cpu *cpu, uint64_t lin)
{
    /* Entries are 4K slices; one from a large page must go if it is a slice
     * of the large page that contains lin. */
    for (unsigned i = 0; i < TLB_SIZE; i++) {
        struct tlb_entry *e = &cpu->tlb[i];
        if (e->vpn && (((e->vpn - 1) << 12) >> e->page_shift) == (lin >> e->page_shift))
            e->vpn = 0;
    }
}

/* Reads one page-table entry from RAM, returning its host pointer (NULL if
 * the table is not in RAM: the walk then sees a not-present entry). */
static uint64_t *pte_ptr(struct emu_cpu *cpu, uint64_t gpa, unsigned size)
{
    return guest_mem_ptr(cpu->mem, gpa, size);
}

static void set_bits32(uint32_t *p, uint32_t bits)
{
    if ((__atomic_load_n(p, __ATOMIC_RELAXED) & bits) != bits)
        __atomic_fetch_or(p, bits, __ATOMIC_SEQ_CST);
}

static void set_bits64(uint64_t *p, uint64_t bits)
{
    if ((__atomic_load_n(p, __ATOMIC_RELAXED) & bits) != bits)
        __atomic_fetch_or(p, bits, __ATOMIC_SEQ_CST);
}

_Noreturn static void page_fault(struct emu_cpu *cpu, uint64_t lin, uint32_t err)
{
    cpu->cr2 = lin;
    cpu_raise(cpu, EXC_PF, true, err);
}

static uint32_t fault_code(struct emu_cpu *cpu, enum acc acc, bool user, bool present)
{
    uint32_t e = present ? PFEC_P : 0;
    if (acc == ACC_WRITE)
        e |= PFEC_W;
    if (user)
        e |= PFEC_U;
    if (acc == ACC_EXEC && (cpu->efer & EFER_NXE))
        e |= PFEC_I;
    return e;
}

static bool perm_ok(struct emu_cpu *cpu, const struct tlb_entry *e, enum acc acc, bool user)
{
    if (user && !e->user)
        return false;
    if (acc == ACC_WRITE && !e->rw && (user || (cpu->cr0 & CR0_WP)))
        return false;
    if (acc == ACC_EXEC && e->nx)
        return false;
    return true;
}

/* Walks the tables for lin; on success fills *e (4K granular). */
static void page_walk(struct emu_cpu *cpu, uint64_t lin, enum acc acc, bool user,
                      struct tlb_entry *e)
{
    bool nxe = cpu->efer & EFER_NXE;
    uint64_t *ptes64[4];
    uint32_t *ptes32[2];
    unsigned n = 0;
    uint64_t gpa_page;
    bool u = true, rw = true, nx = false, global = false, dirty;
    uint8_t shift = 12;

    if (!(cpu->cr0 & CR0_PG)) {
        gpa_page = lin & ~0xfffull & 0xffffffffull;
        if (cpu_long_mode(cpu))
            gpa_page = lin & ~0xfffull;
        e->user = e->rw = 1;
        e->nx = 0;
        e->global = 0;
        e->dirty = 1;
        e->gpa_page = gpa_page;
        e->page_shift = 12;
        return;
    }

    if (!(cpu->cr4 & CR4_PAE)) {
        /* 32-bit paging: 2 levels of 4-byte entries, optional 4M pages. */
        uint32_t l32 = (uint32_t)lin;
        uint64_t table = cpu->cr3 & 0xfffff000u;
        for (int level = 1; level >= 0; level--) {
            unsigned idx = (l32 >> (12 + 10 * level)) & 0x3ff;
            uint32_t *p = (uint32_t *)(void *)pte_ptr(cpu, table + idx * 4, 4);
            uint32_t pte = p ? __atomic_load_n(p, __ATOMIC_RELAXED) : 0;
            if (!(pte & PTE_P))
                page_fault(cpu, lin, fault_code(cpu, acc, user, false));
            ptes32[n++] = p;
            u &= !!(pte & PTE_US);
            rw &= !!(pte & PTE_RW);
            if (level == 1 && (pte & PTE_PS) && (cpu->cr4 & CR4_PSE)) {
                uint64_t base = (pte & 0xffc00000u) | ((uint64_t)(pte >> 13) & 0xff) << 32;
                gpa_page = base | (l32 & 0x3ff000);
                shift = 22;
                global = (pte & PTE_G) && (cpu->cr4 & CR4_PGE);
                goto done32;
            }
            if (level == 0) {
                gpa_page = pte & 0xfffff000u;
                global = (pte & PTE_G) && (cpu->cr4 & CR4_PGE);
                goto done32;
            }
            table = pte & 0xfffff000u;
        }
    done32:
        e->user = u;
        e->rw = rw;
        e->nx = 0;
        if (!perm_ok(cpu, e, acc, user))
            page_fault(cpu, lin, fault_code(cpu, acc, user, true));
        for (unsigned i = 0; i < n; i++)
            set_bits32(ptes32[i], PTE_A);
        dirty = acc == ACC_WRITE || (__atomic_load_n(ptes32[n - 1], __ATOMIC_RELAXED) & PTE_D);
        if (acc == ACC_WRITE)
            set_bits32(ptes32[n - 1], PTE_D);
        goto fill;
    }

    {
        /* PAE (3 levels, PDPT from CR3) or 4-level long-mode paging. */
        int top = cpu_long_mode(cpu) ? 3 : 2;
        uint64_t table = top == 3 ? (cpu->cr3 & PTE_ADDR) : (cpu->cr3 & 0xffffffe0u);
        for (int level = top; level >= 0; level--) {
            unsigned idx = (lin >> (12 + 9 * level)) & 0x1ff;
            uint64_t *p;
            uint64_t pte;
            if (top == 2 && level == 2)
                idx = (lin >> 30) & 3;
            p = pte_ptr(cpu, table + idx * 8, 8);
            pte = p ? __atomic_load_n(p, __ATOMIC_RELAXED) : 0;
            if (!(pte & PTE_P))
                page_fault(cpu, lin, fault_code(cpu, acc, user, false));
            if ((pte & PTE_NX) && !nxe)
                page_fault(cpu, lin, fault_code(cpu, acc, user, true) | PFEC_RSVD);
            if (top == 2 && level == 2) {
                /* Legacy PAE PDPTEs have no U/S, R/W, NX, A bits. */
                table = pte & PTE_ADDR;
                continue;
            }
            ptes64[n++] = p;
            u &= !!(pte & PTE_US);
            rw &= !!(pte & PTE_RW);
            nx |= nxe && (pte & PTE_NX);
            if (level == 0 || ((pte & PTE_PS) && level <= 2)) {
                if ((pte & PTE_PS) && level == 2 && top == 3) {
                    gpa_page = (pte & PTE_ADDR & ~0x3fffffffull) | (lin & 0x3ffff000ull);
                    shift = 30;
                } else if (pte & PTE_PS && level == 1) {
                    gpa_page = (pte & PTE_ADDR & ~0x1fffffull) | (lin & 0x1ff000ull);
                    shift = 21;
                } else if (level == 0) {
                    gpa_page = pte & PTE_ADDR;
                } else {
                    page_fault(cpu, lin, fault_code(cpu, acc, user, true) | PFEC_RSVD);
                }
                global = (pte & PTE_G) && (cpu->cr4 & CR4_PGE);
                break;
            }
            table = pte & PTE_ADDR;
        }
        e->user = u;
        e->rw = rw;
        e->nx = nx;
        if (!perm_ok(cpu, e, acc, user))
            page_fault(cpu, lin, fault_code(cpu, acc, user, true));
        for (unsigned i = 0; i < n; i++)
            set_bits64(ptes64[i], PTE_A);
        dirty = acc == ACC_WRITE || (__atomic_load_n(ptes64[n - 1], __ATOMIC_RELAXED) & PTE_D);
        if (acc == ACC_WRITE)
            set_bits64(ptes64[n - 1], PTE_D);
    }
fill:
    e->page_shift = shift;
    e->dirty = dirty;
    e->global = global;
    e->gpa_page = gpa_page;
}

const struct tlb_entry *mmu_translate(struct emu_cpu *cpu, uint64_t lin, enum acc acc, bool user)
{
    uint64_t vpn = lin >> 12;
    struct tlb_entry *e = &cpu->tlb[vpn & (TLB_SIZE - 1)];
    if (e->vpn == vpn + 1 && perm_ok(cpu, e, acc, user) && (acc != ACC_WRITE || e->dirty))
        return e;
    e->vpn = 0;
    page_walk(cpu, lin, acc, user, e);
    e->host = guest_mem_ptr(cpu->mem, e->gpa_page, 4096);
    e->code = e->host ? code_map_word(cpu->code_map, e->gpa_page) : NULL;
    e->vpn = vpn + 1;
    return e;
}

uint64_t phys_read(struct emu_cpu *cpu, uint64_t gpa, unsigned size)
{
    uint64_t v = 0;
    void *p = guest_mem_ptr(cpu->mem, gpa, size);
    if (p) {
        memcpy(&v, p, size);
        return v;
    }
    if (!cpu->ops || !cpu->ops->mmio_read)
        return size_mask(size);
    return cpu->ops->mmio_read(cpu->ops->opaque, cpu, gpa, size) & size_mask(size);
}

void phys_write(struct emu_cpu *cpu, uint64_t gpa, uint64_t val, unsigned size)
{
    void *p = guest_mem_ptr(cpu->mem, gpa, size);
    if (p) {
        memcpy(p, &val, size);
        code_note_write(cpu, code_map_word(cpu->code_map, gpa));
        code_note_write(cpu, code_map_word(cpu->code_map, gpa + size - 1));
        return;
    }
    if (cpu->ops && cpu->ops->mmio_write)
        cpu->ops->mmio_write(cpu->ops->opaque, cpu, gpa, val & size_mask(size), size);
}

uint64_t mmu_read_lin(struct emu_cpu *cpu, uint64_t lin, unsigned size, enum acc acc, bool user)
{
    unsigned off = lin & 0xfff;
    if (off + size > 4096) {
        /* Crosses a page: both pages are checked before any byte is used. */
        uint8_t buf[8];
        unsigned first = 4096 - off;
        mmu_translate(cpu, lin + first, acc, user);
        for (unsigned i = 0; i < size; i++)
            buf[i] = (uint8_t)mmu_read_lin(cpu, lin + i, 1, acc, user);
        uint64_t v = 0;
        memcpy(&v, buf, size);
        return v;
    }
    const struct tlb_entry *e = mmu_lookup(cpu, lin, acc, user);
    if (e->host) {
        uint64_t v = 0;
        memcpy(&v, e->host + off, size);
        return v;
    }
    return phys_read(cpu, e->gpa_page + off, size);
}

void mmu_write_lin(struct emu_cpu *cpu, uint64_t lin, uint64_t val, unsigned size, bool user)
{
    unsigned off = lin & 0xfff;
    if (off + size > 4096) {
        unsigned first = 4096 - off;
        mmu_translate(cpu, lin, ACC_WRITE, user);
        mmu_translate(cpu, lin + first, ACC_WRITE, user);
        for (unsigned i = 0; i < size; i++)
            mmu_write_lin(cpu, lin + i, (val >> (8 * i)) & 0xff, 1, user);
        return;
    }
    const struct tlb_entry *e = mmu_lookup(cpu, lin, ACC_WRITE, user);
    if (e->host) {
        memcpy(e->host + off, &val, size);
        code_note_write(cpu, e->code);
        return;
    }
    phys_write(cpu, e->gpa_page + off, val, size);
}

void mmu_read_buf(struct emu_cpu *cpu, uint64_t lin, void *buf, unsigned len, bool user)
{
    uint8_t *b = buf;
    while (len) {
        unsigned n = len > 8 ? 8 : len;
        uint64_t v = mmu_read_lin(cpu, lin, n, ACC_READ, user);
        memcpy(b, &v, n);
        b += n;
        lin += n;
        len -= n;
    }
}

void mmu_write_buf(struct emu_cpu *cpu, uint64_t lin, const void *buf, unsigned len, bool user)
{
    const uint8_t *b = buf;
    /* Check every page first so a fault leaves memory untouched. */
    for (uint64_t a = lin & ~0xfffull; a < lin + len; a += 4096)
        mmu_translate(cpu, a < lin ? lin : a, ACC_WRITE, user);
    while (len) {
        unsigned n = len > 8 ? 8 : len;
        uint64_t v = 0;
        memcpy(&v, b, n);
        mmu_write_lin(cpu, lin, v, n, user);
        b += n;
        lin += n;
        len -= n;
    }
}

void *mmu_rmw_ptr(struct emu_cpu *cpu, uint64_t lin, unsigned size, bool user)
{
    if ((lin & (size - 1)) != 0)
        return NULL;
    const struct tlb_entry *e = mmu_translate(cpu, lin, ACC_WRITE, user);
    if (!e->host)
        return NULL;
    /* Invalidated before the caller's write: only a block recorded by another
     * vCPU in the same instant could miss it, which x86 leaves undefined
     * (cross-modifying code must be synchronized by the guest). */
    code_note_write(cpu, e->code);
    return e->host + (lin & 0xfff);
}
