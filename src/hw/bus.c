#include "bus.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct bus_range {
    uint64_t base, len;
    const struct bus_ops *ops;
    void *opaque;
    const char *name;
};

struct bus {
    const char *name;
    pthread_rwlock_t lock;
    struct bus_range *ranges; /* sorted by base, non-overlapping */
    unsigned nr, cap;
};

struct bus *bus_new(const char *name)
{
    struct bus *bus = xzalloc(sizeof(*bus));
    bus->name = name;
    pthread_rwlock_init(&bus->lock, NULL);
    return bus;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    pthread_rwlock_destroy(&bus->lock);
    free(bus->ranges);
    free(bus);
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                 void *opaque, const char *name)
{
    uint64_t end;
    if (!len || add_overflows(base, len, &end))
        return log_fail(-EINVAL, "%s: bad %s range 0x%llx+0x%llx", name, bus->name,
                        (unsigned long long)base, (unsigned long long)len);
    pthread_rwlock_wrlock(&bus->lock);
    unsigned pos = 0;
    while (pos < bus->nr && bus->ranges[pos].base < base)
        pos++;
    const struct bus_range *prev = pos ? &bus->ranges[pos - 1] : NULL;
    const struct bus_range *next = pos < bus->nr ? &bus->ranges[pos] : NULL;
    const struct bus_range *clash = NULL;
    if (prev && prev->base + prev->len > base)
        clash = prev;
    else if (next && next->base < end)
        clash = next;
    if (clash) {
        pthread_rwlock_unlock(&bus->lock);
        return log_fail(-EEXIST, "%s: %s range 0x%llx+0x%llx overlaps %s", name, bus->name,
                        (unsigned long long)base, (unsigned long long)len, clash->name);
    }
    if (bus->nr == bus->cap) {
        bus->cap = bus->cap ? bus->cap * 2 : 16;
        bus->ranges = xrealloc(bus->ranges, bus->cap * sizeof(*bus->ranges));
    }
    memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->nr - pos) * sizeof(*bus->ranges));
    bus->ranges[pos] = (struct bus_range){base, len, ops, opaque, name};
    bus->nr++;
    pthread_rwlock_unlock(&bus->lock);
    return 0;
}

int bus_unregister(struct bus *bus, uint64_t base, void *opaque)
{
    int ret = -ENOENT;
    pthread_rwlock_wrlock(&bus->lock);
    for (unsigned i = 0; i < bus->nr; i++) {
        if (bus->ranges[i].base == base && bus->ranges[i].opaque == opaque) {
            memmove(&bus->ranges[i], &bus->ranges[i + 1], (bus->nr - i - 1) * sizeof(*bus->ranges));
            bus->nr--;
            ret = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    return ret;
}

/* Binary search; caller holds the read lock. */
static const struct bus_range *find_range(const struct bus *bus, uint64_t addr)
{
    unsigned lo = 0, hi = bus->nr;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        const struct bus_range *r = &bus->ranges[mid];
        if (addr < r->base)
            hi = mid;
        else if (addr - r->base >= r->len)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

/* Copy the range out so the callback runs without the lock held: a config
 * write may re-register BARs, which needs the write lock. */
static bool lookup(struct bus *bus, uint64_t addr, unsigned size, struct bus_range *out)
{
    pthread_rwlock_rdlock(&bus->lock);
    const struct bus_range *r = find_range(bus, addr);
    bool whole = r && size <= r->len - (addr - r->base);
    if (r)
        *out = *r;
    pthread_rwlock_unlock(&bus->lock);
    return r && whole;
}

bool bus_read(struct bus *bus, uint64_t addr, void *data, unsigned size)
{
    struct bus_range r;
    if (size == 0 || size > 8) {
        memset(data, 0xff, size);
        return false;
    }
    if (lookup(bus, addr, size, &r)) {
        uint64_t v = r.ops->read ? r.ops->read(r.opaque, addr - r.base, size) : ~0ULL;
        memcpy(data, &v, size);
        return true;
    }
    if (size == 1) {
        memset(data, 0xff, 1);
        return false;
    }
    /* Straddles a boundary or is unclaimed: fall back to byte accesses. */
    bool any = false;
    for (unsigned i = 0; i < size; i++)
        any |= bus_read(bus, addr + i, (uint8_t *)data + i, 1);
    return any;
}

bool bus_write(struct bus *bus, uint64_t addr, const void *data, unsigned size)
{
    struct bus_range r;
    if (size == 0 || size > 8)
        return false;
    if (lookup(bus, addr, size, &r)) {
        uint64_t v = 0;
        memcpy(&v, data, size);
        if (r.ops->write)
            r.ops->write(r.opaque, addr - r.base, v, size);
        return true;
    }
    if (size == 1)
        return false;
    bool any = false;
    for (unsigned i = 0; i < size; i++)
        any |= bus_write(bus, addr + i, (const uint8_t *)data + i, 1);
    return any;
}
