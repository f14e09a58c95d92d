#include "guest_mem.h"

#include <errno.h>
#include <string.h>

int guest_mem_add(struct guest_mem *m, uint64_t gpa, uint64_t size, void *host)
{
    uint64_t end;
    if (!size || __builtin_add_overflow(gpa, size, &end))
        return -EINVAL;
    if (m->nr_regions >= GUEST_MEM_MAX_REGIONS)
        return -ENOSPC;
    for (unsigned i = 0; i < m->nr_regions; i++) {
        const struct guest_mem_region *r = &m->regions[i];
        if (gpa < r->gpa + r->size && r->gpa < end)
            return -EINVAL;
    }
    m->regions[m->nr_regions++] = (struct guest_mem_region){gpa, size, host};
    m->ram_size += size;
    return 0;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < m->nr_regions; i++) {
        const struct guest_mem_region *r = &m->regions[i];
        /* Written to avoid overflow: offset and len are compared to what is left. */
        if (gpa >= r->gpa && gpa - r->gpa < r->size) {
            uint64_t off = gpa - r->gpa;
            if (len > r->size - off)
                return NULL;
            return r->host + off;
        }
    }
    return NULL;
}

bool guest_mem_is_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    return guest_mem_ptr(m, gpa, len) != NULL;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *buf, size_t len)
{
    const void *p = guest_mem_ptr(m, gpa, len);
    if (!p)
        return -EFAULT;
    memcpy(buf, p, len);
    return 0;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *buf, size_t len)
{
    void *p = guest_mem_ptr(m, gpa, len);
    if (!p)
        return -EFAULT;
    memcpy(p, buf, len);
    if (m->write_hook)
        m->write_hook(m->write_hook_opaque, gpa, len);
    return 0;
}

void guest_mem_note_host_write(const struct guest_mem *m, const void *host, size_t len)
{
    if (!m->write_hook || !len)
        return;
    const uint8_t *h = host;
    for (unsigned i = 0; i < m->nr_regions; i++) {
        const struct guest_mem_region *r = &m->regions[i];
        if (h >= r->host && (uint64_t)(h - r->host) < r->size) {
            m->write_hook(m->write_hook_opaque, r->gpa + (uint64_t)(h - r->host), len);
            return;
        }
    }
}
