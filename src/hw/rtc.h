/* MC146818 CMOS RTC at ports 0x70 (index, bit 7 = NMI mask) / 0x71 (data):
 * wall-clock time from the host's UTC clock in BCD or binary, 12/24 h,
 * the update-in-progress window, registers A-D, periodic/alarm/update-ended
 * interrupts on GSI 8 (level until register C is read), and the CMOS bytes
 * that describe memory size and the century. */
#ifndef EMBER_HW_RTC_H
#define EMBER_HW_RTC_H

#include <stdint.h>

#include "hw/bus.h"
#include "hw/irq.h"

struct rtc;

/* Registers ports 0x70-0x71; NULL with a message if they are taken. */
struct rtc *rtc_new(struct bus *pio, const struct irq_sink *irq, uint64_t ram_size);
/* Register B/C/D and the index return to power-on values; time and CMOS RAM persist. */
void rtc_reset(struct rtc *r);
void rtc_free(struct rtc *r);

/* Tests: replace the clock (nanoseconds since the Unix epoch, UTC). The
 * interrupt thread is then never started; rtc_poll() evaluates the timers. */
void rtc_set_clock(struct rtc *r, uint64_t (*now_ns)(void *opaque), void *opaque);
void rtc_poll(struct rtc *r);

#endif
