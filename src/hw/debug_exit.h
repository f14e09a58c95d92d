/* isa-debug-exit, QEMU semantics: a guest write of V to the port makes the
 * VMM exit with status (V << 1) | 1, so test guests report pass/fail. */
#ifndef EMBER_HW_DEBUG_EXIT_H
#define EMBER_HW_DEBUG_EXIT_H

#include <stdint.h>

#include "hw/bus.h"
#include "hw/vmctl.h"

/* iosize is 1, 2 or 4. Returns 0, -EINVAL (bad iosize) or -EEXIST. */
int debug_exit_new(struct bus *pio, uint16_t iobase, uint8_t iosize, const struct vm_control *vmctl);
/* Remove the port again (tests, reconfiguration). */
void debug_exit_free(struct bus *pio, uint16_t iobase, const struct vm_control *vmctl);

#endif
