/* Unit tests for the software CPU's 8254 PIT, driven by a fake clock:
 * periodic IRQ0 in modes 2 and 3, counter values, latch and read-back,
 * access modes, one-shot mode 0 and channel 2 through port 0x61. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "accel/emu/pit.h"

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }
static unsigned irqs, changes;
static void count_irq(void *opaque) { irqs++; }
static void count_change(void *opaque) { changes++; }

static struct pit *pit;

static int setup(void **state)
{
    fake_now = 5000000000ull;
    irqs = changes = 0;
    pit = pit_new(&(struct pit_callbacks){.now_ns = fake_clock, .irq0 = count_irq,
                                          .timer_changed = count_change});
    return 0;
}

static int teardown(void **state)
{
    pit_free(pit);
    return 0;
}

static uint64_t ticks_ns(uint64_t ticks) { return (ticks * 1000000000ull + PIT_HZ - 1) / PIT_HZ; }

static uint16_t latch_read(unsigned ch)
{
    pit_port_write(pit, 0x43, (uint8_t)(ch << 6)); /* counter latch */
    uint16_t lo = pit_port_read(pit, (uint16_t)(0x40 + ch));
    uint16_t hi = pit_port_read(pit, (uint16_t)(0x40 + ch));
    return (uint16_t)(lo | hi << 8);
}

static void test_mode2_periodic(void **state)
{
    assert_int_equal(pit_next_deadline(pit), PIT_NO_DEADLINE); /* silent until programmed */
    uint64_t t0 = fake_now;
    pit_port_write(pit, 0x43, 0x34); /* ch0, lo/hi, mode 2 */
    pit_port_write(pit, 0x40, 1193 & 0xff);
    assert_int_equal(changes, 0); /* not loaded until the high byte */
    pit_port_write(pit, 0x40, 1193 >> 8);
    assert_int_equal(changes, 1);
    uint64_t period = ticks_ns(1193);
    assert_int_equal(pit_next_deadline(pit), t0 + period);
    fake_now = t0 + ticks_ns(200);
    assert_int_equal(latch_read(0), 1193 - 200);
    assert_int_equal(pit_poll(pit, fake_now), t0 + period);
    assert_int_equal(irqs, 0);
    for (unsigned i = 1; i <= 5; i++) {
        fake_now = t0 + i * period;
        assert_int_equal(pit_poll(pit, fake_now), t0 + (i + 1) * period);
        assert_int_equal(irqs, i);
    }
    /* Late: the missed periods coalesce into one edge. */
    fake_now = t0 + 10 * period + 5;
    assert_int_equal(pit_poll(pit, fake_now), t0 + 11 * period);
    assert_int_equal(irqs, 6);
    /* The counter wraps every period. */
    fake_now = t0 + ticks_ns(1193 * 3 + 100);
    assert_int_equal(latch_read(0), 1193 - 100);
}

static void test_mode3_square_wave(void **state)
{
    uint64_t t0 = fake_now;
    pit_port_write(pit, 0x43, 0x36); /* ch0, lo/hi, mode 3 */
    pit_port_write(pit, 0x40, 0x00);
    pit_port_write(pit, 0x40, 0x10); /* 4096 */
    fake_now = t0 + ticks_ns(100);
    assert_int_equal(latch_read(0), 4096 - 200); /* counts by two */
    /* Status via read-back: OUT high in the first half, lo/hi, mode 3. */
    pit_port_write(pit, 0x43, 0xe2);
    assert_int_equal(pit_port_read(pit, 0x40), 0x80 | 0x30 | 0x06);
    fake_now = t0 + ticks_ns(3000);
    pit_port_write(pit, 0x43, 0xe2);
    assert_int_equal(pit_port_read(pit, 0x40), 0x30 | 0x06);
    fake_now = t0 + ticks_ns(4096);
    pit_poll(pit, fake_now);
    assert_int_equal(irqs, 1);
}

static void test_latch_and_readback(void **state)
{
    uint64_t t0 = fake_now;
    pit_port_write(pit, 0x43, 0x74); /* ch1, lo/hi, mode 2 */
    pit_port_write(pit, 0x41, 0x10);
    pit_port_write(pit, 0x41, 0x27); /* 10000 */
    fake_now = t0 + ticks_ns(1000);
    pit_port_write(pit, 0x43, 0x40); /* latch ch1 */
    fake_now = t0 + ticks_ns(2000);
    pit_port_write(pit, 0x43, 0x40); /* a second latch does not overwrite */
    assert_int_equal(pit_port_read(pit, 0x41), 9000 & 0xff);
    assert_int_equal(pit_port_read(pit, 0x41), 9000 >> 8);
    /* Unlatched reads follow the counter. */
    uint16_t lo = pit_port_read(pit, 0x41);
    uint16_t hi = pit_port_read(pit, 0x41);
    assert_int_equal(lo | hi << 8, 8000);
    /* Read-back of count and status for ch1: status comes first. */
    pit_port_write(pit, 0x43, 0xc4);
    assert_int_equal(pit_port_read(pit, 0x41), 0x80 | 0x30 | 0x04);
    assert_int_equal(pit_port_read(pit, 0x41), 8000 & 0xff);
    assert_int_equal(pit_port_read(pit, 0x41), 8000 >> 8);
    /* Channel 1 never interrupts. */
    assert_int_equal(pit_next_deadline(pit), PIT_NO_DEADLINE);
}

