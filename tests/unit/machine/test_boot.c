/* Unit tests for the boot loaders (PVH ELF, bzImage) and the e820 map:
 * synthetic images are built in memory, loaded into a calloc'd guest RAM,
 * and the RAM and entry state are checked byte by byte. Hostile images
 * must be refused with an error, never crash (run under ASan/UBSan too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "machine/boot.h"
#include "machine/e820.h"
#include "test_boot_common.h"

#define MB (1024ULL * 1024)

/* ---- e820 ---- */

static void check_e820_shape(uint64_t ram_size)
{
    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(ram_size, map);
    uint64_t ram = 0;
    bool ecam_reserved = false;
    assert_true(n >= 4 && n <= E820_MAX_ENTRIES);
    for (unsigned i = 0; i < n; i++) {
        assert_true(map[i].size > 0);
        if (i)
            assert_true(map[i].addr >= map[i - 1].addr + map[i - 1].size); /* sorted, disjoint */
        if (map[i].type == E820_RAM) {
            ram += map[i].size;
            /* RAM never overlaps the hole or the legacy BIOS area. */
            assert_false(map[i].addr < LAYOUT_BIOS_END && map[i].addr + map[i].size > LAYOUT_EBDA_START);
            assert_false(map[i].addr < LAYOUT_HIGH_RAM_BASE &&
                         map[i].addr + map[i].size > LAYOUT_LOW_RAM_MAX);
        }
        if (map[i].type == E820_RESERVED && map[i].addr == LAYOUT_PCI_ECAM_BASE &&
            map[i].size == LAYOUT_PCI_ECAM_SIZE)
            ecam_reserved = true;
    }
    assert_true(ecam_reserved);
    /* All RAM but the 0x9fc00-0xfffff window is reported. */
    assert_int_equal(ram, ram_size - (LAYOUT_BIOS_END - LAYOUT_EBDA_START));
    assert_int_equal(map[0].addr, 0);
    assert_int_equal(map[0].size, LAYOUT_EBDA_START);
    assert_int_equal(map[0].type, E820_RAM);
    assert_int_equal(map[1].addr, LAYOUT_EBDA_START);
    assert_int_equal(map[1].type, E820_RESERVED);
}

static void test_e820_128m(void **state)
{
    (void)state;
    struct e820_entry map[E820_MAX_ENTRIES];
    check_e820_shape(128 * MB);
    unsigned n = e820_build(128 * MB, map);
    assert_int_equal(map[2].addr, LAYOUT_BIOS_END);
    assert_int_equal(map[2].size, 127 * MB);
    assert_int_equal(map[2].type, E820_RAM);
    assert_true(map[n - 1].addr < LAYOUT_HIGH_RAM_BASE); /* nothing above 4 GiB */
}

static void test_e820_3g(void **state)
{
    (void)state;
    struct e820_entry map[E820_MAX_ENTRIES];
    check_e820_shape(3 * GiB);
    unsigned n = e820_build(3 * GiB, map);
    assert_int_equal(map[2].addr + map[2].size, LAYOUT_LOW_RAM_MAX);
    assert_true(map[n - 1].type == E820_RESERVED);
}

static void test_e820_5g(void **state)
{
    (void)state;
    struct e820_entry map[E820_MAX_ENTRIES];
    check_e820_shape(5 * GiB);
    unsigned n = e820_build(5 * GiB, map);
    assert_int_equal(map[2].addr + map[2].size, LAYOUT_LOW_RAM_MAX);
    assert_int_equal(map[n - 1].addr, LAYOUT_HIGH_RAM_BASE);
    assert_int_equal(map[n - 1].size, 2 * GiB);
    assert_int_equal(map[n - 1].type, E820_RAM);
}

static void test_e820_tiny(void **state)
{
    (void)state;
    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(512 * 1024, map);
    assert_int_equal(map[0].addr, 0);
    assert_int_equal(map[0].size, 512 * 1024);
    assert_int_equal(map[0].type, E820_RAM);
    for (unsigned i = 1; i < n; i++)
        assert_int_equal(map[i].type, E820_RESERVED);
}

/* ---- PVH ELF images ---- */

#define PVH_LOAD_ADDR 0x100000ULL
#define PVH_ENTRY 0x100010ULL
#define PVH_CODE_SIZE 0x40
#define PVH_BSS_SIZE 0x1000

