/* Kernel loading entry point: reads the kernel file, picks the loader by
 * format, and holds the pieces both loaders share (GDT/segments, command
 * line, initrd placement). */
#include "machine/boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "machine/boot_internal.h"
#include "machine/e820.h"
#include "machine/layout.h"

/* Encode a legacy segment descriptor (Intel SDM vol. 3, 3.4.5). */
static uint64_t gdt_entry(uint32_t base, uint32_t limit, uint16_t flags)
{
    /* flags: bits 0-7 = access byte, bits 12-15 = G, D/B, L, AVL */
    return ((uint64_t)(base & 0xff000000) << 32) | ((uint64_t)(flags & 0xf0ff) << 40) |
           ((uint64_t)(limit & 0x000f0000) << 32) | ((uint64_t)(base & 0x00ffffff) << 16) |
           (limit & 0xffff);
}

static struct cpu_segment flat_segment(uint16_t selector, uint8_t type, bool code64)
{
    return (struct cpu_segment){
        .base = 0,
        .limit = 0xffffffff,
        .selector = selector,
        .type = type,
        .s = 1,
        .present = 1,
        .l = code64,
        .db = !code64,
        .g = 1,
    };
}

int boot_setup_segments(const struct guest_mem *mem, struct cpu_state *bsp, bool long_mode)
{
    uint64_t gdt[BOOT_GDT_ENTRIES] = {0};
    gdt[BOOT_SEL_CODE / 8] = gdt_entry(0, 0xfffff, long_mode ? 0xa09b : 0xc09b);
    gdt[BOOT_SEL_DATA / 8] = gdt_entry(0, 0xfffff, 0xc093);
    /* A busy TSS: VM entry insists on a usable TR even though nothing
     * switches tasks before the kernel loads its own. In long mode the
     * descriptor is 16 bytes; the upper half (base 63:32) stays zero. */
    gdt[BOOT_SEL_TSS / 8] = gdt_entry(BOOT_TSS_ADDR, BOOT_TSS_SIZE - 1, 0x008b);

    static const uint8_t zero_tss[BOOT_TSS_SIZE];
    if (guest_mem_write(mem, LAYOUT_BOOT_GDT, gdt, sizeof(gdt)) ||
        guest_mem_write(mem, BOOT_TSS_ADDR, zero_tss, sizeof(zero_tss)))
        return log_fail(-EFAULT, "boot: guest RAM does not cover the boot GDT at 0x%llx",
                        (unsigned long long)LAYOUT_BOOT_GDT);

    bsp->cs = flat_segment(BOOT_SEL_CODE, 0xb, long_mode);
    bsp->ds = flat_segment(BOOT_SEL_DATA, 0x3, false);
    bsp->es = bsp->ds;
    bsp->fs = bsp->ds;
    bsp->gs = bsp->ds;
    bsp->ss = bsp->ds;
    bsp->tr = (struct cpu_segment){
        .base = BOOT_TSS_ADDR,
        .limit = BOOT_TSS_SIZE - 1,
        .selector = BOOT_SEL_TSS,
        .type = 0xb,
        .present = 1,
    };
    bsp->ldt = (struct cpu_segment){.type = 0x2, .unusable = 1};
    bsp->gdt = (struct cpu_dtable){.base = LAYOUT_BOOT_GDT, .limit = sizeof(gdt) - 1};
    bsp->idt = (struct cpu_dtable){.base = 0, .limit = 0};
    bsp->rflags = 0x2;
    return 0;
}

int boot_write_cmdline(const struct boot_config *bc, const struct guest_mem *mem, uint64_t max_len)
{
    const char *cmdline = bc->cmdline ? bc->cmdline : "";
    size_t len = strlen(cmdline);
    max_len = MIN(max_len, BOOT_CMDLINE_MAX - 1);
    if (len > max_len)
        return log_fail(-E2BIG, "-append: kernel command line is %zu bytes, the kernel %s accepts %llu",
                        len, bc->kernel, (unsigned long long)max_len);
    if (guest_mem_write(mem, LAYOUT_BOOT_CMDLINE, cmdline, len + 1))
        return log_fail(-EFAULT, "-append: guest RAM does not cover the command line at 0x%llx",
                        (unsigned long long)LAYOUT_BOOT_CMDLINE);
    return 0;
}

