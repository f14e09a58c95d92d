/* 16550A UART through a real pio bus: registers, DLAB, FIFO, loopback,
 * interrupt levels, output to a chardev and interrupt-driven input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chardev/chardev.h"
#include "core/evloop.h"
#include "fakes.h"
#include "hw/serial.h"

#define COM1 0x3f8
#define GSI 4
enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

struct fixture {
    struct bus *pio;
    struct fake_irq irq;
    struct serial *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->pio = bus_new("pio");
    fake_irq_init(&f->irq);
    f->s = serial_new(f->pio, COM1, GSI, &f->irq.sink, NULL);
    assert_non_null(f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    serial_free(f->s);
    bus_free(f->pio);
    free(f);
    return 0;
}

static uint8_t rd(struct fixture *f, unsigned reg) { return (uint8_t)io_in(f->pio, COM1 + reg, 1); }
static void wr(struct fixture *f, unsigned reg, uint8_t v) { io_out(f->pio, COM1 + reg, v, 1); }

static void test_divisor_latch(void **state)
{
    struct fixture *f = *state;
    wr(f, IER, 0x05);
    wr(f, LCR, 0x80); /* DLAB */
    wr(f, RBR, 0x01);
    wr(f, IER, 0x02);
    assert_int_equal(rd(f, RBR), 0x01);
    assert_int_equal(rd(f, IER), 0x02);
    wr(f, LCR, 0x03); /* 8N1, DLAB off: IER is back */
    assert_int_equal(rd(f, LCR), 0x03);
    assert_int_equal(rd(f, IER), 0x05);
    wr(f, IER, 0xff);
    assert_int_equal(rd(f, IER), 0x0f); /* no UUE bit: not an XScale */
    wr(f, SCR, 0x5a);
    assert_int_equal(rd(f, SCR), 0x5a);
}

static void test_thr_interrupt(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd(f, IIR) & 0x0f, 0x01);
    assert_int_equal(rd(f, LSR) & 0x60, 0x60);
    assert_false(f->irq.level[GSI]);
    wr(f, IER, 0x02); /* enabling THRI with THR empty raises it */
    assert_true(f->irq.level[GSI]);
    assert_int_equal(rd(f, IIR), 0x02);
    assert_false(f->irq.level[GSI]); /* IIR read acknowledged it */
    assert_int_equal(rd(f, IIR), 0x01);
    wr(f, RBR, 'x'); /* transmit: THR empty again */
    assert_true(f->irq.level[GSI]);
    wr(f, IER, 0x00);
    assert_false(f->irq.level[GSI]);
}

static void test_loopback_and_fifo(void **state)
{
    struct fixture *f = *state;
    wr(f, MCR, 0x1a); /* LOOP | OUT2 | RTS: Linux's autoconfig probe */
    assert_int_equal(rd(f, MSR) & 0xf0, 0x90);
    wr(f, MCR, 0x1f);
    assert_int_equal(rd(f, MSR) & 0xf0, 0xf0);

    /* Without FIFO: one byte holds, the next overruns. */
    wr(f, RBR, 'a');
    wr(f, RBR, 'b');
    uint8_t lsr = rd(f, LSR);
    assert_true(lsr & 0x01);
    assert_true(lsr & 0x02);
    assert_false(rd(f, LSR) & 0x02); /* OE clears on read */
    assert_int_equal(rd(f, RBR), 'a');
    assert_false(rd(f, LSR) & 0x01);

    wr(f, FCR, 0x01);
    assert_int_equal(rd(f, IIR) >> 6, 3); /* 16550A FIFO */
    wr(f, IER, 0x01);
    for (int i = 0; i < 16; i++)
        wr(f, RBR, (uint8_t)('A' + i));
    assert_true(f->irq.level[GSI]);
    assert_int_equal(rd(f, IIR) & 0x0f, 0x04);
    wr(f, RBR, '!'); /* 17th byte: overrun */
    assert_true(rd(f, LSR) & 0x02);
    for (int i = 0; i < 16; i++)
        assert_int_equal(rd(f, RBR), 'A' + i);
    assert_false(rd(f, LSR) & 0x01);
    assert_false(f->irq.level[GSI]);

    /* Receive-line-status interrupt outranks received data. */
    wr(f, IER, 0x05);
    for (int i = 0; i < 17; i++)
        wr(f, RBR, 'z');
    assert_int_equal(rd(f, IIR) & 0x0f, 0x06);
    rd(f, LSR);
    assert_int_equal(rd(f, IIR) & 0x0f, 0x04);
    wr(f, FCR, 0x03); /* clear RX FIFO */
    assert_false(rd(f, LSR) & 0x01);
    assert_false(f->irq.level[GSI]);
}

/* The steps of Linux's autoconfig()/autoconfig_16550a() that decide the type. */
static void test_linux_probe_sees_16550a(void **state)
{
    struct fixture *f = *state;
    wr(f, IER, 0);
    assert_int_equal(rd(f, IER) & 0x0f, 0);
    wr(f, IER, 0x0f);
    assert_int_equal(rd(f, IER) & 0x0f, 0x0f);
    wr(f, IER, 0);
    wr(f, LCR, 0xbf);
    wr(f, FCR, 0); /* EFR write in config mode B */
    wr(f, LCR, 0);
    wr(f, FCR, 0x01);
    assert_int_equal(rd(f, IIR) >> 6, 3);
    wr(f, LCR, 0xbf);
    assert_int_not_equal(rd(f, IIR), 0); /* "EFR" is not 0: no ST16C650 */
    wr(f, LCR, 0x80);
    wr(f, FCR, 0x21); /* 16750 64-byte FIFO probe */
    uint8_t s1 = rd(f, IIR) & 0xe0;
    wr(f, LCR, 0);
    uint8_t s2 = rd(f, IIR) & 0xe0;
    assert_int_equal(s1, 0xc0);
    assert_int_equal(s2, 0xc0);
    wr(f, IER, 0x40);
    assert_int_equal(rd(f, IER) & 0x40, 0);
}