/* A 64-bit ELF: header, PT_LOAD (code + bss), PT_NOTE with a dummy note
 * then the Xen PHYS32_ENTRY note (8-byte value, as Linux emits). */
struct pvh_elf64 {
    Elf64_Ehdr eh;
    Elf64_Phdr ph[2];
    uint8_t notes[64];
    uint8_t code[PVH_CODE_SIZE];
};

static void put_note(uint8_t **p, const char *name, uint32_t type, const void *desc, uint32_t descsz)
{
    uint32_t namesz = (uint32_t)strlen(name) + 1;
    st32(*p, namesz);
    st32(*p + 4, descsz);
    st32(*p + 8, type);
    memcpy(*p + 12, name, namesz);
    *p += 12 + ALIGN_UP(namesz, 4);
    memcpy(*p, desc, descsz);
    *p += ALIGN_UP(descsz, 4);
}

static void make_pvh_elf64(struct pvh_elf64 *f)
{
    memset(f, 0, sizeof(*f));
    memcpy(f->eh.e_ident, ELFMAG, SELFMAG);
    f->eh.e_ident[EI_CLASS] = ELFCLASS64;
    f->eh.e_ident[EI_DATA] = ELFDATA2LSB;
    f->eh.e_ident[EI_VERSION] = EV_CURRENT;
    f->eh.e_type = ET_EXEC;
    f->eh.e_machine = EM_X86_64;
    f->eh.e_version = EV_CURRENT;
    f->eh.e_entry = 0xffffffff81000000ULL; /* virtual: the loader must not use it */
    f->eh.e_phoff = offsetof(struct pvh_elf64, ph);
    f->eh.e_ehsize = sizeof(Elf64_Ehdr);
    f->eh.e_phentsize = sizeof(Elf64_Phdr);
    f->eh.e_phnum = 2;

    uint8_t *p = f->notes;
    uint32_t dummy = 0x1234;
    put_note(&p, "GNU", 3, &dummy, 4);
    uint64_t entry = PVH_ENTRY;
    put_note(&p, "Xen", 18, &entry, 8);

    f->ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = offsetof(struct pvh_elf64, notes),
                            .p_filesz = (uint64_t)(p - f->notes), .p_memsz = (uint64_t)(p - f->notes)};
    f->ph[1] = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_X,
                            .p_offset = offsetof(struct pvh_elf64, code),
                            .p_vaddr = 0xffffffff81000000ULL, .p_paddr = PVH_LOAD_ADDR,
                            .p_filesz = PVH_CODE_SIZE, .p_memsz = PVH_CODE_SIZE + PVH_BSS_SIZE};
    for (unsigned i = 0; i < PVH_CODE_SIZE; i++)
        f->code[i] = (uint8_t)(0x90 + i);
}

static int load_image(const void *data, size_t len, struct test_vm *vm, const char *cmdline,
                      const char *initrd, struct cpu_state *bsp)
{
    char *path = test_write_file(data, len);
    struct boot_config bc = {.kernel = path, .initrd = initrd, .cmdline = cmdline,
                             .ram_size = vm->ram_size, .nr_cpus = 1};
    int ret = boot_load_kernel(&bc, &vm->mem, bsp);
    test_remove_file(path);
    return ret;
}