int boot_load_initrd(const struct boot_config *bc, const struct guest_mem *mem, uint64_t floor,
                     uint64_t limit, uint64_t *addr, uint64_t *size)
{
    *addr = 0;
    *size = 0;
    if (!bc->initrd)
        return 0;

    int fd = open(bc->initrd, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return log_fail(-errno, "-initrd %s: %s", bc->initrd, strerror(errno));
    struct stat st;
    int ret = 0;
    if (fstat(fd, &st) < 0) {
        ret = log_fail(-errno, "-initrd %s: %s", bc->initrd, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
        ret = log_fail(-EINVAL, "-initrd %s: not a regular, non-empty file", bc->initrd);
        goto out;
    }
    uint64_t len = (uint64_t)st.st_size;
    if (len > limit || ALIGN_DOWN(limit - len, 4096) < floor) {
        ret = log_fail(-ENOMEM, "-initrd %s: %llu bytes do not fit in guest RAM between 0x%llx and 0x%llx",
                       bc->initrd, (unsigned long long)len, (unsigned long long)floor,
                       (unsigned long long)limit);
        goto out;
    }
    uint64_t gpa = ALIGN_DOWN(limit - len, 4096);
    void *dst = guest_mem_ptr(mem, gpa, len);
    if (!dst) {
        ret = log_fail(-EFAULT, "-initrd %s: guest RAM does not cover 0x%llx..0x%llx", bc->initrd,
                       (unsigned long long)gpa, (unsigned long long)(gpa + len));
        goto out;
    }
    ret = pread_full(fd, dst, len, 0);
    if (ret < 0) {
        log_error("-initrd %s: read failed: %s", bc->initrd, strerror(-ret));
        goto out;
    }
    *addr = gpa;
    *size = len;
out:
    close(fd);
    return ret;
}

static int boot_read_kernel(const char *path, struct boot_image *img)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return log_fail(-errno, "-kernel %s: %s", path, strerror(errno));
    struct stat st;
    int ret = 0;
    if (fstat(fd, &st) < 0) {
        ret = log_fail(-errno, "-kernel %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > BOOT_KERNEL_MAX_SIZE) {
        ret = log_fail(-EINVAL, "-kernel %s: not a regular file of 1 byte to %llu MiB", path,
                       BOOT_KERNEL_MAX_SIZE >> 20);
        goto out;
    }
    img->path = path;
    img->size = (size_t)st.st_size;
    img->data = xmalloc(img->size);
    ret = pread_full(fd, img->data, img->size, 0);
    if (ret < 0) {
        log_error("-kernel %s: read failed: %s", path, strerror(-ret));
        free(img->data);
        img->data = NULL;
    }
out:
    close(fd);
    return ret;
}

static bool image_is_elf(const struct boot_image *img)
{
    return img->size >= 4 && memcmp(img->data, "\177ELF", 4) == 0;
}

static bool image_is_bzimage(const struct boot_image *img)
{
    return img->size >= 0x206 && memcmp(img->data + 0x202, "HdrS", 4) == 0;
}

bool boot_kernel_is_bzimage(const char *path)
{
    uint8_t head[0x206];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int ret = pread_full(fd, head, sizeof(head), 0);
    close(fd);
    struct boot_image img = {.path = path, .data = head, .size = sizeof(head)};
    return ret >= 0 && image_is_bzimage(&img);
}

int boot_load_kernel(const struct boot_config *bc, const struct guest_mem *mem, struct cpu_state *bsp)
{
    if (!bc->kernel)
        return log_fail(-EINVAL, "boot: no kernel given (-kernel)");
    /* The loaders put their structures below 1 MiB and the kernel above it. */
    if (bc->ram_size < 2 * MiB || !guest_mem_is_ram(mem, 0, e820_low_ram_end(bc->ram_size)))
        return log_fail(-EINVAL, "-kernel %s: needs at least 2 MiB of guest RAM mapped from 0",
                        bc->kernel);

    struct boot_image img = {0};
    int ret = boot_read_kernel(bc->kernel, &img);
    if (ret < 0)
        return ret;

    memset(bsp, 0, sizeof(*bsp));
    if (image_is_elf(&img))
        ret = boot_load_pvh(bc, &img, mem, bsp);
    else if (image_is_bzimage(&img))
        ret = boot_load_bzimage(bc, &img, mem, bsp);
    else
        ret = log_fail(-ENOEXEC, "-kernel %s: neither a Linux bzImage nor an ELF (PVH) kernel",
                       bc->kernel);
    free(img.data);
    return ret;
}