static void test_hostile_accesses(void **state)
{
    struct fixture *f = *state;
    uint64_t v = 0;
    for (unsigned off = 0; off < 8; off++) {
        for (unsigned size = 1; size <= 8; size *= 2) {
            bus_read(f->pio, COM1 + off, &v, size);
            bus_write(f->pio, COM1 + off, &v, size);
        }
    }
    v = ~0ULL;
    bus_write(f->pio, COM1 + 6, &v, 8); /* runs past the end: split per byte */
    serial_reset(f->s);
    assert_false(f->irq.level[GSI]);
    assert_int_equal(rd(f, IER), 0);
}

static void test_output_to_file_chardev(void **state)
{
    (void)state;
    char path[] = "/tmp/ember-test-serial-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char spec[64];
    snprintf(spec, sizeof(spec), "file:%s", path);
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct chardev *chr = chardev_open(spec, NULL, NULL);
    assert_non_null(chr);
    struct serial *s = serial_new(pio, COM1, GSI, &irq.sink, chr);
    const char *msg = "hello\r\n";
    for (const char *p = msg; *p; p++)
        io_out(pio, COM1, (uint8_t)*p, 1);
    io_out(pio, COM1 + MCR, 0x10, 1); /* loopback: nothing reaches the file */
    io_out(pio, COM1, 'X', 1);
    serial_free(s);
    chardev_close(chr);
    bus_free(pio);
    char buf[32] = {0};
    fd = open(path, O_RDONLY);
    assert_int_equal(read(fd, buf, sizeof(buf)), 7);
    close(fd);
    unlink(path);
    assert_string_equal(buf, msg);
}

static void stop_loop(void *opaque) { evloop_stop(opaque, 0); }

/* The "guest": polls the UART from a loop timer, as a driver would from
 * its interrupt handler, and stops the loop once everything arrived. */
struct reader {
    struct bus *pio;
    struct fake_irq *irq;
    struct evloop *loop;
    char got[40];
    unsigned n, overruns, polls_with_irq;
};

static void reader_poll(void *opaque)
{
    struct reader *r = opaque;
    if (r->irq->level[GSI])
        r->polls_with_irq++;
    while ((io_in(r->pio, COM1 + LSR, 1) & 0x01) && r->n < sizeof(r->got))
        r->got[r->n++] = (char)io_in(r->pio, COM1, 1);
    if (io_in(r->pio, COM1 + LSR, 1) & 0x02)
        r->overruns++;
    if (r->n == sizeof(r->got))
        evloop_stop(r->loop, 0);
}

/* Input from stdio (a pipe here) reaches the RX FIFO with flow control:
 * 40 bytes through a 16-byte FIFO without an overrun. */
static void test_input_flow_control(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved_stdin = dup(STDIN_FILENO);
    dup2(fds[0], STDIN_FILENO);
    close(fds[0]);
    char input[40];
    for (int i = 0; i < 40; i++)
        input[i] = (char)('a' + i % 26);
    assert_int_equal(write(fds[1], input, sizeof(input)), (ssize_t)sizeof(input));
    close(fds[1]);

    struct evloop *loop = evloop_new();
    struct bus *pio = bus_new("pio");
    struct fake_irq irq;
    fake_irq_init(&irq);
    struct fake_vm vm;
    fake_vm_init(&vm);
    struct chardev *chr = chardev_open("stdio", loop, &vm.ctl);
    assert_non_null(chr);
    struct serial *s = serial_new(pio, COM1, GSI, &irq.sink, chr);
    io_out(pio, COM1 + FCR, 0x01, 1);
    io_out(pio, COM1 + IER, 0x01, 1);

    struct reader r = {.pio = pio, .irq = &irq, .loop = loop};
    struct evtimer *poll = evtimer_new(loop, reader_poll, &r);
    evtimer_arm(poll, 1000 * 1000, 1000 * 1000);
    struct evtimer *guard = evtimer_new(loop, stop_loop, loop); /* only if input stalls */
    evtimer_arm(guard, 5000ULL * 1000 * 1000, 0);
    evloop_run(loop);
    evtimer_free(poll);
    evtimer_free(guard);

    assert_int_equal(r.n, sizeof(r.got));
    assert_memory_equal(r.got, input, sizeof(r.got));
    assert_int_equal(r.overruns, 0);
    assert_true(r.polls_with_irq >= 3); /* at least 3 FIFO-fulls raised the line */
    assert_false(irq.level[GSI]);
    assert_int_equal(vm.nr_events, 0); /* EOF does not quit */

    serial_free(s);
    chardev_close(chr);
    bus_free(pio);
    evloop_free(loop);
    dup2(saved_stdin, STDIN_FILENO);
    close(saved_stdin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_divisor_latch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thr_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loopback_and_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linux_probe_sees_16550a, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_accesses, setup, teardown),
        cmocka_unit_test(test_output_to_file_chardev),
        cmocka_unit_test(test_input_flow_control),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
