/* i8042 PS/2 keyboard controller: enough for Linux's i8042, atkbd and
 * psmouse drivers to probe a keyboard and a mouse that never type, plus the
 * reset line (command 0xfe, output port bit 0) -> VM_EVENT_RESET. */
#ifndef EMBER_HW_I8042_H
#define EMBER_HW_I8042_H

#include "hw/bus.h"
#include "hw/irq.h"
#include "hw/vmctl.h"

struct i8042;

/* Registers ports 0x60 and 0x64; keyboard on GSI 1, aux on GSI 12.
 * Returns NULL with a message if the ports are taken. */
struct i8042 *i8042_new(struct bus *pio, const struct irq_sink *irq, const struct vm_control *vmctl);
void i8042_reset(struct i8042 *k);
void i8042_free(struct i8042 *k);

/* System control port B (0x61): PIT channel 2 gate and speaker bits kept,
 * bit 4 (refresh) toggling on every read, bit 5 (PIT channel 2 output)
 * following the refresh toggle. Only for accelerators whose PIT does not
 * already provide it (KVM's in-kernel PIT does); not registered by default.
 * The state lives with the bus registration; returns 0 or -EEXIST. */
int port61_new(struct bus *pio);

#endif
