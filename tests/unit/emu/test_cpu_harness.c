#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_cpu_harness.h"

static uint64_t h_mmio_read(void *o, struct emu_cpu *c, uint64_t gpa, unsigned size)
{
    struct harness *h = o;
    (void)c;
    h->mmio_last_addr = gpa;
    return 0x1122334455667788ull & (size == 8 ? ~0ull : ((1ull << (size * 8)) - 1));
}

static void h_mmio_write(void *o, struct emu_cpu *c, uint64_t gpa, uint64_t val, unsigned size)
{
    struct harness *h = o;
    (void)c;
    (void)size;
    h->mmio_last_addr = gpa;
    h->mmio_last_val = val;
}

static uint32_t h_pio_read(void *o, struct emu_cpu *c, uint16_t port, unsigned size)
{
    (void)o;
    (void)c;
    (void)size;
    return port == 0x1234 ? 0xabcd5678u : 0xffffffffu;
}

static void h_pio_write(void *o, struct emu_cpu *c, uint16_t port, uint32_t val, unsigned size)
{
    struct harness *h = o;
    (void)c;
    (void)size;
    if (port == 0xe9 && h->out_len < sizeof(h->out) - 1)
        h->out[h->out_len++] = (char)val;
}

static int h_irq_ack(void *o, struct emu_cpu *c)
{
    struct harness *h = o;
    (void)c;
    int v = h->irq_vector;
    h->irq_vector = -1;
    return v;
}

static void put64(struct harness *h, uint64_t gpa, uint64_t v)
{
    memcpy(h->ram + gpa, &v, 8);
}

/* Handler at H_HANDLER + 16*vec: "mov $vec, %r15d ; jmp common"; common:
 * pop the error code if any into r14 (else r14 = return rip), hlt. */
