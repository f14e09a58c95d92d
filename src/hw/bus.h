/* Port-I/O and MMIO dispatch. Devices register address ranges with
 * read/write callbacks; an exit (KVM) or an access (software CPU) is one
 * lookup. Lookups run concurrently from every vCPU thread under a read lock;
 * registration (PCI BAR moves) takes the write lock. Callbacks are called
 * without the bus lock held for writers, so a device may move its own BARs
 * from a config-space write. Devices serialize their own state. */
#ifndef EMBER_HW_BUS_H
#define EMBER_HW_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct bus_ops {
    /* offset is relative to the registered base; size is 1, 2, 4 or 8. */
    uint64_t (*read)(void *opaque, uint64_t offset, unsigned size);
    void (*write)(void *opaque, uint64_t offset, uint64_t value, unsigned size);
};

struct bus;

struct bus *bus_new(const char *name); /* "pio" or "mmio", used in messages */
void bus_free(struct bus *bus);

/* Fails with -EEXIST (and a message naming both devices) on overlap. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                 void *opaque, const char *name);
/* Remove the range registered at exactly base for opaque; -ENOENT if none. */
int bus_unregister(struct bus *bus, uint64_t base, void *opaque);

/* Dispatch an access. Unclaimed reads return all-ones, unclaimed writes are
 * dropped (as on real hardware); the return value says whether a device
 * claimed it. Accesses crossing the end of a range are split per byte. */
bool bus_read(struct bus *bus, uint64_t addr, void *data, unsigned size);
bool bus_write(struct bus *bus, uint64_t addr, const void *data, unsigned size);

#endif
