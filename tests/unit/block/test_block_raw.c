/* Unit tests for the raw driver and the async core: synchronous mode,
 * io_uring completions on an event loop, the worker-thread fallback,
 * range and read-only checks, zeroing, probing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "core/evloop.h"
#include "core/util.h"

#define IMG_SIZE (1 * MiB)

static char *make_image(uint64_t size)
{
    char *path = xstrdup("/tmp/ember-test-raw-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
    return path;
}

static void test_sync_rw(void **state)
{
    (void)state;
    char *path = make_image(IMG_SIZE);
    struct block_open_opts o = { .format = "raw" };
    struct block_dev *bd;
    assert_int_equal(block_open(path, &o, &bd), 0);
    assert_int_equal(block_length(bd), IMG_SIZE);
    assert_string_equal(block_format_name(bd), "raw");
    uint8_t buf[4096], out[4096];
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(block_pwrite(bd, 8192, buf, sizeof(buf)), 0);
    assert_int_equal(block_pread(bd, 8192, out, sizeof(out)), 0);
    assert_memory_equal(buf, out, sizeof(buf));
    assert_int_equal(block_write_zeroes(bd, 8192, 512, false), 0);
    assert_int_equal(block_pread(bd, 8192, out, 1024), 0);
    for (int i = 0; i < 512; i++)
        assert_int_equal(out[i], 0);
    assert_int_equal(out[512], 0xab);
    assert_int_equal(block_write_zeroes(bd, 8192 + 512, 4096 - 512, true), 0);
    assert_int_equal(block_pread(bd, 8192, out, 4096), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(out[i], 0);
    /* Range checks. */
    assert_int_equal(block_pread(bd, IMG_SIZE - 10, out, 11), -EINVAL);
    assert_int_equal(block_pread(bd, UINT64_MAX - 1, out, 16), -EINVAL);
    assert_int_equal(block_discard(bd, IMG_SIZE, 1), -EINVAL);
    assert_int_equal(block_flush(bd), 0);
    block_close(bd);

    o.readonly = true;
    assert_int_equal(block_open(path, &o, &bd), 0);
    assert_true(block_is_readonly(bd));
    assert_int_equal(block_pwrite(bd, 0, buf, 512), -EROFS);
    assert_int_equal(block_write_zeroes(bd, 0, 512, false), -EROFS);
    assert_int_equal(block_pread(bd, 0, out, 512), 0);
    block_close(bd);
    unlink(path);
    free(path);
}

static void test_probe_guards_block0(void **state)
{
    (void)state;
    char *path = make_image(IMG_SIZE);
    struct block_dev *bd;
    assert_int_equal(block_open(path, NULL, &bd), 0);
    assert_string_equal(block_format_name(bd), "raw");
    uint8_t hdr[512] = { 'Q', 'F', 'I', 0xfb };
    assert_int_equal(block_pwrite(bd, 0, hdr, sizeof(hdr)), -EPERM);
    hdr[0] = 'X';
    assert_int_equal(block_pwrite(bd, 0, hdr, sizeof(hdr)), 0);
    block_close(bd);
    struct block_open_opts o = { .format = "vmdk" };
    assert_int_equal(block_open(path, &o, &bd), -EINVAL);
    assert_int_equal(block_open("/nonexistent/x.img", NULL, &bd), -ENOENT);
    unlink(path);
    free(path);
}

struct async_ctx {
    struct evloop *loop;
    int outstanding;
    int errors;
    int last_ret;
};

static void async_done(void *opaque, int ret)
{
    struct async_ctx *c = opaque;
    c->last_ret = ret;
    if (ret < 0)
        c->errors++;
    if (--c->outstanding == 0)
        evloop_stop(c->loop, 0);
}

#define NREQ 200

/* evloop_run() returns at once after a stop, so each phase gets its own loop. */
static struct block_dev *reopen(struct block_dev *bd, const char *path, struct async_ctx *c)
{
    if (bd)
        block_close(bd);
    if (c->loop)
        evloop_free(c->loop);
    c->loop = evloop_new();
    struct block_open_opts o = { .format = "raw", .loop = c->loop };
    assert_int_equal(block_open(path, &o, &bd), 0);
    return bd;
}

