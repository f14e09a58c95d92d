/* Virtio 1.x devices on PCI (modern transport only): block, entropy and
 * console. The machine builder calls these once per -device; each adds one
 * PCI function to env->pci with its BARs, capabilities and MSI-X, and then
 * lives as long as the machine. Queue work runs on env->loop's thread;
 * register accesses from vCPU threads take the device's own lock. */
#ifndef EMBER_HW_VIRTIO_VIRTIO_H
#define EMBER_HW_VIRTIO_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

struct pci_bus;
struct guest_mem;
struct evloop;
struct block_dev;
struct chardev;

struct virtio_env {
    struct pci_bus *pci;
    struct guest_mem *mem;
    /* Queue notifications and completions run here. NULL (unit tests):
     * a notify register write processes the queue on the writing thread. */
    struct evloop *loop;
    void *ioev_opaque; /* for the two hooks below; hooks may be NULL */
    /* Let the accelerator signal fd on a guest write of len bytes at addr
     * (no exit to userspace). Called when the driver sets DRIVER_OK, with the
     * notify address of each queue; del on device reset. */
    int (*add_ioeventfd)(void *opaque, bool pio, uint64_t addr, unsigned len, int fd);
    int (*del_ioeventfd)(void *opaque, bool pio, uint64_t addr, unsigned len, int fd);
};

/* bd stays owned by the caller and must outlive the device. id names the
 * device in messages (may be NULL); serial is what VIRTIO_BLK_T_GET_ID
 * returns (up to 20 bytes, may be NULL); num_queues 0 means 1. readonly
 * offers VIRTIO_BLK_F_RO and fails writes (also implied by a read-only bd).
 * Return 0 or -errno after printing a message. */
int virtio_blk_create(const struct virtio_env *env, struct block_dev *bd, const char *id,
                      const char *serial, unsigned num_queues, bool readonly);
int virtio_rng_create(const struct virtio_env *env);
/* A virtio console (port 0 only, /dev/hvc0 in Linux) on chr. */
int virtio_console_create(const struct virtio_env *env, struct chardev *chr);

#endif
