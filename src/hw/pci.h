/* PCI: bus 0 behind a host bridge, configuration mechanism #1 (0xcf8/0xcfc)
 * and ECAM (MCFG) both reaching the same config spaces. There is no firmware:
 * pci_bus_assign_bars() gives every BAR an address from the layout.h windows
 * and enables decoding, as a BIOS would. A guest may move BARs afterwards;
 * the bus mappings follow. MSI-X tables and PBAs are emulated here so devices
 * only call pci_msix_notify(). */
#ifndef EMBER_HW_PCI_H
#define EMBER_HW_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hw/bus.h"
#include "hw/irq.h"

#define PCI_CONFIG_SPACE_SIZE 4096
#define PCI_MAX_SLOTS 32
#define PCI_NUM_BARS 6

struct pci_bus;
struct pci_device;

struct pci_device_id {
    uint16_t vendor, device;
    uint16_t subsystem_vendor, subsystem;
    uint8_t revision;
    uint8_t class_base, class_sub, class_prog_if;
};

enum pci_bar_kind { PCI_BAR_IO, PCI_BAR_MEM32, PCI_BAR_MEM64 };

struct pci_device_ops {
    /* Optional: called after the generic code handled a config write
     * (offset, size, value as written). Used e.g. for virtio's PCI_CFG cap. */
    void (*config_write)(void *opaque, unsigned offset, uint32_t value, unsigned size);
    /* Optional: lets the device supply config read values for its own
     * capability bytes; return false to use the stored bytes. */
    bool (*config_read)(void *opaque, unsigned offset, unsigned size, uint32_t *value);
    /* Device reset (machine reset). */
    void (*reset)(void *opaque);
};

/* mmio/pio: the machine's buses; irq: interrupt sink. */
struct pci_bus *pci_bus_new(struct bus *pio, struct bus *mmio, const struct irq_sink *irq);
void pci_bus_free(struct pci_bus *b);

/* Add a device at the first free slot (slot 0 holds the host bridge).
 * Returns NULL with a message if the bus is full. */
struct pci_device *pci_device_new(struct pci_bus *b, const char *name,
                                  const struct pci_device_id *id,
                                  const struct pci_device_ops *ops, void *opaque);
unsigned pci_device_slot(const struct pci_device *d);
const char *pci_device_name(const struct pci_device *d);

/* Declare BAR n (size a power of two >= 16 for memory, >= 4 for I/O). MEM64
 * uses BARs n and n+1. Accesses reach ops with offsets relative to the BAR. */
int pci_device_add_bar(struct pci_device *d, unsigned n, enum pci_bar_kind kind, uint64_t size,
                       const struct bus_ops *ops, void *opaque);
/* Current guest address of BAR n (0 if unassigned/disabled). */
uint64_t pci_device_bar_addr(const struct pci_device *d, unsigned n);

/* Append a capability to the list; data starts with the cap ID and a
 * placeholder next byte (filled in here). Returns the config offset or 0. */
unsigned pci_device_add_capability(struct pci_device *d, const void *data, size_t len);
/* Raw access to the device's config bytes (for device-specific fields). */
uint8_t *pci_device_config(struct pci_device *d);

/* MSI-X: table and PBA inside an existing memory BAR. */
int pci_device_init_msix(struct pci_device *d, unsigned nr_vectors, unsigned bar,
                         uint64_t table_offset, uint64_t pba_offset);
bool pci_msix_enabled(const struct pci_device *d);
/* Send vector v (or set its pending bit while masked). */
void pci_msix_notify(struct pci_device *d, unsigned vector);

/* INTx (legacy interrupt pin A); level-triggered. */
void pci_set_intx(struct pci_device *d, bool level);

/* Assign addresses to every BAR and enable I/O + memory decoding and bus
 * mastering, like firmware. Called once after all devices are added. */
int pci_bus_assign_bars(struct pci_bus *b);
/* Machine reset: every device back to the state pci_bus_assign_bars() left
 * (addresses kept, decoding on, MSI-X off and masked, INTx low), then each
 * device's reset op. */
void pci_bus_reset(struct pci_bus *b);

/* Config space as the guest sees it (bus 0 only; devfn = slot << 3 | fn).
 * Absent functions read all-ones. Used by tests and debugging tools. */
uint32_t pci_bus_config_read(struct pci_bus *b, unsigned devfn, unsigned offset, unsigned size);
void pci_bus_config_write(struct pci_bus *b, unsigned devfn, unsigned offset, uint32_t value,
                          unsigned size);

/* The chipset reset control register (port 0xcf9) shares the dword at
 * 0xcf8 with the config-address register, so the bus cannot hold it as a
 * range of its own. The 0xcf8-0xcfb range is registered by whichever of
 * pci_bus_new()/pci_port_cf9_attach() comes first; byte accesses to 0xcf9
 * reach ops (offset 0). Used by acpi_pm. */
int pci_port_cf9_attach(struct bus *pio, const struct bus_ops *ops, void *opaque);
void pci_port_cf9_detach(struct bus *pio, void *opaque);

#endif