/* Check the flat protected-mode segments and the GDT behind them. */
static void check_segments(const struct test_vm *vm, const struct cpu_state *s, bool long_mode)
{
    assert_int_equal(s->cs.selector, 0x10);
    assert_int_equal(s->cs.type, 0xb);
    assert_int_equal(s->cs.l, long_mode);
    assert_int_equal(s->cs.db, !long_mode);
    assert_int_equal(s->cs.limit, 0xffffffff);
    assert_int_equal(s->cs.present, 1);
    assert_int_equal(s->cs.s, 1);
    const struct cpu_segment *data[] = {&s->ds, &s->es, &s->ss, &s->fs, &s->gs};
    for (unsigned i = 0; i < ARRAY_SIZE(data); i++) {
        assert_int_equal(data[i]->selector, 0x18);
        assert_int_equal(data[i]->type, 0x3);
        assert_int_equal(data[i]->db, 1);
        assert_int_equal(data[i]->g, 1);
    }
    assert_int_equal(s->tr.selector, 0x20);
    assert_int_equal(s->tr.type, 0xb); /* busy TSS */
    assert_int_equal(s->tr.s, 0);
    assert_int_equal(s->tr.present, 1);
    assert_true(s->ldt.unusable);
    assert_int_equal(s->gdt.base, LAYOUT_BOOT_GDT);
    assert_true(s->gdt.limit >= 0x27);
    assert_int_equal(s->rflags, 0x2);

    const uint8_t *gdt = vm->ram + LAYOUT_BOOT_GDT;
    assert_int_equal(ld64(gdt + 0x10), long_mode ? 0x00af9b000000ffffULL : 0x00cf9b000000ffffULL);
    assert_int_equal(ld64(gdt + 0x18), 0x00cf93000000ffffULL);
    uint64_t tss = ld64(gdt + 0x20);
    assert_int_equal((tss >> 40) & 0xff, 0x8b); /* present, busy 32/64-bit TSS */
    assert_int_equal(tss & 0xffff, 0x67);
    uint64_t tss_base = ((tss >> 16) & 0xffffff) | ((tss >> 32) & 0xff000000);
    assert_int_equal(tss_base, s->tr.base);
}

static void test_pvh_load(void **state)
{
    (void)state;
    struct test_vm vm;
    struct pvh_elf64 f;
    struct cpu_state s;
    test_vm_init(&vm, 64 * MB);
    memset(vm.ram + PVH_LOAD_ADDR, 0xaa, PVH_CODE_SIZE + PVH_BSS_SIZE + 16);
    make_pvh_elf64(&f);

    assert_int_equal(load_image(&f, sizeof(f), &vm, "console=ttyS0 quiet", NULL, &s), 0);
    assert_memory_equal(vm.ram + PVH_LOAD_ADDR, f.code, PVH_CODE_SIZE);
    for (unsigned i = 0; i < PVH_BSS_SIZE; i++)
        assert_int_equal(vm.ram[PVH_LOAD_ADDR + PVH_CODE_SIZE + i], 0);
    assert_int_equal(vm.ram[PVH_LOAD_ADDR + PVH_CODE_SIZE + PVH_BSS_SIZE], 0xaa); /* nothing past memsz */

    assert_int_equal(s.rip, PVH_ENTRY);
    assert_int_equal(s.rbx, LAYOUT_BOOT_PARAMS);
    assert_int_equal(s.cr0, 0x11);
    assert_int_equal(s.cr4, 0);
    assert_int_equal(s.efer, 0);
    check_segments(&vm, &s, false);

    const uint8_t *si = vm.ram + s.rbx;
    assert_int_equal(ld32(si + 0), 0x336ec578);
    assert_int_equal(ld32(si + 4), 1);
    assert_int_equal(ld32(si + 12), 0); /* no modules */
    uint64_t cmdline = ld64(si + 24);
    assert_string_equal((const char *)vm.ram + cmdline, "console=ttyS0 quiet");
    assert_int_equal(ld64(si + 32), LAYOUT_ACPI_BASE);

    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(64 * MB, map);
    uint64_t memmap = ld64(si + 40);
    assert_int_equal(ld32(si + 48), n);
    assert_true(memmap > 0 && memmap + n * 24 < LAYOUT_BOOT_CMDLINE);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = vm.ram + memmap + i * 24;
        assert_int_equal(ld64(e), map[i].addr);
        assert_int_equal(ld64(e + 8), map[i].size);
        assert_int_equal(ld32(e + 16), map[i].type);
    }
    test_vm_free(&vm);
}

