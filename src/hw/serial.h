/* 8250/16550A UART (COM1 and friends): full register set, 16-byte FIFOs,
 * level interrupt on one GSI, loopback as Linux's autoconfig probes it, and
 * interrupt-driven input from a chardev (delivered on the event loop thread).
 * Guest accesses come from vCPU threads; the device has its own mutex. */
#ifndef EMBER_HW_SERIAL_H
#define EMBER_HW_SERIAL_H

#include <stdint.h>

#include "chardev/chardev.h"
#include "hw/bus.h"
#include "hw/irq.h"

struct serial;

/* Registers 8 ports at port; chr may be NULL (output discarded, no input).
 * Returns NULL with a message if the ports are taken. */
struct serial *serial_new(struct bus *pio, uint16_t port, unsigned gsi, const struct irq_sink *irq,
                          struct chardev *chr);
/* Power-on register state; FIFOs emptied, interrupt line lowered. */
void serial_reset(struct serial *s);
/* Unregister the ports and free (detaches from the chardev). */
void serial_free(struct serial *s);

#endif
