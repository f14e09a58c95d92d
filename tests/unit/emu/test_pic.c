/* Unit tests for the software CPU's 8259 pair: the ICW sequence, priority,
 * the cascade, EOI modes, auto-EOI, masking, ELCR level triggering, poll
 * mode and spurious interrupts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "accel/emu/pic.h"

static struct pic *pic;
static unsigned notifies;

static void count_notify(void *opaque) { notifies++; }

/* The sequence Linux and SeaBIOS use: edge, cascade, 8086 mode. */
static void init_pair(uint8_t icw4)
{
    pic_port_write(pic, 0x20, 0x11);
    pic_port_write(pic, 0x21, 0x20);
    pic_port_write(pic, 0x21, 0x04);
    pic_port_write(pic, 0x21, icw4);
    pic_port_write(pic, 0xa0, 0x11);
    pic_port_write(pic, 0xa1, 0x28);
    pic_port_write(pic, 0xa1, 0x02);
    pic_port_write(pic, 0xa1, icw4);
    pic_port_write(pic, 0x21, 0x00);
    pic_port_write(pic, 0xa1, 0x00);
}

static int setup(void **state)
{
    notifies = 0;
    pic = pic_new(count_notify, NULL);
    init_pair(0x01);
    return 0;
}

static int teardown(void **state)
{
    pic_free(pic);
    return 0;
}

static uint8_t read_isr(uint16_t cmd)
{
    pic_port_write(pic, cmd, 0x0b);
    return pic_port_read(pic, cmd);
}

static uint8_t read_irr(uint16_t cmd)
{
    pic_port_write(pic, cmd, 0x0a);
    return pic_port_read(pic, cmd);
}

static void test_init_and_basic_ack(void **state)
{
    assert_false(pic_output(pic));
    assert_int_equal(pic_port_read(pic, 0x21), 0x00);
    pic_set_irq(pic, 1, true);
    assert_true(pic_output(pic));
    assert_true(notifies > 0);
    assert_int_equal(read_irr(0x20), 0x02);
    assert_int_equal(pic_intack(pic), 0x21);
    assert_false(pic_output(pic));
    assert_int_equal(read_irr(0x20), 0x00); /* edge request consumed */
    assert_int_equal(read_isr(0x20), 0x02);
    pic_port_write(pic, 0x20, 0x20); /* non-specific EOI */
    assert_int_equal(read_isr(0x20), 0x00);
    /* The line is still high: no new edge, no new request. */
    pic_set_irq(pic, 1, true);
    assert_false(pic_output(pic));
    pic_set_irq(pic, 1, false);
    pic_set_irq(pic, 1, true);
    assert_true(pic_output(pic));
}

static void test_priority_and_nesting(void **state)
{
    pic_set_irq(pic, 5, true);
    pic_set_irq(pic, 3, true);
    assert_int_equal(pic_intack(pic), 0x23);
    /* 5 is lower priority than 3 in service. */
    assert_false(pic_output(pic));
    pic_set_irq(pic, 0, true); /* higher: nests */
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x20);
    assert_int_equal(read_isr(0x20), 0x09);
    pic_port_write(pic, 0x20, 0x20); /* retires IRQ0 */
    assert_int_equal(read_isr(0x20), 0x08);
    assert_false(pic_output(pic));
    pic_port_write(pic, 0x20, 0x63); /* specific EOI for IRQ3 */
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x25);
}

static void test_cascade(void **state)
{
    pic_set_irq(pic, 12, true);
    assert_true(pic_output(pic));
    assert_int_equal(read_irr(0x20), 0x04);
    assert_int_equal(pic_intack(pic), 0x2c);
    assert_int_equal(read_isr(0x20), 0x04);
    assert_int_equal(read_isr(0xa0), 0x10);
    /* A second slave request with higher priority waits for the master's IRQ2. */
    pic_set_irq(pic, 8, true);
    assert_false(pic_output(pic));
    pic_port_write(pic, 0xa0, 0x20);
    pic_port_write(pic, 0x20, 0x20);
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x28);
    /* Masking the cascade input hides the slave. */
    pic_port_write(pic, 0xa0, 0x20);
    pic_port_write(pic, 0x20, 0x20);
    pic_port_write(pic, 0x21, 0x04);
    pic_set_irq(pic, 9, true);
    assert_false(pic_output(pic));
    pic_port_write(pic, 0x21, 0x00);
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x29);
}