static void test_pvh_initrd(void **state)
{
    (void)state;
    struct test_vm vm;
    struct pvh_elf64 f;
    struct cpu_state s;
    uint8_t initrd[10000];
    for (unsigned i = 0; i < sizeof(initrd); i++)
        initrd[i] = (uint8_t)(i * 7);
    char *initrd_path = test_write_file(initrd, sizeof(initrd));
    test_vm_init(&vm, 32 * MB);
    make_pvh_elf64(&f);

    assert_int_equal(load_image(&f, sizeof(f), &vm, NULL, initrd_path, &s), 0);
    const uint8_t *si = vm.ram + s.rbx;
    assert_int_equal(ld32(si + 12), 1);
    const uint8_t *mod = vm.ram + ld64(si + 16);
    uint64_t addr = ld64(mod), size = ld64(mod + 8);
    assert_int_equal(size, sizeof(initrd));
    assert_true(IS_ALIGNED(addr, 4096));
    assert_true(addr >= PVH_LOAD_ADDR + PVH_CODE_SIZE + PVH_BSS_SIZE);
    assert_true(addr + size <= 32 * MB);
    assert_memory_equal(vm.ram + addr, initrd, sizeof(initrd));
    assert_string_equal((const char *)vm.ram + ld64(si + 24), ""); /* no -append: empty */

    test_vm_free(&vm);
    test_remove_file(initrd_path);

    /* An initrd larger than the RAM left above the kernel is refused. */
    size_t big_len = 1 * MB;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    initrd_path = test_write_file(big, big_len);
    free(big);
    test_vm_init(&vm, 2 * MB);
    assert_true(load_image(&f, sizeof(f), &vm, NULL, initrd_path, &s) < 0);
    test_vm_free(&vm);
    test_remove_file(initrd_path);
}

/* A 32-bit ELF with a 4-byte PVH note value. */
static void test_pvh_elf32(void **state)
{
    (void)state;
    struct {
        Elf32_Ehdr eh;
        Elf32_Phdr ph[2];
        uint8_t notes[20];
        uint8_t code[16];
    } f;
    memset(&f, 0, sizeof(f));
    memcpy(f.eh.e_ident, ELFMAG, SELFMAG);
    f.eh.e_ident[EI_CLASS] = ELFCLASS32;
    f.eh.e_ident[EI_DATA] = ELFDATA2LSB;
    f.eh.e_ident[EI_VERSION] = EV_CURRENT;
    f.eh.e_machine = EM_386;
    f.eh.e_phoff = offsetof(__typeof__(f), ph);
    f.eh.e_phentsize = sizeof(Elf32_Phdr);
    f.eh.e_phnum = 2;
    uint8_t *p = f.notes;
    uint32_t entry = 0x200000;
    put_note(&p, "Xen", 18, &entry, 4);
    f.ph[0] = (Elf32_Phdr){.p_type = PT_LOAD, .p_offset = offsetof(__typeof__(f), code),
                           .p_paddr = 0x200000, .p_filesz = 16, .p_memsz = 16};
    f.ph[1] = (Elf32_Phdr){.p_type = PT_NOTE, .p_offset = offsetof(__typeof__(f), notes),
                           .p_filesz = sizeof(f.notes)};
    memset(f.code, 0xf4, sizeof(f.code)); /* hlt */

    struct test_vm vm;
    struct cpu_state s;
    test_vm_init(&vm, 16 * MB);
    assert_int_equal(load_image(&f, sizeof(f), &vm, "x", NULL, &s), 0);
    assert_int_equal(s.rip, 0x200000);
    assert_memory_equal(vm.ram + 0x200000, f.code, 16);
    test_vm_free(&vm);
}

static void expect_pvh_refused(struct pvh_elf64 *f, size_t len, uint64_t ram)
{
    struct test_vm vm;
    struct cpu_state s;
    test_vm_init(&vm, ram);
    assert_true(load_image(f, len, &vm, NULL, NULL, &s) < 0);
    test_vm_free(&vm);
}

static void test_pvh_hostile(void **state)
{
    (void)state;
    struct pvh_elf64 f;

    make_pvh_elf64(&f); /* segment beyond RAM */
    f.ph[1].p_paddr = 1 * GiB;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* segment end wraps around */
    f.ph[1].p_paddr = UINT64_MAX - 8;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* data past the end of the file */
    f.ph[1].p_filesz = sizeof(f);
    f.ph[1].p_memsz = sizeof(f);
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* offset + size overflows */
    f.ph[1].p_offset = UINT64_MAX - 4;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* filesz > memsz */
    f.ph[1].p_memsz = 4;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* over the loader's own structures below 1 MiB */
    f.ph[1].p_paddr = 0x7000;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* no PVH note */
    f.ph[0].p_type = PT_NULL;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* note with a huge namesz */
    st32(f.notes, 0xfffffff0);
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* note segment past EOF */
    f.ph[0].p_filesz = 1 << 20;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* entry outside RAM */
    st64(f.notes + 20 + 16, 0x80000000ULL); /* Xen note follows the 20-byte GNU one */
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* program headers past EOF */
    f.eh.e_phnum = 60000;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* too-small program header entries */
    f.eh.e_phentsize = 8;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* truncated ELF header */
    expect_pvh_refused(&f, 20, 64 * MB);

    make_pvh_elf64(&f); /* big-endian */
    f.eh.e_ident[EI_DATA] = ELFDATA2MSB;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* not x86 */
    f.eh.e_machine = EM_AARCH64;
    expect_pvh_refused(&f, sizeof(f), 64 * MB);

    make_pvh_elf64(&f); /* too little RAM */
    expect_pvh_refused(&f, sizeof(f), 1 * MB);
}

