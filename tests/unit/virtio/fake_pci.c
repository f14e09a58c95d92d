#include "fake_pci.h"

#include "core/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- PCI ---- */

bool fake_pci_fail_add_bar;

struct pci_bus *fake_pci_bus_new(void)
{
    return xzalloc(sizeof(struct pci_bus));
}

void fake_pci_bus_free(struct pci_bus *b)
{
    for (unsigned i = 0; i < b->n; i++)
        free(b->devs[i]);
    free(b);
}

struct pci_device *pci_device_new(struct pci_bus *b, const char *name,
                                  const struct pci_device_id *id,
                                  const struct pci_device_ops *ops, void *opaque)
{
    if (b->n >= PCI_MAX_SLOTS - 1)
        return NULL;
    struct pci_device *d = xzalloc(sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->id = *id;
    d->ops = ops;
    d->opaque = opaque;
    st16(d->config + 0, id->vendor);
    st16(d->config + 2, id->device);
    d->config[8] = id->revision;
    d->config[0xb] = id->class_base;
    d->config[0xa] = id->class_sub;
    d->config[9] = id->class_prog_if;
    st16(d->config + 0x2c, id->subsystem_vendor);
    st16(d->config + 0x2e, id->subsystem);
    d->config[6] = 0x10; /* capability list */
    d->next_cap_off = 0x40;
    b->devs[b->n++] = d;
    return d;
}

unsigned pci_device_slot(const struct pci_device *d) { return 1; }
const char *pci_device_name(const struct pci_device *d) { return d->name; }

int pci_device_add_bar(struct pci_device *d, unsigned n, enum pci_bar_kind kind, uint64_t size,
                       const struct bus_ops *ops, void *opaque)
{
    if (n >= PCI_NUM_BARS || (kind == PCI_BAR_MEM64 && n + 1 >= PCI_NUM_BARS) || !ops ||
        fake_pci_fail_add_bar)
        return -EINVAL;
    d->bars[n] = (struct fake_bar){ops, opaque, size, 0xC0000000ULL + n * 0x100000ULL, kind, true};
    return 0;
}

uint64_t pci_device_bar_addr(const struct pci_device *d, unsigned n)
{
    return n < PCI_NUM_BARS && d->bars[n].present ? d->bars[n].addr : 0;
}

unsigned pci_device_add_capability(struct pci_device *d, const void *data, size_t len)
{
    unsigned off = ALIGN_UP(d->next_cap_off, 4);
    if (len < 2 || off + len > 256)
        return 0;
    memcpy(d->config + off, data, len);
    d->config[off + 1] = 0;
    if (d->last_cap)
        d->config[d->last_cap + 1] = (uint8_t)off;
    else
        d->config[0x34] = (uint8_t)off;
    d->last_cap = off;
    d->next_cap_off = off + (unsigned)len;
    return off;
}

uint8_t *pci_device_config(struct pci_device *d) { return d->config; }

int pci_device_init_msix(struct pci_device *d, unsigned nr_vectors, unsigned bar,
                         uint64_t table_offset, uint64_t pba_offset)
{
    uint8_t cap[12] = {0x11, 0};
    if (bar >= PCI_NUM_BARS || !d->bars[bar].present || nr_vectors == 0 || nr_vectors > 256 ||
        table_offset + nr_vectors * 16 > d->bars[bar].size ||
        pba_offset + (nr_vectors + 63) / 64 * 8 > d->bars[bar].size)
        return -EINVAL;
    st16(cap + 2, (uint16_t)(nr_vectors - 1));
    st32(cap + 4, (uint32_t)table_offset | bar);
    st32(cap + 8, (uint32_t)pba_offset | bar);
    if (!pci_device_add_capability(d, cap, sizeof(cap)))
        return -ENOSPC;
    d->msix_vectors = nr_vectors;
    d->msix_bar = bar;
    d->msix_table = table_offset;
    d->msix_pba = pba_offset;
    return 0;
}

bool pci_msix_enabled(const struct pci_device *d) { return d->msix_enabled; }

void pci_msix_notify(struct pci_device *d, unsigned vector)
{
    if (vector < d->msix_vectors)
        d->msix_count[vector]++;
}

void pci_set_intx(struct pci_device *d, bool level)
{
    if (level && !d->intx)
        d->intx_raises++;
    d->intx = level;
}

uint32_t fake_pci_config_read(struct pci_device *d, unsigned off, unsigned size)
{
    uint32_t v = 0;
    if (d->ops->config_read && d->ops->config_read(d->opaque, off, size, &v))
        return v;
    for (unsigned i = 0; i < size; i++)
        v |= (uint32_t)d->config[off + i] << (8 * i);
    return v;
}

void fake_pci_config_write(struct pci_device *d, unsigned off, uint32_t val, unsigned size)
{
    for (unsigned i = 0; i < size; i++)
        if (off + i >= 0x40 && off + i < PCI_CONFIG_SPACE_SIZE)
            d->config[off + i] = (uint8_t)(val >> (8 * i));
    if (d->ops->config_write)
        d->ops->config_write(d->opaque, off, val, size);
}