static void build_handlers(struct harness *h)
{
    for (unsigned v = 0; v < 32; v++) {
        uint8_t *p = h->ram + H_HANDLER + 16 * v;
        bool err = v == 8 || (v >= 10 && v <= 14) || v == 17;
        unsigned i = 0;
        p[i++] = 0x41; p[i++] = 0xbf; /* mov $v, %r15d */
        p[i++] = (uint8_t)v; p[i++] = 0; p[i++] = 0; p[i++] = 0;
        p[i++] = 0x4c; p[i++] = 0x8b; p[i++] = 0x34; p[i++] = 0x24; /* mov (%rsp), %r14 */
        (void)err;
        p[i++] = 0xf4; /* hlt */
        p[i++] = 0xeb; p[i++] = 0xfd; /* jmp hlt */
    }
    /* 64-bit IDT: interrupt gates, IST 0, selector 0x08 */
    for (unsigned v = 0; v < 256; v++) {
        uint64_t off = H_HANDLER + 16 * (v < 32 ? v : 31);
        uint64_t lo = (off & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((off >> 16) << 48);
        put64(h, H_IDT + 16 * v, lo);
        put64(h, H_IDT + 16 * v + 8, 0);
    }
}

void h_map4k(struct harness *h, uint64_t va, uint64_t pa, uint64_t flags)
{
    put64(h, H_PT + 8 * (va >> 12), flags ? (pa | flags) : 0);
}

void h_init(struct harness *h)
{
    memset(h, 0, sizeof(*h));
    h->ram = calloc(1, H_RAM_SIZE);
    assert_non_null(h->ram);
    assert_int_equal(guest_mem_add(&h->mem, 0, H_RAM_SIZE, h->ram), 0);
    h->ops = (struct emu_platform_ops){
        .opaque = h,
        .mmio_read = h_mmio_read,
        .mmio_write = h_mmio_write,
        .pio_read = h_pio_read,
        .pio_write = h_pio_write,
        .irq_ack = h_irq_ack,
    };
    h->irq_vector = -1;
    h->cpu = emu_cpu_new(&h->mem, &h->ops, 0, 1);
    assert_non_null(h->cpu);

    /* Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] -> PT (4K pages for
     * the first 2 MiB, all present/writable/user), PD[1] 2 MiB page. */
    put64(h, H_PML4, H_PDPT | 7);
    put64(h, H_PDPT, H_PD | 7);
    put64(h, H_PD, H_PT | 7);
    put64(h, H_PD + 8, 0x200000 | 0x87);
    for (uint64_t a = 0; a < 0x200000; a += 4096)
        h_map4k(h, a, a, 7);
    /* GDT */
    put64(h, H_GDT + 0x00, 0);
    put64(h, H_GDT + 0x08, 0x00af9a000000ffffull); /* code64 */
    put64(h, H_GDT + 0x10, 0x00cf92000000ffffull); /* data */
    put64(h, H_GDT + 0x18, 0x00cf9a000000ffffull); /* code32 */
    put64(h, H_GDT + 0x20, 0x00cff2000000ffffull); /* user data */
    put64(h, H_GDT + 0x28, 0x00affa000000ffffull); /* user code64 */
    /* TSS at 0x30 (16 bytes), base H_TSS, limit 0x67 */
    put64(h, H_GDT + 0x30, 0x0000890000000067ull | ((uint64_t)H_TSS << 16));
    put64(h, H_GDT + 0x38, 0);
    put64(h, H_TSS + 4, H_STACK - 0x1000); /* rsp0 */
    put64(h, H_TSS + 0x24, H_ISTACK);      /* ist1 */
    build_handlers(h);
}

void h_free(struct harness *h)
{
    emu_cpu_free(h->cpu);
    free(h->ram);
}

static struct cpu_segment seg(uint16_t sel, uint8_t type, uint8_t dpl, bool l, bool db)
{
    return (struct cpu_segment){.base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
                                .s = 1, .dpl = dpl, .present = 1, .l = l, .db = db, .g = 1};
}

void h_enter_long(struct harness *h, const void *code, size_t len)
{
    struct cpu_state s;
    memcpy(h->ram + H_CODE, code, len);
    memset(&s, 0, sizeof(s));
    s.rip = H_CODE;
    s.rsp = H_STACK;
    s.rflags = 2;
    s.cs = seg(0x08, 0xb, 0, true, false);
    s.ds = s.es = s.ss = s.fs = s.gs = seg(0x10, 0x3, 0, false, true);
    s.tr = (struct cpu_segment){.base = H_TSS, .limit = 0x67, .selector = 0x30, .type = 0xb, .present = 1};
    s.ldt = (struct cpu_segment){.type = 2, .unusable = 1};
    s.gdt.base = H_GDT;
    s.gdt.limit = 0x3f;
    s.idt.base = H_IDT;
    s.idt.limit = 0xfff;
    s.cr0 = 0x80050033; /* PG AM WP NE ET MP PE */
    s.cr3 = H_PML4;
    s.cr4 = 0x6a0;      /* PAE PGE OSFXSR OSXMMEXCPT */
    s.efer = 0xd01;     /* SCE LME LMA NXE */
    emu_cpu_set_state(h->cpu, &s);
}

void h_enter_prot32(struct harness *h, const void *code, size_t len, bool paging)
{
    struct cpu_state s;
    memcpy(h->ram + H_CODE, code, len);
    memset(&s, 0, sizeof(s));
    s.rip = H_CODE;
    s.rsp = H_STACK;
    s.rflags = 2;
    s.cs = seg(0x18, 0xb, 0, false, true);
    s.ds = s.es = s.ss = s.fs = s.gs = seg(0x10, 0x3, 0, false, true);
    s.tr = (struct cpu_segment){.type = 0xb, .present = 1, .limit = 0xffff};
    s.ldt = (struct cpu_segment){.type = 2, .unusable = 1};
    s.gdt.base = H_GDT;
    s.gdt.limit = 0x3f;
    s.cr0 = 0x11;
    (void)paging;
    emu_cpu_set_state(h->cpu, &s);
}

void h_enter_real(struct harness *h, const void *code, size_t len)
{
    struct cpu_state s;
    memcpy(h->ram + H_CODE, code, len);
    emu_cpu_get_state(h->cpu, &s); /* reset state: real mode */
    s.cs.selector = H_CODE >> 4;
    s.cs.base = H_CODE;
    s.rip = 0;
    s.ss.selector = 0x7000;
    s.ss.base = 0x70000;
    s.rsp = 0xfff0;
    emu_cpu_set_state(h->cpu, &s);
}

enum emu_exit h_run(struct harness *h)
{
    atomic_bool stop = false;
    return emu_cpu_run(h->cpu, &stop);
}

void h_state(struct harness *h, struct cpu_state *s)
{
    emu_cpu_get_state(h->cpu, s);
}
