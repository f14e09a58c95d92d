/* Unit tests for src/core: size parsing, guest memory bounds, the bus, the
 * event loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "core/evloop.h"
#include "core/guest_mem.h"
#include "core/util.h"
#include "hw/bus.h"

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size("128", MiB, &v), 0);
    assert_int_equal(v, 128 * MiB);
    assert_int_equal(parse_size("2G", MiB, &v), 0);
    assert_int_equal(v, 2 * GiB);
    assert_int_equal(parse_size("64k", 1, &v), 0);
    assert_int_equal(v, 64 * KiB);
    assert_int_equal(parse_size("512MiB", 1, &v), 0);
    assert_int_equal(v, 512 * MiB);
    assert_int_equal(parse_size("", MiB, &v), -EINVAL);
    assert_int_equal(parse_size("-1", MiB, &v), -EINVAL);
    assert_int_equal(parse_size("12Q", MiB, &v), -EINVAL);
    assert_int_equal(parse_size("99999999999999999999", 1, &v), -ERANGE);
    assert_int_equal(parse_size("17179869184G", 1, &v), -ERANGE);
}

static void test_parse_u64_bool(void **state)
{
    (void)state;
    uint64_t v;
    bool b;
    assert_int_equal(parse_u64("0xf4", 0xffff, &v), 0);
    assert_int_equal(v, 0xf4);
    assert_int_equal(parse_u64("70000", 0xffff, &v), -ERANGE);
    assert_int_equal(parse_u64("4x", 0xffff, &v), -EINVAL);
    assert_int_equal(parse_bool("on", &b), 0);
    assert_true(b);
    assert_int_equal(parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_equal(parse_bool("maybe", &b), -EINVAL);
}

static void test_guest_mem_bounds(void **state)
{
    (void)state;
    static uint8_t low[4096], high[4096];
    struct guest_mem m = {0};
    assert_int_equal(guest_mem_add(&m, 0, sizeof(low), low), 0);
    assert_int_equal(guest_mem_add(&m, 1ULL << 32, sizeof(high), high), 0);
    assert_int_equal(guest_mem_add(&m, 100, 10, high), -EINVAL); /* overlap */
    assert_int_equal(guest_mem_add(&m, UINT64_MAX - 5, 10, high), -EINVAL); /* wraps */
    assert_ptr_equal(guest_mem_ptr(&m, 10, 20), low + 10);
    assert_ptr_equal(guest_mem_ptr(&m, 4096 - 4, 4), low + 4092);
    assert_null(guest_mem_ptr(&m, 4096 - 4, 5));      /* runs off the end */
    assert_null(guest_mem_ptr(&m, 4096, 1));          /* hole */
    assert_null(guest_mem_ptr(&m, 10, UINT64_MAX));   /* overflow */
    assert_null(guest_mem_ptr(&m, UINT64_MAX, 2));
    assert_ptr_equal(guest_mem_ptr(&m, (1ULL << 32) + 1, 1), high + 1);
    uint32_t x = 0x12345678, y = 0;
    assert_int_equal(guest_mem_write(&m, 8, &x, 4), 0);
    assert_int_equal(guest_mem_read(&m, 8, &y, 4), 0);
    assert_int_equal(y, x);
    assert_int_equal(guest_mem_read(&m, 4094, &y, 4), -EFAULT);
}

struct fake_dev {
    uint8_t regs[16];
    unsigned reads, writes;
};

static uint64_t fake_read(void *opaque, uint64_t off, unsigned size)
{
    struct fake_dev *d = opaque;
    d->reads++;
    uint64_t v = 0;
    memcpy(&v, d->regs + off, size);
    return v;
}

static void fake_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
    struct fake_dev *d = opaque;
    d->writes++;
    memcpy(d->regs + off, &val, size);
}

static const struct bus_ops fake_ops = {fake_read, fake_write};

static void test_bus_dispatch(void **state)
{
    (void)state;
    struct bus *bus = bus_new("pio");
    struct fake_dev a = {0}, b = {0};
    assert_int_equal(bus_register(bus, 0x100, 16, &fake_ops, &a, "a"), 0);
    assert_int_equal(bus_register(bus, 0x110, 16, &fake_ops, &b, "b"), 0);
    assert_int_equal(bus_register(bus, 0x108, 4, &fake_ops, &b, "clash"), -EEXIST);
    uint32_t v = 0xdeadbeef;
    assert_true(bus_write(bus, 0x104, &v, 4));
    assert_int_equal(ld32(a.regs + 4), 0xdeadbeef);
    /* Straddling access splits into bytes across both devices. */
    v = 0x44332211;
    assert_true(bus_write(bus, 0x10e, &v, 4));
    assert_int_equal(a.regs[14], 0x11);
    assert_int_equal(a.regs[15], 0x22);
    assert_int_equal(b.regs[0], 0x33);
    assert_int_equal(b.regs[1], 0x44);
    /* Unclaimed reads float high. */
    uint16_t w = 0;
    assert_false(bus_read(bus, 0x200, &w, 2));
    assert_int_equal(w, 0xffff);
    assert_int_equal(bus_unregister(bus, 0x110, &b), 0);
    assert_false(bus_read(bus, 0x110, &w, 2));
    assert_int_equal(bus_unregister(bus, 0x110, &b), -ENOENT);
    bus_free(bus);
}

static void stop_from_call(void *opaque)
{
    struct evloop *loop = *(struct evloop **)opaque;
    evloop_stop(loop, 7);
}

static void count_call(void *opaque) { ++*(int *)opaque; }

/* The loop runs deferred calls in order, stops with the given code, and can
 * be run again afterwards (a second stop ends the second run). */
static void test_evloop_rerun(void **state)
{
    (void)state;
    struct evloop *loop = evloop_new();
    int calls = 0;
    evloop_call(loop, count_call, &calls);
    evloop_call(loop, stop_from_call, &loop);
    assert_int_equal(evloop_run(loop), 7);
    assert_int_equal(calls, 1);

    evloop_call(loop, count_call, &calls);
    evloop_call(loop, count_call, &calls);
    evloop_stop(loop, 3); /* before the run: it returns at once, the calls wait */
    assert_int_equal(evloop_run(loop), 3);

    evloop_call(loop, stop_from_call, &loop);
    assert_int_equal(evloop_run(loop), 7);
    assert_int_equal(calls, 3);
    evloop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_u64_bool),
        cmocka_unit_test(test_guest_mem_bounds),
        cmocka_unit_test(test_bus_dispatch),
        cmocka_unit_test(test_evloop_rerun),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
