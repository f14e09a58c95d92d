/* Character backends: file output, null, bad specs, and stdio input (from a
 * pipe) with the Ctrl-A escapes and EOF handling. */
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
#include "core/util.h"
#include "fakes.h"

struct sink {
    uint8_t buf[256];
    size_t len;
    size_t room; /* flow control: how many more bytes the sink takes */
};

static size_t sink_can_receive(void *opaque)
{
    struct sink *s = opaque;
    return MIN(s->room, sizeof(s->buf) - s->len);
}

static void sink_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct sink *s = opaque;
    assert_true(len <= sink_can_receive(s));
    memcpy(s->buf + s->len, buf, len);
    s->len += len;
    s->room -= len;
}

static void stop_loop(void *opaque) { evloop_stop(opaque, 0); }

static void run_loop_briefly(struct evloop *loop)
{
    struct evtimer *t = evtimer_new(loop, stop_loop, loop);
    evtimer_arm(t, 100 * 1000 * 1000, 0);
    evloop_run(loop);
    evtimer_free(t);
}

static void test_file_and_null(void **state)
{
    (void)state;
    assert_null(chardev_open("bogus", NULL, NULL));
    assert_null(chardev_open("file:", NULL, NULL));
    assert_null(chardev_open("file:/nonexistent-dir/x", NULL, NULL));
    assert_null(chardev_open(NULL, NULL, NULL));

    struct chardev *n = chardev_open("null", NULL, NULL);
    assert_non_null(n);
    assert_int_equal(chardev_write(n, "abc", 3), 3);
    chardev_accept_input(n);
    chardev_close(n);
    n = chardev_open("none", NULL, NULL);
    assert_non_null(n);
    chardev_close(n);

    char path[] = "/tmp/ember-test-chardev-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "old contents", 12), 12);
    close(fd);
    char spec[64];
    snprintf(spec, sizeof(spec), "file:%s", path);
    struct chardev *c = chardev_open(spec, NULL, NULL);
    assert_non_null(c);
    uint8_t bytes[] = {'a', '\n', 0x01, 0x00, 0xff, '\r'}; /* nothing translated */
    assert_int_equal(chardev_write(c, bytes, sizeof(bytes)), (ssize_t)sizeof(bytes));
    chardev_close(c);
    uint8_t got[32];
    fd = open(path, O_RDONLY);
    assert_int_equal(read(fd, got, sizeof(got)), (ssize_t)sizeof(bytes));
    close(fd);
    unlink(path);
    assert_memory_equal(got, bytes, sizeof(bytes));
}

/* Replace stdin with a pipe holding data (write end closed: EOF after it). */
static int stdin_from(const void *data, size_t len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDIN_FILENO);
    dup2(fds[0], STDIN_FILENO);
    close(fds[0]);
    assert_int_equal(write(fds[1], data, len), (ssize_t)len);
    close(fds[1]);
    return saved;
}

static void stdin_restore(int saved)
{
    dup2(saved, STDIN_FILENO);
    close(saved);
}

static void test_stdio_escapes(void **state)
{
    (void)state;
    /* "ab", C-a a (literal C-a), C-a z (dropped), "c", C-a x (quit), "d". */
    const uint8_t in[] = {'a', 'b', 0x01, 'a', 0x01, 'z', 'c', 0x01, 'x', 'd'};
    int saved = stdin_from(in, sizeof(in));
    struct evloop *loop = evloop_new();
    struct fake_vm vm;
    fake_vm_init(&vm);
    struct chardev *c = chardev_open("stdio", loop, &vm.ctl);
    assert_non_null(c);
    assert_null(chardev_open("stdio", loop, &vm.ctl)); /* one user of stdio */
    struct sink s = {.room = 1000};
    const struct chardev_frontend fe = {&s, sink_can_receive, sink_receive};
    chardev_set_frontend(c, &fe);
    run_loop_briefly(loop);
    const uint8_t want[] = {'a', 'b', 0x01, 'c', 'd'};
    assert_int_equal(s.len, sizeof(want));
    assert_memory_equal(s.buf, want, sizeof(want));
    assert_int_equal(vm.nr_events, 1);
    assert_int_equal(vm.last_event, VM_EVENT_QUIT);
    chardev_close(c);
    evloop_free(loop);
    stdin_restore(saved);
}

