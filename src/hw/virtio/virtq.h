/* Split virtqueues (virtio 1.2, section 2.7) over guest memory.
 *
 * The driver (guest) owns the descriptor table and the available ring; the
 * device (us) owns the used ring. Every field the guest can write is read
 * once into a local and validated before use: a chain that loops, runs past
 * the queue size, points outside RAM, nests indirect tables or puts a
 * readable buffer after a writable one makes virtq_pop() fail with -EPROTO,
 * and the transport then marks the device DEVICE_NEEDS_RESET. Buffers are
 * handed out as host iovecs obtained from guest_mem_ptr(), never from
 * address arithmetic of our own.
 *
 * Not thread-safe: the owning device serializes access with its lock. */
#ifndef EMBER_HW_VIRTIO_VIRTQ_H
#define EMBER_HW_VIRTIO_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/guest_mem.h"

/* Descriptor flags. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
/* avail->flags / used->flags without EVENT_IDX. */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

/* Largest queue a device offers, and the most buffers one request may have
 * (IOV_MAX, so a chain fits one preadv/pwritev). */
#define VIRTQ_MAX_SIZE 1024
#define VIRTQ_MAX_IOV 1024

struct virtq {
    const struct guest_mem *mem;
    uint16_t size;          /* power of two; 0 while not set up */
    bool event_idx;         /* VIRTIO_F_EVENT_IDX negotiated */
    bool indirect;          /* VIRTIO_F_INDIRECT_DESC negotiated */
    /* Host views of the three areas, obtained once from guest_mem_ptr(). */
    uint8_t *desc;          /* 16 * size bytes */
    uint8_t *avail;         /* 6 + 2 * size bytes */
    uint8_t *used;          /* 6 + 8 * size bytes */
    uint16_t last_avail_idx; /* next avail ring slot we will consume */
    uint16_t used_idx;       /* our copy of used->idx */
    uint16_t signalled_used; /* used_idx when we last interrupted the driver */
    bool signalled_used_valid;
};

/* One request: host iovecs for the driver's readable buffers (out, first)
 * then its writable buffers (in). */
struct virtq_elem {
    uint16_t head;          /* descriptor index given back in the used ring */
    unsigned nr_out, nr_in;
    uint64_t out_len, in_len; /* byte totals */
    struct iovec *out, *in; /* point into iov */
    struct iovec iov[];
};

/* Map the three areas (size must be a power of two <= VIRTQ_MAX_SIZE,
 * desc 16-aligned, avail 2-aligned, used 4-aligned, all inside RAM).
 * Returns 0 or -EINVAL with *why set to a short reason. */
int virtq_setup(struct virtq *vq, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
                uint64_t avail_gpa, uint64_t used_gpa, bool event_idx, bool indirect,
                const char **why);
/* Forget the queue (device reset). */
void virtq_reset(struct virtq *vq);
static inline bool virtq_ready(const struct virtq *vq) { return vq->size != 0; }

/* Take the next available request. Returns 1 with *out set (free it with
 * virtq_push() or virtq_elem_free()), 0 if the ring is empty, or -EPROTO for
 * a hostile ring or chain (*why says what). */
int virtq_pop(struct virtq *vq, struct virtq_elem **out, const char **why);
/* Put a request in the used ring with `len` bytes written to its writable
 * buffers and publish it (used->idx, release order). Frees elem. */
void virtq_push(struct virtq *vq, struct virtq_elem *elem, uint32_t len);
void virtq_elem_free(struct virtq_elem *elem);
/* Put back the last popped request so the next virtq_pop() returns it
 * again (e.g. no room in a backend yet). Frees elem. */
void virtq_unpop(struct virtq *vq, struct virtq_elem *elem);

/* True if the driver has made requests available that we have not popped. */
bool virtq_has_avail(const struct virtq *vq);
/* Ask the driver to notify (enable=true) or not to bother (false) about new
 * requests. After enabling, call virtq_has_avail() again: a request made
 * while notifications were off would otherwise be missed. */
void virtq_set_notification(struct virtq *vq, bool enable);
/* After pushing: does the driver want an interrupt now? (avail flags or
 * used_event, section 2.7.7/2.7.10). Updates the EVENT_IDX bookkeeping. */
bool virtq_should_interrupt(struct virtq *vq);

/* Copy between a flat buffer and an iovec array starting `skip` bytes in.
 * Return the number of bytes copied (short when the iovecs end). */
size_t virtq_iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf,
                        size_t len);
size_t virtq_iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf,
                          size_t len);
/* Build in dst (room for dst_max entries) the part of src covering bytes
 * [skip, skip + len). Returns the number of entries, or -1 if dst is too small
 * or src shorter than skip + len. */
int virtq_iov_slice(const struct iovec *src, unsigned cnt, size_t skip, size_t len,
                    struct iovec *dst, unsigned dst_max);

#endif
