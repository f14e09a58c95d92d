/* pvpanic (QEMU's ISA device, ACPI id QEMU0001): the guest kernel writes to
 * one I/O port when it panics, so the VMM can end with a failure status
 * instead of spinning on a dead guest. */
#ifndef EMBER_HW_PVPANIC_H
#define EMBER_HW_PVPANIC_H

#include <stdint.h>

#include "hw/bus.h"
#include "hw/vmctl.h"

#define PVPANIC_PORT 0x505
#define PVPANIC_PANICKED (1u << 0)      /* the guest panicked */
#define PVPANIC_CRASH_LOADED (1u << 1)  /* the guest runs a crash kernel */
#define PVPANIC_EXIT_STATUS 3           /* ember's exit status after a panic */

/* Returns 0 or -EEXIST (the port is taken, e.g. by isa-debug-exit). */
int pvpanic_new(struct bus *pio, uint16_t port, const struct vm_control *vmctl);
void pvpanic_free(struct bus *pio, uint16_t port, const struct vm_control *vmctl);

#endif
