/* A PCI layer for the virtio unit tests that records what the device
 * registers and signals; implements the pci.h functions src/hw/virtio calls. */
#ifndef EMBER_TESTS_VIRTIO_FAKE_PCI_H
#define EMBER_TESTS_VIRTIO_FAKE_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "hw/pci.h"

struct fake_bar {
    const struct bus_ops *ops;
    void *opaque;
    uint64_t size, addr;
    enum pci_bar_kind kind;
    bool present;
};

struct pci_device {
    char name[64];
    struct pci_device_id id;
    const struct pci_device_ops *ops;
    void *opaque;
    uint8_t config[PCI_CONFIG_SPACE_SIZE];
    unsigned last_cap, next_cap_off;
    struct fake_bar bars[PCI_NUM_BARS];
    unsigned msix_vectors, msix_bar;
    uint64_t msix_table, msix_pba;
    bool msix_enabled;
    unsigned msix_count[256];
    bool intx;
    unsigned intx_raises;
};

struct pci_bus {
    struct pci_device *devs[PCI_MAX_SLOTS];
    unsigned n;
};

/* Make the next pci_device_add_bar() calls fail (creation error paths). */
extern bool fake_pci_fail_add_bar;

struct pci_bus *fake_pci_bus_new(void);
void fake_pci_bus_free(struct pci_bus *b);
/* Config-space accesses the way pci.c makes them: bytes outside the header
 * are stored, then the device's hooks run. */
uint32_t fake_pci_config_read(struct pci_device *d, unsigned off, unsigned size);
void fake_pci_config_write(struct pci_device *d, unsigned off, uint32_t val, unsigned size);

#endif