static void run_async(bool use_uring)
{
    if (use_uring)
        unsetenv("EMBER_BLOCK_NO_URING");
    else
        setenv("EMBER_BLOCK_NO_URING", "1", 1);
    char *path = make_image(IMG_SIZE);
    struct async_ctx c = { 0 };
    struct block_dev *bd = reopen(NULL, path, &c);

    /* Many writes in flight at once (more than the ring holds), each its own block. */
    static uint8_t bufs[NREQ][4096];
    static struct iovec iov[NREQ][2];
    struct block_request req[NREQ];
    for (int i = 0; i < NREQ; i++) {
        memset(bufs[i], i + 1, sizeof(bufs[i]));
        iov[i][0] = (struct iovec){ bufs[i], 1024 };
        iov[i][1] = (struct iovec){ bufs[i] + 1024, 3072 };
        req[i] = (struct block_request){ .op = BLOCK_OP_WRITE, .offset = (uint64_t)i * 4096,
                                         .iov = iov[i], .iovcnt = 2, .done = async_done,
                                         .opaque = &c };
        c.outstanding++;
        assert_int_equal(block_submit(bd, &req[i]), 0);
    }
    assert_int_equal(evloop_run(c.loop), 0);
    assert_int_equal(c.errors, 0);

    bd = reopen(bd, path, &c);
    /* Read them back asynchronously, plus a flush and two bad requests. */
    for (int i = 0; i < NREQ; i++) {
        memset(bufs[i], 0, sizeof(bufs[i]));
        req[i].op = BLOCK_OP_READ;
        c.outstanding++;
        assert_int_equal(block_submit(bd, &req[i]), 0);
    }
    struct block_request fl = { .op = BLOCK_OP_FLUSH, .done = async_done, .opaque = &c };
    c.outstanding++;
    assert_int_equal(block_submit(bd, &fl), 0);
    assert_int_equal(evloop_run(c.loop), 0);
    assert_int_equal(c.errors, 0);
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < 4096; j++)
            assert_int_equal(bufs[i][j], (uint8_t)(i + 1));

    bd = reopen(bd, path, &c);
    struct block_request bad = { .op = BLOCK_OP_DISCARD, .offset = IMG_SIZE, .len = 512,
                                 .done = async_done, .opaque = &c };
    c.outstanding++;
    assert_int_equal(block_submit(bd, &bad), 0);
    assert_int_equal(evloop_run(c.loop), 0);
    assert_int_equal(c.last_ret, -EINVAL);

    bd = reopen(bd, path, &c);
    struct block_request wz = { .op = BLOCK_OP_WRITE_ZEROES, .offset = 0, .len = 8192,
                                .done = async_done, .opaque = &c };
    c.outstanding++;
    c.errors = 0;
    assert_int_equal(block_submit(bd, &wz), 0);
    assert_int_equal(evloop_run(c.loop), 0);
    assert_int_equal(c.errors, 0);
    uint8_t out[8192];
    assert_int_equal(block_pread(bd, 0, out, sizeof(out)), 0);
    for (size_t j = 0; j < sizeof(out); j++)
        assert_int_equal(out[j], 0);

    block_close(bd);
    evloop_free(c.loop);
    unlink(path);
    free(path);
    unsetenv("EMBER_BLOCK_NO_URING");
}

static void test_async_uring(void **state)
{
    (void)state;
    run_async(true);
}

static void test_async_pool(void **state)
{
    (void)state;
    run_async(false);
}

/* Closing with requests still queued completes them before returning. */
static void count_done(void *opaque, int ret)
{
    (void)ret;
    (*(int *)opaque)++;
}

static void close_drains(bool use_uring)
{
    if (use_uring)
        unsetenv("EMBER_BLOCK_NO_URING");
    else
        setenv("EMBER_BLOCK_NO_URING", "1", 1);
    char *path = make_image(IMG_SIZE);
    struct evloop *loop = evloop_new();
    struct block_open_opts o = { .format = "raw", .loop = loop };
    struct block_dev *bd;
    assert_int_equal(block_open(path, &o, &bd), 0);
    static uint8_t buf[64][512];
    static struct iovec iov[64];
    struct block_request req[64];
    int completed = 0;
    for (int i = 0; i < 64; i++) {
        iov[i] = (struct iovec){ buf[i], 512 };
        req[i] = (struct block_request){ .op = BLOCK_OP_READ, .offset = (uint64_t)i * 512,
                                         .iov = &iov[i], .iovcnt = 1, .done = count_done,
                                         .opaque = &completed };
        assert_int_equal(block_submit(bd, &req[i]), 0);
    }
    block_close(bd);
    assert_int_equal(completed, 64);
    evloop_free(loop);
    unlink(path);
    free(path);
    unsetenv("EMBER_BLOCK_NO_URING");
}

static void test_close_drains(void **state)
{
    (void)state;
    close_drains(true);
    close_drains(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_rw),
        cmocka_unit_test(test_probe_guards_block0),
        cmocka_unit_test(test_async_uring),
        cmocka_unit_test(test_async_pool),
        cmocka_unit_test(test_close_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
