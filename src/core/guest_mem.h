/* Guest-physical memory: the one place that turns a guest address into a
 * host pointer. Devices never do pointer arithmetic on guest addresses; they
 * ask for a bounds-checked view of [gpa, gpa+len) that lies entirely inside
 * one RAM region, and treat NULL as a guest error. */
#ifndef EMBER_CORE_GUEST_MEM_H
#define EMBER_CORE_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 8

struct guest_mem_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;
};

struct guest_mem {
    struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
    unsigned nr_regions;
    uint64_t ram_size; /* sum of region sizes */
    /* Optional: told about writes that bypass the vCPUs (DMA, loaders), so a
     * software CPU can drop instructions it decoded from those bytes. */
    void (*write_hook)(void *opaque, uint64_t gpa, uint64_t len);
    void *write_hook_opaque;
};

/* Add a region (regions must not overlap). Returns 0 or -EINVAL/-ENOSPC. */
int guest_mem_add(struct guest_mem *m, uint64_t gpa, uint64_t size, void *host);
/* Host pointer for [gpa, gpa+len) or NULL if any byte is outside RAM or the
 * range straddles two regions. len 0 is allowed if gpa is inside RAM. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
bool guest_mem_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copy helpers: 0 or -EFAULT when the range is not RAM. */
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len);
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len);
/* A device wrote [host, host+len) (a pointer guest_mem_ptr() returned):
 * passes it on to write_hook. */
void guest_mem_note_host_write(const struct guest_mem *m, const void *host, size_t len);

#endif
