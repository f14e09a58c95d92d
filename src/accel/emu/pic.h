/* The software CPU's 8259A programmable interrupt controller pair: master
 * (ports 0x20-0x21) and slave (0xa0-0xa1) cascaded on master IRQ2, with the
 * edge/level control registers at 0x4d0-0x4d1. ICW1-4 initialization,
 * OCW1 (mask), OCW2 (specific/non-specific/rotating EOI, priority rotation),
 * OCW3 (IRR/ISR read select, poll, special mask), auto-EOI, special fully
 * nested mode, spurious IRQ7/IRQ15 on an acknowledge with nothing pending.
 *
 * The INT output goes to the BSP's LINT0 (virtual wire): notify() is called,
 * with the PIC's lock dropped, whenever the output may have changed;
 * pic_output() reads it lock-free. Safe to call from any thread. */
#ifndef EMBER_ACCEL_EMU_PIC_H
#define EMBER_ACCEL_EMU_PIC_H

#include <stdbool.h>
#include <stdint.h>

struct bus;
struct pic;

struct pic *pic_new(void (*notify)(void *opaque), void *opaque);
void pic_free(struct pic *p);
void pic_reset(struct pic *p);

/* Input line irq (0-15) level; edge-triggered lines act on 0->1. */
void pic_set_irq(struct pic *p, unsigned irq, bool level);
/* INT output (an unmasked request beats the in-service priority). */
bool pic_output(struct pic *p);
/* Interrupt acknowledge cycle: the vector to run (spurious IRQ7/15's vector
 * when the request went away). */
int pic_intack(struct pic *p);

/* Port access: 0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1. */
uint8_t pic_port_read(struct pic *p, uint16_t port);
void pic_port_write(struct pic *p, uint16_t port, uint8_t val);
/* Register the ports above on a port-I/O bus; -errno (message printed). */
int pic_register(struct pic *p, struct bus *pio);
void pic_unregister(struct pic *p, struct bus *pio);

#endif
