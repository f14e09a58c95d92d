#include "virtq.h"

#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Offsets inside the rings (virtio 1.2, 2.7.6 and 2.7.8). */
#define AVAIL_FLAGS 0
#define AVAIL_IDX 2
#define AVAIL_RING 4
#define USED_FLAGS 0
#define USED_IDX 2
#define USED_RING 4
#define USED_ELEM_SIZE 8
#define DESC_SIZE 16

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* The guest writes these rings concurrently: every read is a single atomic
 * load so a value is read once and cannot change under validation. The
 * fields are naturally aligned (checked in virtq_setup). */
static inline uint16_t ring_load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED);
}

static inline void ring_store16(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELAXED);
}

static inline void ring_store32(uint8_t *p, uint32_t v)
{
    __atomic_store_n((uint32_t *)(void *)p, v, __ATOMIC_RELAXED);
}

static size_t avail_area_size(uint16_t size) { return AVAIL_RING + 2u * size + 2; }
static size_t used_area_size(uint16_t size)
{
    return USED_RING + (size_t)USED_ELEM_SIZE * size + 2;
}

int virtq_setup(struct virtq *vq, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
                uint64_t avail_gpa, uint64_t used_gpa, bool event_idx, bool indirect,
                const char **why)
{
    virtq_reset(vq);
    if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1))) {
        *why = "queue size is not a power of two within the maximum";
        return -EINVAL;
    }
    if (!IS_ALIGNED(desc_gpa, 16) || !IS_ALIGNED(avail_gpa, 2) || !IS_ALIGNED(used_gpa, 4)) {
        *why = "queue area address is misaligned";
        return -EINVAL;
    }
    uint8_t *desc = guest_mem_ptr(mem, desc_gpa, (uint64_t)DESC_SIZE * size);
    uint8_t *avail = guest_mem_ptr(mem, avail_gpa, avail_area_size(size));
    uint8_t *used = guest_mem_ptr(mem, used_gpa, used_area_size(size));
    if (!desc || !avail || !used) {
        *why = "queue area lies outside guest RAM";
        return -EINVAL;
    }
    /* Host RAM is page-aligned in practice; refuse anything our atomic
     * accesses could not handle rather than trap. */
    if (((uintptr_t)avail & 1) || ((uintptr_t)used & 3)) {
        *why = "queue area is misaligned in host memory";
        return -EINVAL;
    }
    vq->mem = mem;
    vq->size = size;
    vq->event_idx = event_idx;
    vq->indirect = indirect;
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
    return 0;
}

void virtq_reset(struct virtq *vq)
{
    memset(vq, 0, sizeof(*vq));
}

bool virtq_has_avail(const struct virtq *vq)
{
    if (!virtq_ready(vq))
        return false;
    return ring_load16(vq->avail + AVAIL_IDX) != vq->last_avail_idx;
}

static void read_desc(const uint8_t *table, unsigned idx, struct desc *d)
{
    const uint8_t *p = table + (size_t)idx * DESC_SIZE;
    d->addr = ld64(p);
    d->len = ld32(p + 8);
    d->flags = ld16(p + 12);
    d->next = ld16(p + 14);
}

/* Scratch space for walking one chain; per thread because devices on
 * different threads may pop at once. */
static __thread struct iovec chain_iov[VIRTQ_MAX_IOV];

#define HOSTILE(msg)                                                                               \
    do {                                                                                           \
        *why = (msg);                                                                              \
        return -EPROTO;                                                                            \
    } while (0)

/* Walk the chain starting at head into chain_iov. */
static int walk_chain(const struct virtq *vq, uint16_t head, unsigned *nr_out, unsigned *nr_in,
                      uint64_t *out_len, uint64_t *in_len, const char **why)
{
    const uint8_t *table = vq->desc;
    unsigned table_count = vq->size, walked = 0, n = 0, idx = head;
    bool in_indirect = false, seen_write = false;
    uint64_t total = 0;

    *nr_out = *nr_in = 0;
    *out_len = *in_len = 0;
    for (;;) {
        struct desc d;
        /* A chain can visit each descriptor of its table at most once;
         * more means a loop (or a chain longer than the queue). */
        if (++walked > table_count)
            HOSTILE("descriptor chain loops or is longer than its table");
        read_desc(table, idx, &d);

        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (!vq->indirect)
                HOSTILE("indirect descriptor without VIRTIO_F_INDIRECT_DESC");
            if (in_indirect)
                HOSTILE("indirect descriptor inside an indirect table");
            if (d.flags & VIRTQ_DESC_F_NEXT)
                HOSTILE("indirect descriptor with NEXT set");
            if (d.len == 0 || d.len % DESC_SIZE || d.len / DESC_SIZE > VIRTQ_MAX_IOV)
                HOSTILE("indirect table length is invalid");
            table = guest_mem_ptr(vq->mem, d.addr, d.len);
            if (!table)
                HOSTILE("indirect table lies outside guest RAM");
            table_count = d.len / DESC_SIZE;
            in_indirect = true;
            walked = 0;
            idx = 0;
            continue;
        }

        if (d.flags & VIRTQ_DESC_F_WRITE)
            seen_write = true;
        else if (seen_write)
            HOSTILE("readable descriptor after a writable one");

        if (d.len) {
            if (n >= VIRTQ_MAX_IOV)
                HOSTILE("descriptor chain has too many buffers");
            void *host = guest_mem_ptr(vq->mem, d.addr, d.len);
            if (!host)
                HOSTILE("descriptor buffer lies outside guest RAM");
            total += d.len;
            if (total > UINT32_MAX)
                HOSTILE("descriptor chain is longer than 4 GiB");
            chain_iov[n].iov_base = host;
            chain_iov[n].iov_len = d.len;
            n++;
            if (d.flags & VIRTQ_DESC_F_WRITE) {
                (*nr_in)++;
                *in_len += d.len;
            } else {
                (*nr_out)++;
                *out_len += d.len;
            }
        }

        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= table_count)
            HOSTILE("descriptor next index out of range");
        idx = d.next;
    }
}