/* can_receive() == 0 stops reading until chardev_accept_input(), which the
 * sink calls (from a loop callback, as a device on a vCPU thread would). */
struct throttled_sink {
    struct sink s;
    struct chardev *chr;
    struct evloop *loop;
    unsigned refusals, refills;
    size_t want;
};

static size_t throttled_can_receive(void *opaque)
{
    struct throttled_sink *t = opaque;
    size_t n = sink_can_receive(&t->s);
    if (!n)
        t->refusals++;
    return n;
}

static void refill(void *opaque)
{
    struct throttled_sink *t = opaque;
    t->refills++;
    t->s.room = 30;
    chardev_accept_input(t->chr);
    chardev_accept_input(t->chr); /* twice is harmless */
}

static void throttled_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct throttled_sink *t = opaque;
    sink_receive(&t->s, buf, len);
    if (t->s.len == t->want)
        evloop_stop(t->loop, 0);
    else if (t->s.room == 0)
        evloop_call(t->loop, refill, t); /* after the chardev saw "full" */
}

static void test_stdio_flow_control(void **state)
{
    (void)state;
    char in[100];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (char)('0' + i % 10);
    int saved = stdin_from(in, sizeof(in));
    struct evloop *loop = evloop_new();
    struct chardev *c = chardev_open("mon:stdio", loop, NULL);
    assert_non_null(c);
    struct throttled_sink t = {.s = {.room = 30}, .chr = c, .loop = loop, .want = sizeof(in)};
    const struct chardev_frontend fe = {&t, throttled_can_receive, throttled_receive};
    chardev_set_frontend(c, &fe);
    struct evtimer *guard = evtimer_new(loop, stop_loop, loop); /* only if input stalls */
    evtimer_arm(guard, 5000ULL * 1000 * 1000, 0);
    evloop_run(loop);
    evtimer_free(guard);
    assert_int_equal(t.s.len, sizeof(in));
    assert_memory_equal(t.s.buf, in, sizeof(in));
    assert_int_equal(t.refills, 3);
    assert_true(t.refusals >= 1);
    chardev_close(c);
    evloop_free(loop);
    stdin_restore(saved);
}

/* stdin that epoll refuses (a regular file) still delivers input. */
static void test_stdio_from_regular_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ember-test-stdin-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    lseek(fd, 0, SEEK_SET);
    int saved = dup(STDIN_FILENO);
    dup2(fd, STDIN_FILENO);
    close(fd);
    unlink(path);
    struct evloop *loop = evloop_new();
    struct chardev *c = chardev_open("stdio", loop, NULL);
    assert_non_null(c);
    struct sink s = {.room = 1000};
    const struct chardev_frontend fe = {&s, sink_can_receive, sink_receive};
    chardev_set_frontend(c, &fe);
    run_loop_briefly(loop);
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.buf, "hello", 5);
    chardev_set_frontend(c, NULL);
    chardev_close(c);
    evloop_free(loop);
    stdin_restore(saved);
}

/* Closing with loop callbacks still queued: evloop_free() runs them later. */
static void test_close_with_queued_callbacks(void **state)
{
    (void)state;
    char path[] = "/tmp/ember-test-stdin-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "data", 4), 4);
    lseek(fd, 0, SEEK_SET);
    int saved = dup(STDIN_FILENO);
    dup2(fd, STDIN_FILENO);
    close(fd);
    unlink(path);
    struct evloop *loop = evloop_new();
    struct chardev *c = chardev_open("stdio", loop, NULL);
    assert_non_null(c);
    struct sink s = {.room = 1000};
    const struct chardev_frontend fe = {&s, sink_can_receive, sink_receive};
    chardev_set_frontend(c, &fe); /* queues a read on the loop */
    chardev_accept_input(c);      /* and a resume */
    chardev_close(c);
    evloop_free(loop); /* runs both; they must see the chardev closed */
    assert_int_equal(s.len, 0);
    stdin_restore(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_and_null),
        cmocka_unit_test(test_stdio_escapes),
        cmocka_unit_test(test_stdio_flow_control),
        cmocka_unit_test(test_stdio_from_regular_file),
        cmocka_unit_test(test_close_with_queued_callbacks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
