/* PVH boot: load an ELF kernel's PT_LOAD segments at their physical
 * addresses and enter it at the address in its XEN_ELFNOTE_PHYS32_ENTRY note,
 * in flat 32-bit protected mode with paging off and EBX pointing at a
 * struct hvm_start_info (Xen's public hvm/start_info.h, version 1). This is
 * how QEMU and Firecracker boot an uncompressed Linux vmlinux.
 *
 * The file is hostile: every header field is checked against the file size
 * and every destination against guest RAM before a byte is copied. */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "machine/boot_internal.h"
#include "machine/e820.h"
#include "machine/layout.h"

#define PVH_NOTE_PHYS32_ENTRY 18 /* XEN_ELFNOTE_PHYS32_ENTRY */
#define PVH_START_MAGIC 0x336ec578
#define PVH_MAX_PHDRS 256

/* Our placement of the start-of-day data inside the boot-params page. */
#define PVH_START_INFO_ADDR LAYOUT_BOOT_PARAMS
#define PVH_MODLIST_ADDR (LAYOUT_BOOT_PARAMS + 0x40)
#define PVH_MEMMAP_ADDR (LAYOUT_BOOT_PARAMS + 0x80)

/* The wire layouts, little endian, no padding (checked below). */
struct pvh_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct pvh_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
struct pvh_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
_Static_assert(sizeof(struct pvh_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct pvh_modlist_entry) == 32, "hvm_modlist_entry layout");
_Static_assert(sizeof(struct pvh_memmap_entry) == 24, "hvm_memmap_table_entry layout");
_Static_assert(PVH_MEMMAP_ADDR + E820_MAX_ENTRIES * sizeof(struct pvh_memmap_entry) <=
                   LAYOUT_BOOT_PARAMS + 0x1000, "PVH data fits its page");

