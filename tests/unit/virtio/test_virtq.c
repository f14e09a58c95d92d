/* Split virtqueue parsing: normal, indirect and EVENT_IDX behaviour, and
 * every hostile ring we know of (each must fail cleanly; ASan watches for
 * out-of-bounds accesses). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "hw/virtio/virtq.h"
#include "vtest.h"

#define QSZ 8

struct ring_fixture {
    struct vtest t;
    struct vt_ring r;
    struct virtq vq;
};

static void fx_setup(struct ring_fixture *f, bool event_idx, bool indirect)
{
    const char *why = NULL;
    vt_init(&f->t);
    memset(&f->r, 0, sizeof(f->r));
    f->r.size = QSZ;
    f->r.desc = vt_alloc(&f->t, 16 * QSZ, 16);
    f->r.avail = vt_alloc(&f->t, 6 + 2 * QSZ, 2);
    f->r.used = vt_alloc(&f->t, 6 + 8 * QSZ, 4);
    memset(&f->vq, 0, sizeof(f->vq));
    assert_int_equal(virtq_setup(&f->vq, &f->t.mem, QSZ, f->r.desc, f->r.avail, f->r.used,
                                 event_idx, indirect, &why),
                     0);
}

static void fx_teardown(struct ring_fixture *f)
{
    vt_fini(&f->t);
}

/* Pop must fail as hostile. */
static void expect_hostile(struct ring_fixture *f)
{
    struct virtq_elem *e = (void *)1;
    const char *why = NULL;
    assert_int_equal(virtq_pop(&f->vq, &e, &why), -EPROTO);
    assert_null(e);
    assert_non_null(why);
}

static void test_normal_chain(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t hdr = vt_alloc(&f.t, 16, 8), data = vt_alloc(&f.t, 100, 8), st = vt_alloc(&f.t, 1, 1);
    vt_set_desc(&f.t, &f.r, 3, hdr, 16, VIRTQ_DESC_F_NEXT, 5);
    vt_set_desc(&f.t, &f.r, 5, data, 100, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    vt_set_desc(&f.t, &f.r, 1, st, 1, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.r, 3);

    struct virtq_elem *e;
    const char *why;
    assert_true(virtq_has_avail(&f.vq));
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    assert_int_equal(e->head, 3);
    assert_int_equal(e->nr_out, 1);
    assert_int_equal(e->nr_in, 2);
    assert_int_equal(e->out_len, 16);
    assert_int_equal(e->in_len, 101);
    assert_ptr_equal(e->out[0].iov_base, vt_gptr(&f.t, hdr));
    assert_ptr_equal(e->in[0].iov_base, vt_gptr(&f.t, data));
    assert_ptr_equal(e->in[1].iov_base, vt_gptr(&f.t, st));
    virtq_push(&f.vq, e, 101);

    uint32_t id, len;
    assert_int_equal(vt_used_idx(&f.t, &f.r), 1);
    vt_used_elem(&f.t, &f.r, 0, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 101);
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 0);
    assert_false(virtq_has_avail(&f.vq));
    fx_teardown(&f);
}

static void test_ring_wraps(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    /* 3 * QSZ requests, one at a time: indices wrap the ring several times
     * and the 16-bit counters keep working. */
    for (unsigned i = 0; i < 3 * QSZ; i++) {
        struct virtq_elem *e;
        const char *why;
        uint16_t d = i % QSZ;
        vt_set_desc(&f.t, &f.r, d, buf, 8, VIRTQ_DESC_F_WRITE, 0);
        vt_publish(&f.t, &f.r, d);
        assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
        assert_int_equal(e->head, d);
        virtq_push(&f.vq, e, 8);
    }
    assert_int_equal(vt_used_idx(&f.t, &f.r), 3 * QSZ);
    fx_teardown(&f);
}

