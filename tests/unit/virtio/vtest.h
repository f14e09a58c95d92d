/* A tiny virtio driver for the unit tests: guest RAM in a malloc'd buffer,
 * register access through the device's BAR callbacks, split rings built by
 * hand in that RAM. */
#ifndef EMBER_TESTS_VIRTIO_VTEST_H
#define EMBER_TESTS_VIRTIO_VTEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/guest_mem.h"
#include "fake_pci.h"
#include "hw/virtio/virtio.h"
#include "hw/virtio/virtio_pci.h"

#define VT_RAM_BASE 0x100000ULL
#define VT_RAM_SIZE (1024 * 1024ULL)

struct vt_ring {
    unsigned q;
    uint16_t size;
    uint64_t desc, avail, used;
    uint16_t avail_idx, last_used;
};

struct vtest {
    uint8_t *ram;
    struct guest_mem mem;
    struct pci_bus *bus;
    struct virtio_env env;
    struct virtio_dev *vdev;
    struct pci_device *pdev;
    uint64_t next_alloc; /* bump allocator for guest buffers */
};

void vt_init(struct vtest *t);
/* Call after creating t->vdev. */
void vt_attach(struct vtest *t, struct virtio_dev *vdev);
void vt_fini(struct vtest *t);

void *vt_gptr(struct vtest *t, uint64_t gpa);
uint64_t vt_alloc(struct vtest *t, uint64_t len, uint64_t align);

uint64_t vt_read(struct vtest *t, uint64_t off, unsigned size);
void vt_write(struct vtest *t, uint64_t off, uint64_t val, unsigned size);
uint8_t vt_status(struct vtest *t);
/* ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back. */
uint8_t vt_negotiate(struct vtest *t, uint64_t features);
uint64_t vt_device_features(struct vtest *t);
/* Allocate and register queue q with the given size; enable it. */
void vt_ring_init(struct vtest *t, struct vt_ring *r, unsigned q, uint16_t size);
void vt_driver_ok(struct vtest *t);
void vt_notify(struct vtest *t, unsigned q);

void vt_set_desc(struct vtest *t, struct vt_ring *r, uint16_t idx, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next);
/* Write a descriptor into an arbitrary table (indirect). */
void vt_put_desc(struct vtest *t, uint64_t table, uint16_t idx, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next);
void vt_publish(struct vtest *t, struct vt_ring *r, uint16_t head);
uint16_t vt_used_idx(struct vtest *t, struct vt_ring *r);
void vt_used_elem(struct vtest *t, struct vt_ring *r, uint16_t i, uint32_t *id, uint32_t *len);
/* Read the u16 at a ring offset (avail / used). */
uint16_t vt_ld16(struct vtest *t, uint64_t gpa);
void vt_st16(struct vtest *t, uint64_t gpa, uint16_t v);

#endif