/* A program header, class-neutral. */
struct pvh_phdr {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

struct pvh_elf {
    const struct boot_image *img;
    bool is64;
    uint64_t phoff;
    unsigned phnum, phentsize;
};

static int pvh_parse_ehdr(const struct boot_image *img, struct pvh_elf *elf)
{
    const uint8_t *d = img->data;
    if (img->size < EI_NIDENT || d[EI_DATA] != ELFDATA2LSB || d[EI_VERSION] != EV_CURRENT)
        return log_fail(-ENOEXEC, "-kernel %s: not a little-endian ELF file", img->path);

    elf->img = img;
    if (d[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        if (img->size < sizeof(eh))
            return log_fail(-ENOEXEC, "-kernel %s: truncated ELF header", img->path);
        memcpy(&eh, d, sizeof(eh));
        if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386)
            return log_fail(-ENOEXEC, "-kernel %s: ELF is not for x86 (machine %u)", img->path, eh.e_machine);
        elf->is64 = true;
        elf->phoff = eh.e_phoff;
        elf->phnum = eh.e_phnum;
        elf->phentsize = eh.e_phentsize;
        if (elf->phentsize < sizeof(Elf64_Phdr))
            return log_fail(-ENOEXEC, "-kernel %s: bad ELF program header size %u", img->path, elf->phentsize);
    } else if (d[EI_CLASS] == ELFCLASS32) {
        Elf32_Ehdr eh;
        if (img->size < sizeof(eh))
            return log_fail(-ENOEXEC, "-kernel %s: truncated ELF header", img->path);
        memcpy(&eh, d, sizeof(eh));
        if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
            return log_fail(-ENOEXEC, "-kernel %s: ELF is not for x86 (machine %u)", img->path, eh.e_machine);
        elf->is64 = false;
        elf->phoff = eh.e_phoff;
        elf->phnum = eh.e_phnum;
        elf->phentsize = eh.e_phentsize;
        if (elf->phentsize < sizeof(Elf32_Phdr))
            return log_fail(-ENOEXEC, "-kernel %s: bad ELF program header size %u", img->path, elf->phentsize);
    } else {
        return log_fail(-ENOEXEC, "-kernel %s: unknown ELF class %u", img->path, d[EI_CLASS]);
    }

    if (elf->phnum == 0 || elf->phnum > PVH_MAX_PHDRS)
        return log_fail(-ENOEXEC, "-kernel %s: ELF has %u program headers", img->path, elf->phnum);
    uint64_t table_end;
    if (add_overflows(elf->phoff, (uint64_t)elf->phnum * elf->phentsize, &table_end) ||
        table_end > img->size)
        return log_fail(-ENOEXEC, "-kernel %s: ELF program headers lie past the end of the file", img->path);
    return 0;
}

static void pvh_get_phdr(const struct pvh_elf *elf, unsigned i, struct pvh_phdr *ph)
{
    const uint8_t *p = elf->img->data + elf->phoff + (uint64_t)i * elf->phentsize;
    if (elf->is64) {
        Elf64_Phdr h;
        memcpy(&h, p, sizeof(h));
        *ph = (struct pvh_phdr){h.p_type, h.p_offset, h.p_paddr, h.p_filesz, h.p_memsz};
    } else {
        Elf32_Phdr h;
        memcpy(&h, p, sizeof(h));
        *ph = (struct pvh_phdr){h.p_type, h.p_offset, h.p_paddr, h.p_filesz, h.p_memsz};
    }
}

/* Is [offset, offset+len) inside the file? */
static bool pvh_in_file(const struct boot_image *img, uint64_t offset, uint64_t len)
{
    uint64_t end;
    return !add_overflows(offset, len, &end) && end <= img->size;
}

/* Look for the Xen PHYS32_ENTRY note in one PT_NOTE segment. Returns 1 and
 * sets *entry when found, 0 when not, negative on a malformed note. */
static int pvh_scan_notes(const struct boot_image *img, const struct pvh_phdr *ph, uint64_t *entry)
{
    if (!pvh_in_file(img, ph->offset, ph->filesz))
        return log_fail(-ENOEXEC, "-kernel %s: ELF note segment lies past the end of the file", img->path);
    const uint8_t *p = img->data + ph->offset;
    uint64_t left = ph->filesz;

    while (left >= 12) {
        uint32_t namesz = ld32(p), descsz = ld32(p + 4), type = ld32(p + 8);
        uint64_t name_len = ALIGN_UP((uint64_t)namesz, 4), desc_len = ALIGN_UP((uint64_t)descsz, 4);
        if (name_len > left - 12 || desc_len > left - 12 - name_len)
            return log_fail(-ENOEXEC, "-kernel %s: malformed ELF note", img->path);
        const uint8_t *name = p + 12, *desc = name + name_len;
        if (type == PVH_NOTE_PHYS32_ENTRY && namesz == 4 && memcmp(name, "Xen", 4) == 0) {
            if (descsz == 4)
                *entry = ld32(desc);
            else if (descsz == 8)
                *entry = ld64(desc);
            else
                return log_fail(-ENOEXEC, "-kernel %s: PVH entry note has %u-byte value", img->path, descsz);
            return 1;
        }
        p += 12 + name_len + desc_len;
        left -= 12 + name_len + desc_len;
    }
    return 0;
}

static int pvh_find_entry(const struct pvh_elf *elf, uint64_t *entry)
{
    for (unsigned i = 0; i < elf->phnum; i++) {
        struct pvh_phdr ph;
        pvh_get_phdr(elf, i, &ph);
        if (ph.type != PT_NOTE)
            continue;
        int found = pvh_scan_notes(elf->img, &ph, entry);
        if (found != 0)
            return found < 0 ? found : 0;
    }
    return log_fail(-ENOEXEC, "-kernel %s: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
                    "build Linux with CONFIG_PVH=y", elf->img->path);
}

/* Copy every PT_LOAD segment into guest RAM; *kernel_end is the highest
 * byte loaded + 1. Segments must lie in RAM between 1 MiB (below it are
 * our boot structures and the BIOS area) and the end of low RAM. */
static int pvh_load_segments(const struct pvh_elf *elf, const struct guest_mem *mem,
                             uint64_t low_end, uint64_t *kernel_end)
{
    const struct boot_image *img = elf->img;
    unsigned loaded = 0;
    *kernel_end = LAYOUT_BIOS_END;

    for (unsigned i = 0; i < elf->phnum; i++) {
        struct pvh_phdr ph;
        pvh_get_phdr(elf, i, &ph);
        if (ph.type != PT_LOAD || ph.memsz == 0)
            continue;
        uint64_t end;
        if (ph.filesz > ph.memsz || !pvh_in_file(img, ph.offset, ph.filesz))
            return log_fail(-ENOEXEC, "-kernel %s: ELF segment %u lies past the end of the file", img->path, i);
        if (ph.paddr < LAYOUT_BIOS_END || add_overflows(ph.paddr, ph.memsz, &end) || end > low_end)
            return log_fail(-ENOEXEC, "-kernel %s: ELF segment %u (0x%llx+0x%llx) is outside guest RAM "
                            "1 MiB..0x%llx", img->path, i, (unsigned long long)ph.paddr,
                            (unsigned long long)ph.memsz, (unsigned long long)low_end);
        uint8_t *dst = guest_mem_ptr(mem, ph.paddr, ph.memsz);
        if (!dst)
            return log_fail(-EFAULT, "-kernel %s: ELF segment %u (0x%llx+0x%llx) is not in guest RAM",
                            img->path, i, (unsigned long long)ph.paddr, (unsigned long long)ph.memsz);
        memcpy(dst, img->data + ph.offset, ph.filesz);
        memset(dst + ph.filesz, 0, ph.memsz - ph.filesz);
        *kernel_end = MAX(*kernel_end, end);
        loaded++;
    }
    if (!loaded)
        return log_fail(-ENOEXEC, "-kernel %s: ELF has no loadable segment", img->path);
    return 0;
}

static int pvh_write_start_info(const struct guest_mem *mem, uint64_t ram_size,
                                uint64_t initrd_addr, uint64_t initrd_size)
{
    struct e820_entry map[E820_MAX_ENTRIES];
    unsigned n = e820_build(ram_size, map);
    struct pvh_memmap_entry memmap[E820_MAX_ENTRIES] = {0};
    for (unsigned i = 0; i < n; i++)
        memmap[i] = (struct pvh_memmap_entry){map[i].addr, map[i].size, map[i].type, 0};

    struct pvh_modlist_entry mod = {.paddr = initrd_addr, .size = initrd_size};
    struct pvh_start_info si = {
        .magic = PVH_START_MAGIC,
        .version = 1,
        .nr_modules = initrd_size ? 1 : 0,
        .modlist_paddr = initrd_size ? PVH_MODLIST_ADDR : 0,
        .cmdline_paddr = LAYOUT_BOOT_CMDLINE,
        .rsdp_paddr = LAYOUT_ACPI_BASE, /* firmware_build_tables() puts the RSDP there */
        .memmap_paddr = PVH_MEMMAP_ADDR,
        .memmap_entries = n,
    };
    uint8_t page[0x1000] = {0};
    memcpy(page, &si, sizeof(si));
    memcpy(page + (PVH_MODLIST_ADDR - PVH_START_INFO_ADDR), &mod, sizeof(mod));
    memcpy(page + (PVH_MEMMAP_ADDR - PVH_START_INFO_ADDR), memmap, n * sizeof(memmap[0]));
    if (guest_mem_write(mem, PVH_START_INFO_ADDR, page, sizeof(page)))
        return log_fail(-EFAULT, "boot: guest RAM does not cover the PVH start info at 0x%llx",
                        (unsigned long long)PVH_START_INFO_ADDR);
    return 0;
}

int boot_load_pvh(const struct boot_config *bc, const struct boot_image *kernel,
                  const struct guest_mem *mem, struct cpu_state *bsp)
{
    uint64_t low_end = e820_low_ram_end(bc->ram_size);
    struct pvh_elf elf = {0}; /* zeroed: -O3 cannot see that a failed parse returns */
    uint64_t entry = 0, kernel_end = 0, initrd_addr = 0, initrd_size = 0;
    int ret = pvh_parse_ehdr(kernel, &elf);
    if (ret < 0)
        return ret;
    ret = pvh_find_entry(&elf, &entry);
    if (ret < 0)
        return ret;
    if (!guest_mem_is_ram(mem, entry, 1) || entry >= low_end)
        return log_fail(-ENOEXEC, "-kernel %s: PVH entry 0x%llx is outside guest RAM", kernel->path,
                        (unsigned long long)entry);
    ret = pvh_load_segments(&elf, mem, low_end, &kernel_end);
    if (ret < 0)
        return ret;
    ret = boot_write_cmdline(bc, mem, BOOT_CMDLINE_MAX - 1);
    if (ret < 0)
        return ret;
    ret = boot_load_initrd(bc, mem, ALIGN_UP(kernel_end, 4096), low_end, &initrd_addr, &initrd_size);
    if (ret < 0)
        return ret;
    ret = pvh_write_start_info(mem, bc->ram_size, initrd_addr, initrd_size);
    if (ret < 0)
        return ret;
    ret = boot_setup_segments(mem, bsp, false);
    if (ret < 0)
        return ret;

    bsp->rip = entry;
    bsp->rbx = PVH_START_INFO_ADDR;
    bsp->cr0 = 0x11; /* PE | ET: protected mode, paging off */
    bsp->efer = 0;
    log_debug("-kernel %s: PVH entry 0x%llx, kernel ends 0x%llx, initrd 0x%llx+0x%llx", kernel->path,
              (unsigned long long)entry, (unsigned long long)kernel_end,
              (unsigned long long)initrd_addr, (unsigned long long)initrd_size);
    return 0;
}
