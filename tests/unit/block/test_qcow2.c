/* Unit tests for qcow2: header validation, and a randomized model check of
 * the read/write/zero/discard paths (against a flat shadow copy) across
 * cluster sizes, refcount widths, extended L2, v2/v3, backing files, small
 * L2 caches and compressed clusters; a crash test that kills a writer with
 * SIGKILL many times and checks every flushed sector (KILL_ROUNDS=N for
 * more rounds). When qemu-img is installed, every image written here must
 * also pass `qemu-img check`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"
#include "core/evloop.h"
#include "core/util.h"

static char tmpdir[] = "/tmp/ember-test-qcow2-XXXXXX";

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

static bool have_qemu_img(void)
{
    return system("qemu-img --version >/dev/null 2>&1") == 0;
}

static void qemu_check(const char *path)
{
    if (!have_qemu_img())
        return;
    char *cmd = xasprintf("qemu-img check -q '%s'", path);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "qemu-img check failed for %s\n", path);
    assert_int_equal(rc, 0);
    free(cmd);
}

/* ---- header validation ---- */

static void put32(uint8_t *b, size_t off, uint32_t v) { st32(b + off, htobe32(v)); }
static void put64(uint8_t *b, size_t off, uint64_t v) { st64(b + off, htobe64(v)); }

static void make_header(uint8_t *b)
{
    memset(b, 0, 4096);
    put32(b, 0, 0x514649fb);
    put32(b, 4, 3);
    put32(b, 20, 16);             /* 64 KiB clusters */
    put64(b, 24, 1 << 20);        /* 1 MiB */
    put32(b, 36, 1);
    put64(b, 40, 3 * 65536);
    put64(b, 48, 65536);
    put32(b, 56, 1);
    put32(b, 96, 4);
    put32(b, 100, 112);
}

static void test_header_validation(void **state)
{
    (void)state;
    uint8_t b[4096];
    const uint64_t fs = 4 * 65536;
    make_header(b);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), 0);
    make_header(b); put32(b, 0, 0x12345678);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 4, 4);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -ENOTSUP);
    make_header(b); put32(b, 20, 8);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 20, 22);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 36, 0); /* L1 too small for 1 MiB */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 36, 0x1000000); /* absurd L1 */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EFBIG);
    make_header(b); put64(b, 40, 3 * 65536 + 8); /* unaligned L1 */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put64(b, 40, 100 * 65536); /* L1 past EOF */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put64(b, 48, 0);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 56, 0);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 96, 7);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 100, 50);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 32, 1); /* AES */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -ENOTSUP);
    make_header(b); put64(b, 8, 65530); put32(b, 16, 100); /* backing name crosses cluster */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    make_header(b); put32(b, 60, 1); put64(b, 64, 0); /* snapshot table at 0? aligned, ok */
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), 0);
    make_header(b); put32(b, 60, 100000);
    assert_int_equal(qcow2_validate_header(b, sizeof(b), fs, "t"), -EINVAL);
    assert_int_equal(qcow2_validate_header(b, 50, fs, "t"), -EINVAL);
}

/* Unknown incompatible feature bits are refused, naming the bit. */
static void test_unknown_feature(void **state)
{
    (void)state;
    char *p = tmp_path("feat.qcow2");
    struct qcow2_create_opts o = { .size = MiB };
    assert_int_equal(qcow2_create(p, &o), 0);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    uint64_t v = htobe64(1ULL << 40);
    fseek(f, 72, SEEK_SET);
    fwrite(&v, 8, 1, f);
    fclose(f);
    struct block_dev *bd;
    struct block_open_opts bo = { .format = "qcow2" };
    assert_int_equal(block_open(p, &bo, &bd), -ENOTSUP);
    /* The corrupt bit forces read-only. */
    assert_int_equal(qcow2_create(p, &o), 0);
    f = fopen(p, "r+b");
    v = htobe64(2);
    fseek(f, 72, SEEK_SET);
    fwrite(&v, 8, 1, f);
    fclose(f);
    assert_int_equal(block_open(p, &bo, &bd), 0);
    assert_true(block_is_readonly(bd));
    block_close(bd);
    unlink(p);
    free(p);
}