int virtq_pop(struct virtq *vq, struct virtq_elem **out, const char **why)
{
    *out = NULL;
    if (!virtq_ready(vq))
        return 0;
    uint16_t avail_idx = ring_load16(vq->avail + AVAIL_IDX);
    if (avail_idx == vq->last_avail_idx)
        return 0;
    if ((uint16_t)(avail_idx - vq->last_avail_idx) > vq->size)
        HOSTILE("available index moved by more than the queue size");
    /* Ring entries written before avail->idx must be read after it. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);

    unsigned slot = vq->last_avail_idx & (vq->size - 1);
    uint16_t head = ring_load16(vq->avail + AVAIL_RING + 2 * slot);
    if (head >= vq->size)
        HOSTILE("available ring names a descriptor past the queue size");

    unsigned nr_out, nr_in;
    uint64_t out_len, in_len;
    int ret = walk_chain(vq, head, &nr_out, &nr_in, &out_len, &in_len, why);
    if (ret < 0)
        return ret;

    unsigned n = nr_out + nr_in;
    struct virtq_elem *e = xmalloc(sizeof(*e) + n * sizeof(struct iovec));
    e->head = head;
    e->nr_out = nr_out;
    e->nr_in = nr_in;
    e->out_len = out_len;
    e->in_len = in_len;
    if (n)
        memcpy(e->iov, chain_iov, n * sizeof(struct iovec));
    e->out = e->iov;
    e->in = e->iov + nr_out;
    vq->last_avail_idx++;
    *out = e;
    return 1;
}

void virtq_elem_free(struct virtq_elem *elem)
{
    free(elem);
}

void virtq_unpop(struct virtq *vq, struct virtq_elem *elem)
{
    vq->last_avail_idx--;
    free(elem);
}

void virtq_push(struct virtq *vq, struct virtq_elem *elem, uint32_t len)
{
    /* The device may have written any of the writable buffers. */
    for (unsigned i = 0; vq->mem && i < elem->nr_in; i++)
        guest_mem_note_host_write(vq->mem, elem->in[i].iov_base, elem->in[i].iov_len);
    if (virtq_ready(vq)) {
        unsigned slot = vq->used_idx & (vq->size - 1);
        uint8_t *ue = vq->used + USED_RING + (size_t)USED_ELEM_SIZE * slot;
        ring_store32(ue, elem->head);
        ring_store32(ue + 4, len);
        vq->used_idx++;
        /* The element must be visible before the index that publishes it. */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        ring_store16(vq->used + USED_IDX, vq->used_idx);
    }
    free(elem);
}

void virtq_set_notification(struct virtq *vq, bool enable)
{
    if (!virtq_ready(vq))
        return;
    if (vq->event_idx) {
        /* Suppression happens by leaving avail_event behind; enabling asks
         * for a kick when the driver publishes the entry we expect next. */
        if (enable)
            ring_store16(vq->used + USED_RING + (size_t)USED_ELEM_SIZE * vq->size,
                         vq->last_avail_idx);
    } else {
        ring_store16(vq->used + USED_FLAGS, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
    }
    /* Our write must be visible before we re-read avail->idx. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool virtq_should_interrupt(struct virtq *vq)
{
    if (!virtq_ready(vq))
        return false;
    /* used->idx must be visible before we read the driver's wishes. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!vq->event_idx)
        return !(ring_load16(vq->avail + AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT);

    uint16_t old = vq->signalled_used, now = vq->used_idx;
    bool valid = vq->signalled_used_valid;
    vq->signalled_used = now;
    vq->signalled_used_valid = true;
    if (!valid)
        return true;
    uint16_t used_event = ring_load16(vq->avail + AVAIL_RING + 2u * vq->size);
    /* vring_need_event(): did used->idx step past used_event since the last interrupt? */
    return (uint16_t)(now - used_event - 1) < (uint16_t)(now - old);
}

size_t virtq_iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf,
                        size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < cnt && done < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - skip, len - done);
        memcpy((uint8_t *)buf + done, (const uint8_t *)iov[i].iov_base + skip, n);
        done += n;
        skip = 0;
    }
    return done;
}

size_t virtq_iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf,
                          size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < cnt && done < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - skip, len - done);
        memcpy((uint8_t *)iov[i].iov_base + skip, (const uint8_t *)buf + done, n);
        done += n;
        skip = 0;
    }
    return done;
}

int virtq_iov_slice(const struct iovec *src, unsigned cnt, size_t skip, size_t len,
                    struct iovec *dst, unsigned dst_max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < cnt && len; i++) {
        if (skip >= src[i].iov_len) {
            skip -= src[i].iov_len;
            continue;
        }
        if (n >= dst_max)
            return -1;
        size_t take = MIN(src[i].iov_len - skip, len);
        dst[n].iov_base = (uint8_t *)src[i].iov_base + skip;
        dst[n].iov_len = take;
        n++;
        len -= take;
        skip = 0;
    }
    return len ? -1 : (int)n;
}
