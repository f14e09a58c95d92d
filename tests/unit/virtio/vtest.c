#include "vtest.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

void vt_init(struct vtest *t)
{
    memset(t, 0, sizeof(*t));
    t->ram = aligned_alloc(4096, VT_RAM_SIZE);
    memset(t->ram, 0, VT_RAM_SIZE);
    guest_mem_add(&t->mem, VT_RAM_BASE, VT_RAM_SIZE, t->ram);
    t->bus = fake_pci_bus_new();
    t->env.pci = t->bus;
    t->env.mem = &t->mem;
    t->next_alloc = VT_RAM_BASE + 0x1000;
}

void vt_attach(struct vtest *t, struct virtio_dev *vdev)
{
    t->vdev = vdev;
    t->pdev = virtio_dev_pci(vdev);
}

void vt_fini(struct vtest *t)
{
    virtio_dev_free(t->vdev);
    fake_pci_bus_free(t->bus);
    free(t->ram);
}

void *vt_gptr(struct vtest *t, uint64_t gpa)
{
    return t->ram + (gpa - VT_RAM_BASE);
}

uint64_t vt_alloc(struct vtest *t, uint64_t len, uint64_t align)
{
    uint64_t a = ALIGN_UP(t->next_alloc, align);
    t->next_alloc = a + len;
    return a;
}

uint64_t vt_read(struct vtest *t, uint64_t off, unsigned size)
{
    struct fake_bar *b = &t->pdev->bars[VIRTIO_PCI_BAR];
    return b->ops->read(b->opaque, off, size);
}

void vt_write(struct vtest *t, uint64_t off, uint64_t val, unsigned size)
{
    struct fake_bar *b = &t->pdev->bars[VIRTIO_PCI_BAR];
    b->ops->write(b->opaque, off, val, size);
}

uint8_t vt_status(struct vtest *t)
{
    return (uint8_t)vt_read(t, VIRTIO_PCI_COMMON_STATUS, 1);
}

uint64_t vt_device_features(struct vtest *t)
{
    vt_write(t, VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
    uint64_t lo = vt_read(t, VIRTIO_PCI_COMMON_DF, 4);
    vt_write(t, VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
    uint64_t hi = vt_read(t, VIRTIO_PCI_COMMON_DF, 4);
    return lo | hi << 32;
}

uint8_t vt_negotiate(struct vtest *t, uint64_t features)
{
    vt_write(t, VIRTIO_PCI_COMMON_STATUS, 0, 1);
    vt_write(t, VIRTIO_PCI_COMMON_STATUS, VIRTIO_STATUS_ACKNOWLEDGE, 1);
    vt_write(t, VIRTIO_PCI_COMMON_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
    vt_write(t, VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
    vt_write(t, VIRTIO_PCI_COMMON_GF, (uint32_t)features, 4);
    vt_write(t, VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
    vt_write(t, VIRTIO_PCI_COMMON_GF, (uint32_t)(features >> 32), 4);
    vt_write(t, VIRTIO_PCI_COMMON_STATUS,
             VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK, 1);
    return vt_status(t);
}

void vt_ring_init(struct vtest *t, struct vt_ring *r, unsigned q, uint16_t size)
{
    memset(r, 0, sizeof(*r));
    r->q = q;
    r->size = size;
    r->desc = vt_alloc(t, 16ULL * size, 16);
    r->avail = vt_alloc(t, 6 + 2ULL * size, 2);
    r->used = vt_alloc(t, 6 + 8ULL * size, 4);
    vt_write(t, VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
    vt_write(t, VIRTIO_PCI_COMMON_Q_SIZE, size, 2);
    vt_write(t, VIRTIO_PCI_COMMON_Q_DESCLO, (uint32_t)r->desc, 4);
    vt_write(t, VIRTIO_PCI_COMMON_Q_DESCHI, r->desc >> 32, 4);
    vt_write(t, VIRTIO_PCI_COMMON_Q_AVAILLO, r->avail, 8);
    vt_write(t, VIRTIO_PCI_COMMON_Q_USEDLO, (uint32_t)r->used, 4);
    vt_write(t, VIRTIO_PCI_COMMON_Q_USEDHI, r->used >> 32, 4);
    vt_write(t, VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
}

void vt_driver_ok(struct vtest *t)
{
    vt_write(t, VIRTIO_PCI_COMMON_STATUS, vt_status(t) | VIRTIO_STATUS_DRIVER_OK, 1);
}

void vt_notify(struct vtest *t, unsigned q)
{
    vt_write(t, VIRTIO_PCI_NOTIFY_OFF + q * VIRTIO_PCI_NOTIFY_MULT, q, 2);
}

void vt_put_desc(struct vtest *t, uint64_t table, uint16_t idx, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next)
{
    uint8_t *p = vt_gptr(t, table + 16ULL * idx);
    st64(p, addr);
    st32(p + 8, len);
    st16(p + 12, flags);
    st16(p + 14, next);
}

void vt_set_desc(struct vtest *t, struct vt_ring *r, uint16_t idx, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next)
{
    vt_put_desc(t, r->desc, idx, addr, len, flags, next);
}

uint16_t vt_ld16(struct vtest *t, uint64_t gpa) { return ld16(vt_gptr(t, gpa)); }
void vt_st16(struct vtest *t, uint64_t gpa, uint16_t v) { st16(vt_gptr(t, gpa), v); }

void vt_publish(struct vtest *t, struct vt_ring *r, uint16_t head)
{
    vt_st16(t, r->avail + 4 + 2ULL * (r->avail_idx % r->size), head);
    r->avail_idx++;
    vt_st16(t, r->avail + 2, r->avail_idx);
}

uint16_t vt_used_idx(struct vtest *t, struct vt_ring *r)
{
    return vt_ld16(t, r->used + 2);
}

void vt_used_elem(struct vtest *t, struct vt_ring *r, uint16_t i, uint32_t *id, uint32_t *len)
{
    const uint8_t *p = vt_gptr(t, r->used + 4 + 8ULL * (i % r->size));
    *id = ld32(p);
    *len = ld32(p + 4);
}