static void test_indirect(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, true);
    uint64_t table = vt_alloc(&f.t, 3 * 16, 16);
    uint64_t a = vt_alloc(&f.t, 10, 1), b = vt_alloc(&f.t, 20, 1), c = vt_alloc(&f.t, 30, 1);
    vt_put_desc(&f.t, table, 0, a, 10, VIRTQ_DESC_F_NEXT, 2);
    vt_put_desc(&f.t, table, 2, b, 20, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    vt_put_desc(&f.t, table, 1, c, 30, VIRTQ_DESC_F_WRITE, 0);
    /* WRITE on the indirect descriptor itself must be ignored. */
    vt_set_desc(&f.t, &f.r, 0, table, 3 * 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.r, 0);

    struct virtq_elem *e;
    const char *why;
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    assert_int_equal(e->nr_out, 1);
    assert_int_equal(e->nr_in, 2);
    assert_int_equal(e->out_len, 10);
    assert_int_equal(e->in_len, 50);
    assert_ptr_equal(e->in[1].iov_base, vt_gptr(&f.t, c));
    virtq_push(&f.vq, e, 0);
    fx_teardown(&f);
}

static void test_event_idx(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, true, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    uint64_t used_event = f.r.avail + 4 + 2 * QSZ, avail_event = f.r.used + 4 + 8 * QSZ;
    struct virtq_elem *e;
    const char *why;

    /* The driver wants an interrupt only once used->idx passes 1. */
    vt_st16(&f.t, used_event, 1);
    for (int i = 0; i < 3; i++) {
        vt_set_desc(&f.t, &f.r, i, buf, 8, VIRTQ_DESC_F_WRITE, 0);
        vt_publish(&f.t, &f.r, i);
    }
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    virtq_push(&f.vq, e, 0);
    assert_true(virtq_should_interrupt(&f.vq)); /* first one always */
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    virtq_push(&f.vq, e, 0); /* used idx 2: passes used_event 1 */
    assert_true(virtq_should_interrupt(&f.vq));
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    virtq_push(&f.vq, e, 0); /* used idx 3: used_event still 1 */
    assert_false(virtq_should_interrupt(&f.vq));
    assert_false(virtq_should_interrupt(&f.vq)); /* nothing new */

    /* Enabling notifications publishes avail_event = next index we expect. */
    virtq_set_notification(&f.vq, true);
    assert_int_equal(vt_ld16(&f.t, avail_event), 3);
    /* used flags are not used with EVENT_IDX. */
    virtq_set_notification(&f.vq, false);
    assert_int_equal(vt_ld16(&f.t, f.r.used), 0);
    fx_teardown(&f);
}

static void test_no_event_idx_flags(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    struct virtq_elem *e;
    const char *why;
    virtq_set_notification(&f.vq, false);
    assert_int_equal(vt_ld16(&f.t, f.r.used), VIRTQ_USED_F_NO_NOTIFY);
    virtq_set_notification(&f.vq, true);
    assert_int_equal(vt_ld16(&f.t, f.r.used), 0);

    vt_set_desc(&f.t, &f.r, 0, buf, 8, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.r, 0);
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    virtq_push(&f.vq, e, 0);
    assert_true(virtq_should_interrupt(&f.vq));
    vt_st16(&f.t, f.r.avail, VIRTQ_AVAIL_F_NO_INTERRUPT);
    assert_false(virtq_should_interrupt(&f.vq));
    fx_teardown(&f);
}

static void test_unpop(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    struct virtq_elem *e;
    const char *why;
    vt_set_desc(&f.t, &f.r, 2, buf, 8, VIRTQ_DESC_F_WRITE, 0);
    vt_publish(&f.t, &f.r, 2);
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    virtq_unpop(&f.vq, e);
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    assert_int_equal(e->head, 2);
    virtq_elem_free(e);
    fx_teardown(&f);
}

/* ---- hostile rings ---- */