/* Random byte flips in a valid image: any result is fine but a crash or
 * a write outside guest RAM (caught by ASan in the sanitizer build). */
static void test_pvh_mutations(void **state)
{
    (void)state;
    struct pvh_elf64 f, m;
    struct test_vm vm;
    struct cpu_state s;
    uint32_t rng = 12345;
    make_pvh_elf64(&f);
    test_vm_init(&vm, 4 * MB);
    for (unsigned iter = 0; iter < 300; iter++) {
        m = f;
        uint8_t *b = (uint8_t *)&m;
        size_t limit = offsetof(struct pvh_elf64, code);
        for (unsigned k = 0; k < 4; k++) {
            rng = rng * 1103515245 + 12345;
            b[(rng >> 8) % limit] ^= (uint8_t)(1u << ((rng >> 4) & 7));
        }
        (void)load_image(&m, sizeof(m), &vm, NULL, NULL, &s);
    }
    test_vm_free(&vm);
}

/* ---- bzImage ---- */

#define BZ_SETUP_SECTS 4
#define BZ_KERNEL_OFF ((BZ_SETUP_SECTS + 1) * 512)
#define BZ_KERNEL_SIZE 8192
#define BZ_PREF 0x1000000ULL
#define BZ_INIT_SIZE 0x400000

static void make_bzimage(uint8_t *img)
{
    memset(img, 0, BZ_KERNEL_OFF + BZ_KERNEL_SIZE);
    img[0x1f1] = BZ_SETUP_SECTS;
    st16(img + 0x1fe, 0xaa55);
    img[0x200] = 0xeb;
    img[0x201] = 0x66; /* header ends at 0x268 */
    memcpy(img + 0x202, "HdrS", 4);
    st16(img + 0x206, 0x020f);
    img[0x211] = 0x01; /* LOADED_HIGH */
    st32(img + 0x214, 0x100000);
    st32(img + 0x22c, 0x7fffffff);
    st32(img + 0x230, 0x200000);
    img[0x234] = 1;   /* relocatable */
    img[0x235] = 21;  /* min_alignment */
    st16(img + 0x236, 0x3); /* XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G */
    st32(img + 0x238, 2047);
    st64(img + 0x258, BZ_PREF);
    st32(img + 0x260, BZ_INIT_SIZE);
    for (unsigned i = 0; i < BZ_KERNEL_SIZE; i++)
        img[BZ_KERNEL_OFF + i] = (uint8_t)(i ^ (i >> 8));
}

