/* The software CPU's 8254 programmable interval timer (ports 0x40-0x43) and
 * the NMI status/control port 0x61 as far as the PIT is concerned (channel 2
 * gate, speaker data bit, refresh toggle, channel 2 output), like KVM's PIT
 * with KVM_PIT_SPEAKER_DUMMY.
 *
 * Channels 0-2, modes 0-5 (counter value and OUT computed from the clock at
 * 1.193182 MHz), lobyte/hibyte/word access, counter latch and read-back
 * (count and status). BCD counting is accepted but counts in binary.
 * Channel 0's output drives IRQ0: irq0() is called once per period in modes
 * 2 and 3 and once at terminal count in the one-shot modes. Nothing runs by
 * itself: whoever owns the clock calls pit_poll() at pit_next_deadline().
 * Channel 0 raises nothing until the guest first programs it. Missed
 * periods coalesce; periods below 100 us are stretched (as KVM does) so a
 * guest cannot make the host spin. Safe to call from any thread. */
#ifndef EMBER_ACCEL_EMU_PIT_H
#define EMBER_ACCEL_EMU_PIT_H

#include <stdbool.h>
#include <stdint.h>

#define PIT_HZ 1193182ULL
#define PIT_NO_DEADLINE UINT64_MAX

struct bus;
struct pit;

struct pit_callbacks {
    void *opaque;
    uint64_t (*now_ns)(void);              /* CLOCK_MONOTONIC, or a fake in tests */
    void (*irq0)(void *opaque);            /* an edge on IRQ0 / GSI 0 */
    void (*timer_changed)(void *opaque);   /* the next deadline moved */
};

struct pit *pit_new(const struct pit_callbacks *cb);
void pit_free(struct pit *p);
void pit_reset(struct pit *p);

/* Ports 0x40-0x43 and 0x61. */
uint8_t pit_port_read(struct pit *p, uint16_t port);
void pit_port_write(struct pit *p, uint16_t port, uint8_t val);
int pit_register(struct pit *p, struct bus *pio);
void pit_unregister(struct pit *p, struct bus *pio);

/* now_ns() time of channel 0's next interrupt, or PIT_NO_DEADLINE. */
uint64_t pit_next_deadline(struct pit *p);
/* Raise IRQ0 if due; returns the next deadline. */
uint64_t pit_poll(struct pit *p, uint64_t now);

#endif