static void test_access_modes(void **state)
{
    uint64_t t0 = fake_now;
    pit_port_write(pit, 0x43, 0x54); /* ch1, LSB only, mode 2 */
    pit_port_write(pit, 0x41, 200);
    fake_now = t0 + ticks_ns(50);
    assert_int_equal(pit_port_read(pit, 0x41), 150);
    assert_int_equal(pit_port_read(pit, 0x41), 150);
    pit_port_write(pit, 0x43, 0x64); /* ch1, MSB only, mode 2 */
    pit_port_write(pit, 0x41, 0x02); /* 512 */
    fake_now += ticks_ns(12);
    assert_int_equal(pit_port_read(pit, 0x41), 0x01); /* 500 >> 8 */
    /* The control port reads as nothing. */
    assert_int_equal(pit_port_read(pit, 0x43), 0xff);
}

static void test_mode0_oneshot(void **state)
{
    uint64_t t0 = fake_now;
    pit_port_write(pit, 0x43, 0x30); /* ch0, lo/hi, mode 0 */
    pit_port_write(pit, 0x40, 0xe8);
    pit_port_write(pit, 0x40, 0x03); /* 1000 */
    assert_int_equal(pit_next_deadline(pit), t0 + ticks_ns(1000));
    fake_now = t0 + ticks_ns(1000);
    assert_int_equal(pit_poll(pit, fake_now), PIT_NO_DEADLINE);
    assert_int_equal(irqs, 1);
    fake_now += 1000000000;
    pit_poll(pit, fake_now);
    assert_int_equal(irqs, 1);
}

static void test_channel2_port61(void **state)
{
    /* Linux's PIT TSC calibration: gate on, speaker off, mode 0, poll OUT2. */
    assert_int_equal(pit_port_read(pit, 0x61) & 0x03, 0x00); /* gate and speaker off */
    pit_port_write(pit, 0x61, 0x01);
    pit_port_write(pit, 0x43, 0xb0);
    pit_port_write(pit, 0x42, 0xff);
    pit_port_write(pit, 0x42, 0xff);
    uint64_t t0 = fake_now;
    assert_int_equal(pit_port_read(pit, 0x61) & 0x21, 0x01);
    fake_now = t0 + ticks_ns(0xfffe);
    assert_int_equal(pit_port_read(pit, 0x61) & 0x20, 0x00);
    fake_now = t0 + ticks_ns(0xffff);
    assert_int_equal(pit_port_read(pit, 0x61) & 0x20, 0x20);
    /* The refresh bit toggles with time. */
    fake_now = 15085 * 2;
    uint8_t a = pit_port_read(pit, 0x61) & 0x10;
    fake_now += 15085;
    assert_int_not_equal(a, pit_port_read(pit, 0x61) & 0x10);
    /* Mode 2 with the gate low holds the count and OUT high. */
    fake_now = t0;
    pit_port_write(pit, 0x61, 0x02);
    assert_int_equal(pit_port_read(pit, 0x61) & 0x03, 0x02);
    pit_port_write(pit, 0x43, 0xb4);
    pit_port_write(pit, 0x42, 100);
    pit_port_write(pit, 0x42, 0);
    fake_now += ticks_ns(30);
    assert_int_equal(latch_read(2), 100);
    pit_port_write(pit, 0x61, 0x01); /* rising gate starts it */
    fake_now += ticks_ns(30);
    assert_int_equal(latch_read(2), 70);
}

static void test_min_period(void **state)
{
    pit_port_write(pit, 0x43, 0x34);
    pit_port_write(pit, 0x40, 2);
    pit_port_write(pit, 0x40, 0);
    assert_int_equal(pit_next_deadline(pit), fake_now + 100000);
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* Hostile guest: random port traffic never crashes or divides by zero. */
static void test_random_programming(void **state)
{
    for (unsigned i = 0; i < 200000; i++) {
        uint16_t port = (rng() & 1) ? (uint16_t)(0x40 + rng() % 4) : 0x61;
        if (rng() & 1)
            pit_port_write(pit, port, (uint8_t)rng());
        else
            (void)pit_port_read(pit, port);
        fake_now += rng() % 5000;
        uint64_t next = pit_poll(pit, fake_now);
        assert_true(next == PIT_NO_DEADLINE || next > fake_now);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mode2_periodic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode3_square_wave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latch_and_readback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode0_oneshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel2_port61, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_period, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_programming, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