static void test_bzimage_load(void **state)
{
    (void)state;
    static uint8_t img[BZ_KERNEL_OFF + BZ_KERNEL_SIZE];
    uint8_t initrd[5000];
    memset(initrd, 0x5a, sizeof(initrd));
    char *initrd_path = test_write_file(initrd, sizeof(initrd));
    struct test_vm vm;
    struct cpu_state s;
    make_bzimage(img);
    test_vm_init(&vm, 64 * MB);

    assert_int_equal(load_image(img, sizeof(img), &vm, "console=ttyS0", initrd_path, &s), 0);
    /* Kernel at its preferred address, entered at +0x200 in long mode. */
    assert_memory_equal(vm.ram + BZ_PREF, img + BZ_KERNEL_OFF, BZ_KERNEL_SIZE);
    assert_int_equal(s.rip, BZ_PREF + 0x200);
    assert_int_equal(s.rsi, LAYOUT_BOOT_PARAMS);
    assert_int_equal(s.cr0 & 0x80000001, 0x80000001);
    assert_int_equal(s.cr4 & 0x20, 0x20);
    assert_int_equal(s.efer, 0x500);
    assert_int_equal(s.cr3, LAYOUT_BOOT_PGTABLE);
    check_segments(&vm, &s, true);

    /* Identity map: PML4[0] -> PDPT, PDPT[0..3] -> PDs, 2 MiB pages. */
    const uint8_t *pml4 = vm.ram + s.cr3;
    uint64_t pdpt = ld64(pml4) & ~0xfffULL;
    assert_int_equal(ld64(pml4) & 1, 1);
    for (unsigned g = 0; g < 4; g++) {
        uint64_t pd = ld64(vm.ram + pdpt + g * 8) & ~0xfffULL;
        assert_true(pd > 0 && pd < LAYOUT_BOOT_CMDLINE);
        for (unsigned i = 0; i < 512; i += 97)
            assert_int_equal(ld64(vm.ram + pd + i * 8),
                             ((uint64_t)g << 30 | (uint64_t)i << 21) | 0x83);
    }

    const uint8_t *bp = vm.ram + LAYOUT_BOOT_PARAMS;
    assert_memory_equal(bp + 0x202, "HdrS", 4);
    assert_int_equal(ld16(bp + 0x206), 0x020f);
    assert_int_equal(bp[0x210], 0xff);
    assert_int_equal(bp[0x211] & 0x81, 0x81); /* LOADED_HIGH | CAN_USE_HEAP */
    assert_int_equal(ld16(bp + 0x1fa), 0xffff);
    assert_int_equal(ld32(bp + 0x214), BZ_PREF);
    assert_int_equal(ld32(bp + 0x228), LAYOUT_BOOT_CMDLINE);
    assert_string_equal((const char *)vm.ram + LAYOUT_BOOT_CMDLINE, "console=ttyS0");
    assert_int_equal(ld16(bp + 0x224), 0xfe00 - 0x200);
    assert_int_equal(bp[0x268], 0); /* nothing copied past the header */

    uint64_t rd = ld32(bp + 0x218);
    assert_int_equal(ld32(bp + 0x21c), sizeof(initrd));
    assert_true(IS_ALIGNED(rd, 4096));
    assert_true(rd >= BZ_PREF + BZ_INIT_SIZE && rd + sizeof(initrd) <= 64 * MB);
    assert_memory_equal(vm.ram + rd, initrd, sizeof(initrd));

    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(64 * MB, map);
    assert_int_equal(bp[0x1e8], n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(ld64(bp + 0x2d0 + i * 20), map[i].addr);
        assert_int_equal(ld64(bp + 0x2d0 + i * 20 + 8), map[i].size);
        assert_int_equal(ld32(bp + 0x2d0 + i * 20 + 16), map[i].type);
    }
    test_vm_free(&vm);
    test_remove_file(initrd_path);
}

static void test_bzimage_not_relocatable(void **state)
{
    (void)state;
    static uint8_t img[BZ_KERNEL_OFF + BZ_KERNEL_SIZE];
    struct test_vm vm;
    struct cpu_state s;
    make_bzimage(img);
    img[0x234] = 0;
    test_vm_init(&vm, 64 * MB);
    assert_int_equal(load_image(img, sizeof(img), &vm, NULL, NULL, &s), 0);
    assert_memory_equal(vm.ram + 0x100000, img + BZ_KERNEL_OFF, BZ_KERNEL_SIZE);
    assert_int_equal(s.rip, 0x100200);
    test_vm_free(&vm);
}

static void expect_bz_refused(const uint8_t *img, size_t len, uint64_t ram, const char *cmdline)
{
    struct test_vm vm;
    struct cpu_state s;
    test_vm_init(&vm, ram);
    assert_true(load_image(img, len, &vm, cmdline, NULL, &s) < 0);
    test_vm_free(&vm);
}