static void test_hostile_loop(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    vt_set_desc(&f.t, &f.r, 0, buf, 8, VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&f.t, &f.r, 1, buf, 8, VIRTQ_DESC_F_NEXT, 0);
    vt_publish(&f.t, &f.r, 0);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_self_loop(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    /* Zero-length descriptors pointing at themselves: no buffers, still a loop. */
    vt_set_desc(&f.t, &f.r, 4, 0, 0, VIRTQ_DESC_F_NEXT, 4);
    vt_publish(&f.t, &f.r, 4);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_longest_chain_ok(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    /* A chain using every descriptor once is legal... */
    for (int i = 0; i < QSZ; i++)
        vt_set_desc(&f.t, &f.r, i, buf, 8, i < QSZ - 1 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    vt_publish(&f.t, &f.r, 0);
    struct virtq_elem *e;
    const char *why;
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    assert_int_equal(e->nr_out, QSZ);
    virtq_elem_free(e);
    /* ...but starting in the middle and wrapping back is a loop. */
    vt_set_desc(&f.t, &f.r, QSZ - 1, buf, 8, VIRTQ_DESC_F_NEXT, 0);
    vt_publish(&f.t, &f.r, 3);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_next_out_of_range(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    vt_set_desc(&f.t, &f.r, 0, buf, 8, VIRTQ_DESC_F_NEXT, QSZ);
    vt_publish(&f.t, &f.r, 0);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_head_out_of_range(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    vt_publish(&f.t, &f.r, 0xffff);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_avail_jump(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    vt_st16(&f.t, f.r.avail + 2, QSZ + 1);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_hostile_outside_ram(void **state)
{
    static const uint64_t bad[][2] = {
        {0, 8},                                   /* below RAM */
        {VT_RAM_BASE + VT_RAM_SIZE - 4, 8},       /* runs off the end */
        {VT_RAM_BASE + VT_RAM_SIZE, 1},           /* just past */
        {UINT64_MAX - 3, 16},                     /* address + len wraps */
        {VT_RAM_BASE, 0xffffffffu},               /* longer than RAM */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct ring_fixture f;
        fx_setup(&f, false, false);
        vt_set_desc(&f.t, &f.r, 0, bad[i][0], (uint32_t)bad[i][1], VIRTQ_DESC_F_WRITE, 0);
        vt_publish(&f.t, &f.r, 0);
        expect_hostile(&f);
        fx_teardown(&f);
    }
}

static void test_hostile_wrong_direction(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, false);
    uint64_t buf = vt_alloc(&f.t, 8, 8);
    vt_set_desc(&f.t, &f.r, 0, buf, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    vt_set_desc(&f.t, &f.r, 1, buf, 8, 0, 0);
    vt_publish(&f.t, &f.r, 0);
    expect_hostile(&f);
    fx_teardown(&f);
}

static void test_many_buffers(void **state)
{
    struct ring_fixture f;
    fx_setup(&f, false, true);
    /* The largest indirect table, every buffer covering all of RAM. */
    uint64_t table = vt_alloc(&f.t, 16 * 1024, 16);
    for (int i = 0; i < 1024; i++)
        vt_put_desc(&f.t, table, i, VT_RAM_BASE, VT_RAM_SIZE, i < 1023 ? VIRTQ_DESC_F_NEXT : 0,
                    i + 1);
    vt_set_desc(&f.t, &f.r, 0, table, 16 * 1024, VIRTQ_DESC_F_INDIRECT, 0);
    vt_publish(&f.t, &f.r, 0);
    /* 1024 * 1 MiB = 1 GiB: fine. */
    struct virtq_elem *e;
    const char *why;
    assert_int_equal(virtq_pop(&f.vq, &e, &why), 1);
    assert_int_equal(e->out_len, 1024 * VT_RAM_SIZE);
    virtq_elem_free(e);
    fx_teardown(&f);
}

static void test_hostile_indirect(void **state)
{
    enum { NOT_NEGOTIATED, NESTED, WITH_NEXT, BAD_LEN, ZERO_LEN, OUTSIDE, TOO_BIG, LOOP, NEXT_OOR };
    for (int c = NOT_NEGOTIATED; c <= NEXT_OOR; c++) {
        struct ring_fixture f;
        fx_setup(&f, false, c != NOT_NEGOTIATED);
        uint64_t table = vt_alloc(&f.t, 4 * 16, 16), buf = vt_alloc(&f.t, 8, 8);
        uint64_t addr = table;
        uint32_t len = 2 * 16;
        uint16_t flags = VIRTQ_DESC_F_INDIRECT;
        vt_put_desc(&f.t, table, 0, buf, 8, VIRTQ_DESC_F_NEXT, 1);
        vt_put_desc(&f.t, table, 1, buf, 8, 0, 0);
        switch (c) {
        case NESTED:
            vt_put_desc(&f.t, table, 1, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
            break;
        case WITH_NEXT:
            flags |= VIRTQ_DESC_F_NEXT;
            break;
        case BAD_LEN:
            len = 20;
            break;
        case ZERO_LEN:
            len = 0;
            break;
        case OUTSIDE:
            addr = VT_RAM_BASE + VT_RAM_SIZE - 16;
            break;
        case TOO_BIG:
            len = 16 * (VIRTQ_MAX_IOV + 1);
            break;
        case LOOP:
            vt_put_desc(&f.t, table, 1, buf, 8, VIRTQ_DESC_F_NEXT, 0);
            break;
        case NEXT_OOR:
            vt_put_desc(&f.t, table, 1, buf, 8, VIRTQ_DESC_F_NEXT, 2);
            break;
        }
        vt_set_desc(&f.t, &f.r, 0, addr, len, flags, 1);
        vt_publish(&f.t, &f.r, 0);
        expect_hostile(&f);
        fx_teardown(&f);
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* An address that is usually near or inside RAM, sometimes anywhere. */
static uint64_t rnd_addr(void)
{
    switch (rnd() % 4) {
    case 0:
        return rnd();
    case 1:
        return VT_RAM_BASE + VT_RAM_SIZE - rnd() % 64;
    default:
        return VT_RAM_BASE + rnd() % VT_RAM_SIZE;
    }
}

static bool iov_in_ram(struct vtest *t, const struct iovec *iov)
{
    const uint8_t *p = iov->iov_base;
    return p >= t->ram && iov->iov_len <= VT_RAM_SIZE &&
           (size_t)(p - t->ram) <= VT_RAM_SIZE - iov->iov_len;
}

/* Random rings and chains: pop must never crash or hand out memory outside
 * RAM (ASan checks the copies), whatever the guest wrote. */
static void test_random_rings(void **state)
{
    unsigned popped = 0, refused = 0;
    for (int round = 0; round < 300; round++) {
        struct ring_fixture f;
        fx_setup(&f, rnd() & 1, rnd() & 1);
        uint64_t table = vt_alloc(&f.t, 16 * 16, 16);
        for (int i = 0; i < QSZ; i++)
            vt_set_desc(&f.t, &f.r, i, rnd() % 3 ? rnd_addr() : table, (uint32_t)(rnd() % 600),
                        (uint16_t)(rnd() & 7), (uint16_t)(rnd() % (QSZ + 2)));
        for (int i = 0; i < 16; i++)
            vt_put_desc(&f.t, table, i, rnd_addr(), (uint32_t)(rnd() % 300), (uint16_t)(rnd() & 7),
                        (uint16_t)(rnd() % 18));
        for (int i = 0; i < QSZ; i++)
            vt_publish(&f.t, &f.r, (uint16_t)(rnd() % (QSZ + 1)));
        for (int n = 0; n < QSZ + 1; n++) {
            struct virtq_elem *e;
            const char *why;
            int r = virtq_pop(&f.vq, &e, &why);
            refused += r < 0;
            if (r <= 0)
                break;
            popped++;
            for (unsigned i = 0; i < e->nr_out + e->nr_in; i++) {
                assert_true(iov_in_ram(&f.t, &e->iov[i]));
                memset(e->iov[i].iov_base, 0x5a, e->iov[i].iov_len);
            }
            virtq_push(&f.vq, e, (uint32_t)rnd());
        }
        fx_teardown(&f);
    }
    /* Both outcomes happen, so the walk is really exercised. */
    assert_true(popped > 50);
    assert_true(refused > 50);
}

static void test_setup_rejects(void **state)
{
    struct vtest t;
    struct virtq vq;
    const char *why;
    vt_init(&t);
    uint64_t base = VT_RAM_BASE + 0x1000;
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, base + 8, base + 0x100, base + 0x200, false,
                                 false, &why), -EINVAL); /* desc misaligned */
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, base, base + 0x101, base + 0x200, false, false,
                                 &why), -EINVAL); /* avail misaligned */
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, base, base + 0x100, base + 0x202, false, false,
                                 &why), -EINVAL); /* used misaligned */
    assert_int_equal(virtq_setup(&vq, &t.mem, 6, base, base + 0x100, base + 0x200, false, false,
                                 &why), -EINVAL); /* not a power of two */
    assert_int_equal(virtq_setup(&vq, &t.mem, 0, base, base + 0x100, base + 0x200, false, false,
                                 &why), -EINVAL);
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, 0x1000, base + 0x100, base + 0x200, false, false,
                                 &why), -EINVAL); /* outside RAM */
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, base, base + 0x100,
                                 VT_RAM_BASE + VT_RAM_SIZE - 16, false, false, &why),
                     -EINVAL); /* used ring runs off RAM */
    assert_false(virtq_ready(&vq));
    assert_int_equal(virtq_setup(&vq, &t.mem, 8, base, base + 0x100, base + 0x200, false, false,
                                 &why), 0);
    assert_true(virtq_ready(&vq));
    vt_fini(&t);
}