/* ---- randomized model check ---- */

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

struct model_cfg {
    const char *name;
    uint32_t cluster_size;
    uint32_t refcount_bits;
    int version;
    bool extended_l2;
    int compression_type;
    bool backing;
    uint64_t l2_cache;
};

static void fill_pattern(uint8_t *p, uint64_t n)
{
    uint8_t v = (uint8_t)rnd();
    if (rnd() % 4 == 0)
        v = 0;
    for (uint64_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v + (i & 0x0f ? 0 : (uint8_t)i));
}

static void run_model(const struct model_cfg *c)
{
    const uint64_t size = 3 * MiB + 512 * 3;
    char *img = tmp_path("model.qcow2"), *base = tmp_path("base.raw");
    uint8_t *shadow = xzalloc(size), *buf = xmalloc(size);
    if (c->backing) {
        FILE *f = fopen(base, "wb");
        for (uint64_t i = 0; i < size; i++)
            shadow[i] = (uint8_t)(i * 7 + (i >> 12));
        fwrite(shadow, 1, size, f);
        fclose(f);
    }
    struct qcow2_create_opts o = {
        .size = size, .cluster_size = c->cluster_size, .refcount_bits = c->refcount_bits,
        .version = c->version, .extended_l2 = c->extended_l2,
        .compression_type = c->compression_type,
        .backing_file = c->backing ? "base.raw" : NULL, .backing_fmt = c->backing ? "raw" : NULL,
    };
    assert_int_equal(qcow2_create(img, &o), 0);
    struct block_open_opts bo = { .format = "qcow2", .l2_cache_size = c->l2_cache };
    struct block_dev *bd;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    assert_int_equal(block_length(bd), size);
    uint32_t cs = qcow2_cluster_size(bd);

    for (int step = 0; step < 400; step++) {
        uint64_t op = rnd() % 10, off, len;
        if (rnd() % 3 == 0) {
            off = (rnd() % (size / cs)) * cs;
            uint64_t want = (1 + rnd() % 3) * cs; /* MIN() evaluates twice */
            len = MIN(want, size - off);
        } else {
            off = rnd() % size;
            uint64_t span = MIN(size - off, 3 * (uint64_t)cs);
            len = 1 + rnd() % span;
        }
        if (getenv("MODEL_TRACE"))
            fprintf(stderr, "step %d op %llu off %llu len %llu\n", step, (unsigned long long)op,
                    (unsigned long long)off, (unsigned long long)len);
        if (op < 5) {
            fill_pattern(buf, len);
            assert_int_equal(block_pwrite(bd, off, buf, len), 0);
            memcpy(shadow + off, buf, len);
        } else if (op < 6) {
            assert_int_equal(block_write_zeroes(bd, off, len, rnd() % 2), 0);
            memset(shadow + off, 0, len);
        } else if (op < 7) {
            /* Discard may leave old or backing data: re-read to learn what it left. */
            assert_int_equal(block_discard(bd, off, len), 0);
            assert_int_equal(block_pread(bd, off, shadow + off, len), 0);
        } else if (op < 8 && off % cs == 0 && len >= cs) {
            fill_pattern(buf, cs);
            if (rnd() % 2)
                memset(buf + cs / 2, 0, cs / 2); /* compressible */
            assert_int_equal(qcow2_write_compressed(bd, off, buf, cs), 0);
            memcpy(shadow + off, buf, cs);
        } else {
            int rr = block_pread(bd, off, buf, len);
            if (rr) fprintf(stderr, "off %llu len %llu rr %d\n", (unsigned long long)off, (unsigned long long)len, rr);
            assert_int_equal(rr, 0);
            assert_memory_equal(buf, shadow + off, len);
        }
    }
    assert_int_equal(block_pread(bd, 0, buf, size), 0);
    assert_memory_equal(buf, shadow, size);
    struct qcow2_check_result r;
    assert_int_equal(qcow2_check(bd, 0, &r), 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    block_close(bd);
    qemu_check(img);

    /* Reopen: everything persisted. */
    bo.readonly = true;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    assert_int_equal(block_pread(bd, 0, buf, size), 0);
    assert_memory_equal(buf, shadow, size);
    block_close(bd);
    unlink(img);
    unlink(base);
    free(img);
    free(base);
    free(shadow);
    free(buf);
}

static const struct model_cfg configs[] = {
    { "default", 0, 0, 3, false, 0, false, 0 },
    { "v2", 0, 0, 2, false, 0, false, 0 },
    { "512B-rc1", 512, 1, 3, false, 0, false, 0 },
    { "512B-rc64-v2-backing", 512, 0, 2, false, 0, true, 0 },
    { "4K-rc2-tinycache", 4096, 2, 3, false, 0, false, 1 },
    { "4K-rc8-backing", 4096, 8, 3, false, 1, true, 8192 },
    { "64K-rc32-zstd", 65536, 32, 3, false, 1, false, 0 },
    { "2M", 2 * 1024 * 1024, 64, 3, false, 0, false, 0 },
    { "extl2-16K", 16384, 16, 3, true, 0, false, 0 },
    { "extl2-64K-backing", 65536, 4, 3, true, 0, true, 0 },
    { "extl2-32K-zstd-backing", 32768, 16, 3, true, 1, true, 0 },
};

static void test_model(void **state)
{
    (void)state;
    if (getenv("MODEL_SEED"))
        rng_state = strtoull(getenv("MODEL_SEED"), NULL, 0) | 1;
    for (size_t i = 0; i < ARRAY_SIZE(configs); i++) {
        fprintf(stderr, "model: %s\n", configs[i].name);
        run_model(&configs[i]);
    }
}

/* Growing the virtual size keeps data and passes checks. */
static void test_grow(void **state)
{
    (void)state;
    char *img = tmp_path("grow.qcow2");
    struct qcow2_create_opts o = { .size = 64 * KiB, .cluster_size = 512 };
    assert_int_equal(qcow2_create(img, &o), 0);
    struct block_open_opts bo = { .format = "qcow2" };
    struct block_dev *bd;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    uint8_t b[512];
    memset(b, 0x5a, sizeof(b));
    assert_int_equal(block_pwrite(bd, 1024, b, sizeof(b)), 0);
    assert_int_equal(qcow2_grow(bd, 8 * MiB), 0);
    assert_int_equal(block_length(bd), 8 * MiB);
    assert_int_equal(block_pwrite(bd, 8 * MiB - 512, b, sizeof(b)), 0);
    uint8_t r[512];
    assert_int_equal(block_pread(bd, 1024, r, sizeof(r)), 0);
    assert_memory_equal(r, b, sizeof(b));
    struct qcow2_check_result res;
    assert_int_equal(qcow2_check(bd, 0, &res), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    block_close(bd);
    qemu_check(img);
    unlink(img);
    free(img);
}

/* Leaked clusters are found and repaired. */
static void test_check_repair(void **state)
{
    (void)state;
    char *img = tmp_path("leak.qcow2");
    struct qcow2_create_opts o = { .size = MiB };
    assert_int_equal(qcow2_create(img, &o), 0);
    /* Bump the refcount of cluster 1 (the refcount table) from 1 to 2. */
    FILE *f = fopen(img, "r+b");
    uint16_t two = htobe16(2);
    fseek(f, 2 * 65536 + 2, SEEK_SET);
    fwrite(&two, 2, 1, f);
    fclose(f);
    struct block_open_opts bo = { .format = "qcow2" };
    struct block_dev *bd;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    struct qcow2_check_result r;
    assert_int_equal(qcow2_check(bd, 0, &r), 0);
    assert_int_equal(r.leaks, 1);
    assert_int_equal(qcow2_check(bd, QCOW2_FIX_LEAKS, &r), 0);
    assert_int_equal(r.leaks_fixed, 1);
    assert_int_equal(qcow2_check(bd, 0, &r), 0);
    assert_int_equal(r.leaks, 0);
    block_close(bd);
    unlink(img);
    free(img);
}

/* Backing chains: loops are refused, relative names resolve. */
static void test_backing_loop(void **state)
{
    (void)state;
    char *a = tmp_path("a.qcow2"), *b = tmp_path("b.qcow2");
    struct qcow2_create_opts o = { .size = MiB, .backing_file = "b.qcow2", .backing_fmt = "qcow2" };
    assert_int_equal(qcow2_create(a, &o), 0);
    o.backing_file = "a.qcow2";
    assert_int_equal(qcow2_create(b, &o), 0);
    struct block_open_opts bo = { .format = "qcow2", .readonly = true };
    struct block_dev *bd;
    assert_int_equal(block_open(a, &bo, &bd), -ELOOP);
    o.backing_file = NULL;
    o.backing_fmt = NULL;
    assert_int_equal(qcow2_create(b, &o), 0);
    assert_int_equal(block_open(a, &bo, &bd), 0);
    assert_non_null(block_backing(bd));
    block_close(bd);
    unlink(a);
    unlink(b);
    free(a);
    free(b);
}

/* qcow2 requests through an event loop (worker threads). */
struct actx {
    struct evloop *loop;
    int left, errors;
};

static void adone(void *opaque, int ret)
{
    struct actx *c = opaque;
    if (ret < 0)
        c->errors++;
    if (--c->left == 0)
        evloop_stop(c->loop, 0);
}

static void test_async(void **state)
{
    (void)state;
    char *img = tmp_path("async.qcow2");
    struct qcow2_create_opts o = { .size = 4 * MiB };
    assert_int_equal(qcow2_create(img, &o), 0);
    struct actx c = { .loop = evloop_new() };
    struct block_open_opts bo = { .format = "qcow2", .loop = c.loop };
    struct block_dev *bd;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    static uint8_t bufs[32][8192];
    static struct iovec iov[32];
    struct block_request req[32];
    for (int i = 0; i < 32; i++) {
        memset(bufs[i], i + 1, sizeof(bufs[i]));
        iov[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
        req[i] = (struct block_request){ .op = BLOCK_OP_WRITE, .offset = (uint64_t)i * 100000,
                                         .iov = &iov[i], .iovcnt = 1, .done = adone,
                                         .opaque = &c };
        c.left++;
        assert_int_equal(block_submit(bd, &req[i]), 0);
    }
    assert_int_equal(evloop_run(c.loop), 0);
    assert_int_equal(c.errors, 0);
    block_close(bd);
    evloop_free(c.loop);
    bo.loop = NULL;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    for (int i = 0; i < 32; i++) {
        uint8_t r[8192];
        assert_int_equal(block_pread(bd, (uint64_t)i * 100000, r, sizeof(r)), 0);
        assert_memory_equal(r, bufs[i], sizeof(r));
    }
    block_close(bd);
    qemu_check(img);
    unlink(img);
    free(img);
}

/* ---- crash safety ----
 * A child process does random writes, zero writes, discards, compressed
 * writes and flushes, and is killed with SIGKILL at a random moment. It
 * records in memory shared with the parent what each 512-byte sector held
 * at the last completed flush and what it has done since, so the parent can
 * tell exactly which contents each sector may legitimately have: a sector
 * untouched since the last flush must hold its flushed value; one touched
 * since may hold its flushed value or anything written to it since. Every
 * sector's bytes name the sector and the write generation, so stale or
 * misplaced data is caught. The image must also pass `qemu-img check`
 * (leaks allowed, corruptions not). */
#define KILL_SIZE (4 * MiB)
#define KILL_SECTORS (KILL_SIZE / 512)
#define GEN_INVALID UINT32_MAX

struct kill_state {
    uint32_t committing;        /* a flush returned; the records are being updated */
    uint32_t epoch_start;       /* generations >= this were written after the last flush */
    uint32_t durable[KILL_SECTORS];
    uint32_t last[KILL_SECTORS];
    uint8_t dirty[KILL_SECTORS];  /* touched since the last flush */
    uint8_t zeroed[KILL_SECTORS]; /* zeroed or discarded since the last flush */
};

static void sector_fill(uint8_t *p, uint32_t sector, uint32_t gen)
{
    st32(p, htole32(sector));
    st32(p + 4, htole32(gen));
    for (unsigned i = 8; i < 512; i++)
        p[i] = (uint8_t)(gen * 31 + i / 64); /* runs of equal bytes: compressible */
}

/* The generation a sector's bytes hold: 0 for zeroes, GEN_INVALID for bytes
 * no write put there. */
static uint32_t sector_gen(const uint8_t *p, uint32_t sector)
{
    bool zero = true;
    for (unsigned i = 0; i < 512 && zero; i++)
        zero = p[i] == 0;
    if (zero)
        return 0;
    uint32_t gen = le32toh(ld32(p + 4));
    uint8_t want[512];
    sector_fill(want, sector, gen);
    return gen && memcmp(p, want, 512) == 0 ? gen : GEN_INVALID;
}

static void kill_touch(struct kill_state *ks, uint64_t first, uint64_t n, uint32_t gen, bool zero)
{
    for (uint64_t s = first; s < first + n; s++) {
        ks->dirty[s] = 1;
        ks->zeroed[s] |= zero;
        ks->last[s] = gen;
    }
}

static void kill_flushed(struct kill_state *ks, uint32_t next_gen)
{
    __atomic_store_n(&ks->committing, 1, __ATOMIC_SEQ_CST);
    for (uint64_t s = 0; s < KILL_SECTORS; s++) {
        if (ks->dirty[s]) {
            ks->durable[s] = ks->last[s];
            ks->zeroed[s] = 0;
            ks->dirty[s] = 0;
        }
    }
    ks->epoch_start = next_gen;
    __atomic_store_n(&ks->committing, 0, __ATOMIC_SEQ_CST);
}

static _Noreturn void kill_writer(const char *img, struct kill_state *ks, uint32_t cs)
{
    struct block_open_opts bo = { .format = "qcow2" };
    struct block_dev *bd;
    if (block_open(img, &bo, &bd) < 0)
        _exit(1);
    static uint8_t buf[16 * 4096];
    uint32_t gen = ks->epoch_start;
    for (;;) {
        uint64_t blocks = KILL_SIZE / 4096, b = rnd() % blocks, n = 1 + rnd() % 4;
        n = MIN(n, blocks - b);
        uint64_t off = b * 4096, len = n * 4096, first = off / 512, nsec = len / 512;
        unsigned op = rnd() % 10;
        if (op < 5) { /* plain write, maybe not 4K-aligned at its ends */
            uint64_t skip = rnd() % 2 ? 512 * (rnd() % 8) : 0;
            for (uint64_t k = 0; k < nsec - skip / 512; k++)
                sector_fill(buf + k * 512, (uint32_t)(first + skip / 512 + k), gen + (uint32_t)k);
            for (uint64_t k = 0; k < nsec - skip / 512; k++)
                kill_touch(ks, first + skip / 512 + k, 1, gen + (uint32_t)k, false);
            if (block_pwrite(bd, off + skip, buf, len - skip) < 0)
                _exit(2);
            gen += (uint32_t)nsec;
        } else if (op < 6) {
            kill_touch(ks, first, nsec, 0, true);
            if (block_write_zeroes(bd, off, len, rnd() % 2) < 0)
                _exit(3);
        } else if (op < 7) {
            /* Discard may keep the data (partial clusters): learn what it left. */
            for (uint64_t s = first; s < first + nsec; s++)
                ks->dirty[s] = ks->zeroed[s] = 1;
            if (block_discard(bd, off, len) < 0 || block_pread(bd, off, buf, len) < 0)
                _exit(4);
            for (uint64_t k = 0; k < nsec; k++)
                ks->last[first + k] = sector_gen(buf + k * 512, (uint32_t)(first + k));
        } else if (op < 8 && cs == 4096) {
            for (uint64_t k = 0; k < 8; k++)
                sector_fill(buf + k * 512, (uint32_t)(first + k), gen + (uint32_t)k);
            kill_touch(ks, first, 8, 0, false);
            for (uint64_t k = 0; k < 8; k++)
                ks->last[first + k] = gen + (uint32_t)k;
            if (qcow2_write_compressed(bd, off, buf, 4096) < 0)
                _exit(5);
            gen += 8;
        } else {
            if (block_flush(bd) < 0)
                _exit(6);
            kill_flushed(ks, gen);
        }
    }
}

/* Every sector holds a value the writer's records allow. */
static void kill_verify(const char *img, const struct kill_state *ks)
{
    struct block_open_opts bo = { .format = "qcow2", .readonly = true };
    struct block_dev *bd;
    assert_int_equal(block_open(img, &bo, &bd), 0);
    uint8_t *data = xmalloc(KILL_SIZE);
    assert_int_equal(block_pread(bd, 0, data, KILL_SIZE), 0);
    block_close(bd);
    bool committing = ks->committing;
    for (uint64_t s = 0; s < KILL_SECTORS; s++) {
        uint32_t v = sector_gen(data + s * 512, (uint32_t)s);
        bool ok;
        if (committing)
            ok = v == (ks->dirty[s] ? ks->last[s] : ks->durable[s]);
        else if (!ks->dirty[s])
            ok = v == ks->durable[s];
        else
            ok = v == ks->durable[s] || (v == 0 && ks->zeroed[s]) ||
                 (v != GEN_INVALID && v != 0 && v >= ks->epoch_start);
        if (!ok)
            fprintf(stderr, "sector %llu holds generation %u; flushed %u, last %u, dirty %u, "
                    "epoch %u\n", (unsigned long long)s, v, ks->durable[s], ks->last[s],
                    ks->dirty[s], ks->epoch_start);
        assert_true(ok);
    }
    free(data);
}

/* qemu-img check: leaks (exit 3) are the price of a crash, corruption is not. */
static void qemu_check_after_crash(const char *path)
{
    if (!have_qemu_img())
        return;
    char *cmd = xasprintf("qemu-img check -q '%s'", path);
    int rc = system(cmd);
    free(cmd);
    assert_true(WIFEXITED(rc));
    if (WEXITSTATUS(rc) != 0 && WEXITSTATUS(rc) != 3)
        fprintf(stderr, "qemu-img check exit %d for %s\n", WEXITSTATUS(rc), path);
    assert_true(WEXITSTATUS(rc) == 0 || WEXITSTATUS(rc) == 3);
}

static void test_kill_safety(void **state)
{
    (void)state;
    static const struct qcow2_create_opts cfgs[] = {
        { .size = KILL_SIZE, .cluster_size = 4096, .refcount_bits = 4 },
        { .size = KILL_SIZE, .cluster_size = 512 },
        { .size = KILL_SIZE, .cluster_size = 65536, .extended_l2 = true },
        { .size = KILL_SIZE, .cluster_size = 16384, .version = 2, .refcount_bits = 16 },
    };
    int rounds = getenv("KILL_ROUNDS") ? atoi(getenv("KILL_ROUNDS")) : 32;
    char *img = tmp_path("kill.qcow2");
    struct kill_state *ks = mmap(NULL, sizeof(*ks), PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(ks != MAP_FAILED);
    for (int round = 0; round < rounds; round++) {
        const struct qcow2_create_opts *o = &cfgs[round % ARRAY_SIZE(cfgs)];
        assert_int_equal(qcow2_create(img, o), 0);
        memset(ks, 0, sizeof(*ks));
        ks->epoch_start = 1;
        rng_state += 0x1234567;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            kill_writer(img, ks, o->cluster_size);
        struct timespec ts = { 0, (long)(5 + rnd() % 200) * 1000000L };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        assert_true(WIFSIGNALED(st)); /* killed mid-work, not exited on an error */
        qemu_check_after_crash(img);
        kill_verify(img, ks);
        /* Our own check agrees, and repairing the leaks leaves a clean image. */
        struct block_open_opts bo = { .format = "qcow2" };
        struct block_dev *bd;
        assert_int_equal(block_open(img, &bo, &bd), 0);
        struct qcow2_check_result r;
        assert_int_equal(qcow2_check(bd, QCOW2_FIX_LEAKS, &r), 0);
        assert_int_equal(r.corruptions, 0);
        block_close(bd);
        qemu_check(img);
    }
    munmap(ks, sizeof(*ks));
    unlink(img);
    free(img);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_validation),
        cmocka_unit_test(test_unknown_feature),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_check_repair),
        cmocka_unit_test(test_backing_loop),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_kill_safety),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char *cmd = xasprintf("rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    free(cmd);
    return rc;
}