static void test_masking_and_spurious(void **state)
{
    pic_port_write(pic, 0x21, 0xff);
    assert_int_equal(pic_port_read(pic, 0x21), 0xff);
    pic_set_irq(pic, 4, true);
    assert_false(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x27); /* spurious IRQ7 */
    assert_int_equal(read_isr(0x20), 0x00);
    pic_port_write(pic, 0x21, 0x00);
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x24);
    /* Special mask mode lets a masked-in-service level through lower ones. */
    pic_port_write(pic, 0x21, 0x10);
    pic_port_write(pic, 0x20, 0x68); /* OCW3: set special mask */
    pic_set_irq(pic, 6, true);
    assert_true(pic_output(pic));
    assert_int_equal(pic_intack(pic), 0x26);
}

static void test_auto_eoi(void **state)
{
    init_pair(0x03);
    pic_set_irq(pic, 3, true);
    assert_int_equal(pic_intack(pic), 0x23);
    assert_int_equal(read_isr(0x20), 0x00);
    pic_set_irq(pic, 4, true);
    assert_true(pic_output(pic));
}

static void test_elcr_level(void **state)
{
    pic_port_write(pic, 0x4d1, 0xff); /* IRQ8 and IRQ13 cannot be level */
    assert_int_equal(pic_port_read(pic, 0x4d1), 0xde);
    pic_port_write(pic, 0x4d0, 0xff);
    assert_int_equal(pic_port_read(pic, 0x4d0), 0xf8);
    pic_port_write(pic, 0x4d0, 0x20); /* IRQ5 level */
    pic_set_irq(pic, 5, true);
    assert_int_equal(pic_intack(pic), 0x25);
    assert_int_equal(read_irr(0x20), 0x20); /* level requests stay while asserted */
    pic_port_write(pic, 0x20, 0x20);
    assert_true(pic_output(pic));
    pic_set_irq(pic, 5, false);
    assert_false(pic_output(pic));
    assert_int_equal(read_irr(0x20), 0x00);
    /* ICW1 keeps the ELCR. */
    init_pair(0x01);
    assert_int_equal(pic_port_read(pic, 0x4d0), 0x20);
}

static void test_rotation_and_poll(void **state)
{
    pic_port_write(pic, 0x20, 0xc4); /* set priority: IRQ4 lowest, IRQ5 highest */
    pic_set_irq(pic, 1, true);
    pic_set_irq(pic, 6, true);
    assert_int_equal(pic_intack(pic), 0x26);
    pic_port_write(pic, 0x20, 0xa0); /* rotate on non-specific EOI: 6 becomes lowest */
    assert_int_equal(pic_intack(pic), 0x21);
    pic_port_write(pic, 0x20, 0x20);
    /* Poll mode: the read is the acknowledge. */
    pic_set_irq(pic, 2 + 1, true);
    pic_port_write(pic, 0x20, 0x0c);
    assert_int_equal(pic_port_read(pic, 0x20), 0x83);
    assert_int_equal(read_isr(0x20), 0x08);
    pic_port_write(pic, 0x20, 0x20);
    pic_port_write(pic, 0x20, 0x0c);
    assert_int_equal(pic_port_read(pic, 0x20), 0x00);
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* Hostile guest: random port traffic and IRQ lines; the acknowledge always
 * yields a vector in one of the two programmed blocks. */
static void test_random_programming(void **state)
{
    static const uint16_t ports[] = {0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1};
    for (unsigned i = 0; i < 200000; i++) {
        uint32_t r = rng();
        uint16_t port = ports[r % 6];
        switch ((r >> 4) % 4) {
        case 0: pic_port_write(pic, port, (uint8_t)rng()); break;
        case 1: (void)pic_port_read(pic, port); break;
        case 2: pic_set_irq(pic, rng() % 17, rng() & 1); break;
        default: {
            int v = pic_intack(pic);
            assert_true(v >= 0 && v <= 0xff);
            break;
        }
        }
    }
    /* Re-initialized, it behaves again. */
    init_pair(0x01);
    pic_port_write(pic, 0x4d0, 0);
    pic_port_write(pic, 0x4d1, 0);
    for (unsigned irq = 0; irq < 16; irq++)
        pic_set_irq(pic, irq, false);
    pic_set_irq(pic, 3, true);
    assert_int_equal(pic_intack(pic), 0x23);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_and_basic_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_and_nesting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cascade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_masking_and_spurious, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_eoi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_elcr_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_and_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_programming, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