static void test_iov_helpers(void **state)
{
    uint8_t a[4] = {1, 2, 3, 4}, b[3] = {5, 6, 7}, out[8] = {0};
    struct iovec iov[2] = {{a, 4}, {b, 3}}, dst[2];
    assert_int_equal(virtq_iov_to_buf(iov, 2, 2, out, 8), 5);
    assert_memory_equal(out, ((uint8_t[]){3, 4, 5, 6, 7}), 5);
    assert_int_equal(virtq_iov_slice(iov, 2, 3, 2, dst, 2), 2);
    assert_ptr_equal(dst[0].iov_base, a + 3);
    assert_int_equal(dst[0].iov_len, 1);
    assert_int_equal(dst[1].iov_len, 1);
    assert_int_equal(virtq_iov_slice(iov, 2, 3, 5, dst, 2), -1); /* past the end */
    assert_int_equal(virtq_iov_slice(iov, 2, 0, 7, dst, 1), -1); /* dst too small */
    uint8_t z[3] = {9, 9, 9};
    assert_int_equal(virtq_iov_from_buf(iov, 2, 6, z, 3), 1);
    assert_int_equal(b[2], 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_chain),
        cmocka_unit_test(test_ring_wraps),
        cmocka_unit_test(test_indirect),
        cmocka_unit_test(test_event_idx),
        cmocka_unit_test(test_no_event_idx_flags),
        cmocka_unit_test(test_unpop),
        cmocka_unit_test(test_hostile_loop),
        cmocka_unit_test(test_hostile_self_loop),
        cmocka_unit_test(test_hostile_longest_chain_ok),
        cmocka_unit_test(test_hostile_next_out_of_range),
        cmocka_unit_test(test_hostile_head_out_of_range),
        cmocka_unit_test(test_hostile_avail_jump),
        cmocka_unit_test(test_hostile_outside_ram),
        cmocka_unit_test(test_hostile_wrong_direction),
        cmocka_unit_test(test_many_buffers),
        cmocka_unit_test(test_hostile_indirect),
        cmocka_unit_test(test_random_rings),
        cmocka_unit_test(test_setup_rejects),
        cmocka_unit_test(test_iov_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