static void test_bzimage_hostile(void **state)
{
    (void)state;
    static uint8_t img[BZ_KERNEL_OFF + BZ_KERNEL_SIZE];
    const size_t len = sizeof(img);

    make_bzimage(img); /* protocol 2.09 */
    st16(img + 0x206, 0x0209);
    expect_bz_refused(img, len, 64 * MB, NULL);

    make_bzimage(img); /* no 64-bit entry */
    st16(img + 0x236, 0);
    expect_bz_refused(img, len, 64 * MB, NULL);

    make_bzimage(img); /* zImage */
    img[0x211] = 0;
    expect_bz_refused(img, len, 64 * MB, NULL);

    make_bzimage(img); /* truncated in the header */
    expect_bz_refused(img, 0x240, 64 * MB, NULL);

    make_bzimage(img); /* setup sectors cover the whole file */
    img[0x1f1] = 200;
    expect_bz_refused(img, len, 64 * MB, NULL);

    make_bzimage(img); /* init_size larger than RAM */
    st32(img + 0x260, 0xf0000000);
    expect_bz_refused(img, len, 64 * MB, NULL);

    make_bzimage(img); /* pref_address absurd */
    st64(img + 0x258, UINT64_MAX - 0x1000);
    img[0x234] = 1;
    struct test_vm vm;
    struct cpu_state s;
    test_vm_init(&vm, 64 * MB);
    /* a relocatable kernel with a silly preference goes to 1 MiB, or is refused */
    int ret = load_image(img, len, &vm, NULL, NULL, &s);
    assert_true(ret == 0 || ret < 0);
    test_vm_free(&vm);

    make_bzimage(img); /* not enough RAM for pref + init_size */
    expect_bz_refused(img, len, 16 * MB, NULL);

    make_bzimage(img); /* command line longer than cmdline_size */
    st32(img + 0x238, 8);
    expect_bz_refused(img, len, 64 * MB, "console=ttyS0");
}

/* Random byte flips in the setup header: refused or loaded, never a crash. */
static void test_bzimage_mutations(void **state)
{
    (void)state;
    static uint8_t img[BZ_KERNEL_OFF + BZ_KERNEL_SIZE], m[BZ_KERNEL_OFF + BZ_KERNEL_SIZE];
    struct test_vm vm;
    struct cpu_state s;
    uint32_t rng = 777;
    make_bzimage(img);
    test_vm_init(&vm, 24 * MB);
    for (unsigned iter = 0; iter < 200; iter++) {
        memcpy(m, img, sizeof(m));
        for (unsigned k = 0; k < 3; k++) {
            rng = rng * 1103515245 + 12345;
            m[0x1f1 + (rng >> 8) % (0x270 - 0x1f1)] ^= (uint8_t)(rng >> 20);
        }
        rng = rng * 1103515245 + 12345;
        size_t len = (rng >> 8) % 8 == 0 ? (rng >> 12) % sizeof(m) : sizeof(m); /* sometimes truncated */
        (void)load_image(m, len, &vm, "console=ttyS0", NULL, &s);
    }
    test_vm_free(&vm);
}

static void test_kernel_file_errors(void **state)
{
    (void)state;
    struct test_vm vm;
    struct cpu_state s;
    test_vm_init(&vm, 16 * MB);
    struct boot_config bc = {.kernel = "/nonexistent/ember-kernel", .ram_size = 16 * MB, .nr_cpus = 1};
    assert_int_equal(boot_load_kernel(&bc, &vm.mem, &s), -ENOENT);
    bc.kernel = NULL;
    assert_true(boot_load_kernel(&bc, &vm.mem, &s) < 0);

    uint8_t junk[4096];
    memset(junk, 0x42, sizeof(junk));
    assert_int_equal(load_image(junk, sizeof(junk), &vm, NULL, NULL, &s), -ENOEXEC);
    assert_true(load_image(junk, 0, &vm, NULL, NULL, &s) < 0); /* empty file */

    struct pvh_elf64 f;
    make_pvh_elf64(&f);
    char *path = test_write_file(&f, sizeof(f));
    bc = (struct boot_config){.kernel = path, .initrd = "/nonexistent/initrd", .ram_size = 16 * MB};
    assert_int_equal(boot_load_kernel(&bc, &vm.mem, &s), -ENOENT);
    test_remove_file(path);
    test_vm_free(&vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e820_128m),
        cmocka_unit_test(test_e820_3g),
        cmocka_unit_test(test_e820_5g),
        cmocka_unit_test(test_e820_tiny),
        cmocka_unit_test(test_pvh_load),
        cmocka_unit_test(test_pvh_initrd),
        cmocka_unit_test(test_pvh_elf32),
        cmocka_unit_test(test_pvh_hostile),
        cmocka_unit_test(test_pvh_mutations),
        cmocka_unit_test(test_bzimage_load),
        cmocka_unit_test(test_bzimage_not_relocatable),
        cmocka_unit_test(test_bzimage_hostile),
        cmocka_unit_test(test_bzimage_mutations),
        cmocka_unit_test(test_kernel_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
