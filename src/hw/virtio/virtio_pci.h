/* The virtio 1.x PCI transport (virtio 1.2, section 4.1) and the device
 * core every virtio device builds on: feature negotiation, the status state
 * machine, queues, interrupts (MSI-X, or INTx with the ISR register) and
 * queue notifications (an eventfd per queue, optionally an ioeventfd).
 *
 * BAR 4 (64-bit memory, 16 KiB) holds the virtio structures, one per 4 KiB:
 *   0x0000 common configuration   0x1000 ISR status
 *   0x2000 device configuration   0x3000 notifications (queue q at q * 4)
 * BAR 1 (32-bit memory, 4 KiB) holds the MSI-X table (0x000) and PBA (0x800).
 *
 * Threads: register accesses come from vCPU threads, queue work and backend
 * completions from the event loop. Both take the device lock (recursive, so
 * a synchronous backend may complete inside a submit). Interrupts, the INTx
 * level and ioeventfd changes are collected under the lock and carried out
 * after the outermost unlock, so the PCI layer is never called with the
 * device lock held. */
#ifndef EMBER_HW_VIRTIO_VIRTIO_PCI_H
#define EMBER_HW_VIRTIO_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "hw/virtio/virtio.h"
#include "hw/virtio/virtq.h"

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* Transport feature bits (6). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define VIRTIO_MAX_QUEUES 64
#define VIRTIO_CONFIG_MAX 256

/* PCI identity (4.1.2): vendor 0x1af4, device 0x1040 + type, revision 1. */
#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_SUBSYS_VENDOR 0x1af4
#define VIRTIO_PCI_SUBSYS_DEVICE 0x1100

/* Capability types (4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* Our BAR layout. */
#define VIRTIO_PCI_BAR 4
#define VIRTIO_PCI_BAR_SIZE 0x4000
#define VIRTIO_PCI_COMMON_OFF 0x0000
#define VIRTIO_PCI_COMMON_LEN 0x38
#define VIRTIO_PCI_ISR_OFF 0x1000
#define VIRTIO_PCI_ISR_LEN 4
#define VIRTIO_PCI_DEVICE_OFF 0x2000
#define VIRTIO_PCI_NOTIFY_OFF 0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
#define VIRTIO_PCI_MSIX_BAR 1
#define VIRTIO_PCI_MSIX_BAR_SIZE 0x1000
#define VIRTIO_PCI_MSIX_TABLE 0x000
#define VIRTIO_PCI_MSIX_PBA 0x800

/* Common configuration registers (4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT 0x00
#define VIRTIO_PCI_COMMON_DF 0x04
#define VIRTIO_PCI_COMMON_GFSELECT 0x08
#define VIRTIO_PCI_COMMON_GF 0x0c
#define VIRTIO_PCI_COMMON_MSIX 0x10
#define VIRTIO_PCI_COMMON_NUMQ 0x12
#define VIRTIO_PCI_COMMON_STATUS 0x14
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15
#define VIRTIO_PCI_COMMON_Q_SELECT 0x16
#define VIRTIO_PCI_COMMON_Q_SIZE 0x18
#define VIRTIO_PCI_COMMON_Q_MSIX 0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE 0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF 0x1e
#define VIRTIO_PCI_COMMON_Q_DESCLO 0x20
#define VIRTIO_PCI_COMMON_Q_DESCHI 0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO 0x28
#define VIRTIO_PCI_COMMON_Q_AVAILHI 0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO 0x30
#define VIRTIO_PCI_COMMON_Q_USEDHI 0x34

struct virtio_dev;
struct pci_device;

/* What a device type tells the transport. Callbacks run with the device
 * lock held. */
struct virtio_device_info {
    const char *name;          /* "virtio-blk": PCI name and message prefix */
    uint16_t device_type;      /* 2 block, 3 console, 4 entropy (5) */
    uint8_t class_base, class_sub, class_prog_if;
    uint64_t features;         /* device bits; VERSION_1, INDIRECT_DESC, EVENT_IDX are added */
    unsigned num_queues;       /* 1..VIRTIO_MAX_QUEUES */
    uint16_t queue_size;       /* maximum, power of two <= VIRTQ_MAX_SIZE */
    uint32_t config_size;      /* device configuration bytes, <= VIRTIO_CONFIG_MAX */
    /* The driver made buffers available on queue q (DRIVER_OK, queue enabled). */
    void (*queue_notify)(void *opaque, unsigned q);
    /* Optional: the driver wrote size bytes at offset of the device config. */
    void (*config_write)(void *opaque, unsigned offset, uint64_t value, unsigned size);
    /* Optional: device reset; drop requests held, forget negotiated state. */
    void (*reset)(void *opaque);
    /* Optional: free the device type's state (virtio_dev_free). */
    void (*destroy)(void *opaque);
};

/* Create the PCI function. opaque is handed to info's callbacks and, on
 * failure or in virtio_dev_free(), to info->destroy. Returns NULL after a
 * message naming the device. */
struct virtio_dev *virtio_dev_new(const struct virtio_env *env,
                                  const struct virtio_device_info *info, const char *id,
                                  void *opaque);
/* Tear down (unit tests; the machine keeps its devices). The PCI function
 * itself stays on the bus. No backend request may be in flight. */
void virtio_dev_free(struct virtio_dev *v);

/* Device configuration bytes (little-endian), filled by the device type. */
uint8_t *virtio_dev_config(struct virtio_dev *v);
struct virtq *virtio_dev_queue(struct virtio_dev *v, unsigned q);
struct pci_device *virtio_dev_pci(struct virtio_dev *v);
const char *virtio_dev_name(const struct virtio_dev *v);
const struct guest_mem *virtio_dev_mem(const struct virtio_dev *v);
struct evloop *virtio_dev_loop(const struct virtio_dev *v);

void virtio_dev_lock(struct virtio_dev *v);
/* Releases the lock; the outermost unlock delivers collected interrupts. */
void virtio_dev_unlock(struct virtio_dev *v);

/* With the lock held: */
uint8_t virtio_dev_status(const struct virtio_dev *v);
bool virtio_dev_has_feature(const struct virtio_dev *v, unsigned bit); /* negotiated */
/* DRIVER_OK and not NEEDS_RESET: queues may be processed. */
bool virtio_dev_running(const struct virtio_dev *v);
/* Counts device resets: a completion started in an older epoch must not
 * touch the (reinitialised) rings. */
uint32_t virtio_dev_epoch(const struct virtio_dev *v);
/* After pushing to queue q: interrupt the driver if it wants one. */
void virtio_dev_notify(struct virtio_dev *v, unsigned q);
/* The guest broke the protocol: set DEVICE_NEEDS_RESET, raise a
 * configuration interrupt and process nothing until the driver resets us. */
void virtio_dev_fail(struct virtio_dev *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Device configuration changed: bump config_generation, interrupt. */
void virtio_dev_config_changed(struct virtio_dev *v);

/* Pop every available request of queue q and give each to handle(), which
 * owns the element (push or free it). Handles notification suppression and
 * hostile chains; interrupts once if anything was pushed meanwhile. */
typedef void virtio_handle_fn(void *opaque, unsigned q, struct virtq_elem *elem);
void virtio_dev_process_queue(struct virtio_dev *v, unsigned q, virtio_handle_fn *handle,
                              void *opaque);

#endif
