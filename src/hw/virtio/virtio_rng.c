/* virtio-rng (virtio 1.2, 5.4): one request queue; every writable buffer
 * the driver offers is filled from the host's getrandom(). */
#include "virtio_devices.h"
#include "virtio_pci.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#define RNG_DEVICE_TYPE 4
#define RNG_QUEUE_SIZE 64
/* Bytes given per request at most: a guest asking for gigabytes gets a
 * short answer instead of stalling the event loop. */
#define RNG_MAX_PER_REQUEST (64 * 1024)

struct virtio_rng {
    struct virtio_dev *vdev;
};

static size_t fill_random(void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom((uint8_t *)buf + done, len - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_warn("virtio-rng: getrandom failed: errno %d", errno);
            break;
        }
        done += (size_t)n;
    }
    return done;
}

static void rng_handle(void *opaque, unsigned q, struct virtq_elem *e)
{
    struct virtio_rng *rng = opaque;
    size_t budget = RNG_MAX_PER_REQUEST, written = 0;
    for (unsigned i = 0; i < e->nr_in && budget; i++) {
        size_t want = MIN(e->in[i].iov_len, budget);
        size_t got = fill_random(e->in[i].iov_base, want);
        written += got;
        budget -= got;
        if (got < want)
            break;
    }
    virtq_push(virtio_dev_queue(rng->vdev, q), e, (uint32_t)written);
}

static void rng_queue_notify(void *opaque, unsigned q)
{
    struct virtio_rng *rng = opaque;
    virtio_dev_process_queue(rng->vdev, q, rng_handle, rng);
}

struct virtio_dev *virtio_rng_new(const struct virtio_env *env)
{
    static const struct virtio_device_info info = {
        .name = "virtio-rng",
        .device_type = RNG_DEVICE_TYPE,
        .class_base = 0x00, /* unclassified, "other" like QEMU's */
        .class_sub = 0xff,
        .num_queues = 1,
        .queue_size = RNG_QUEUE_SIZE,
        .queue_notify = rng_queue_notify,
        .destroy = free,
    };
    struct virtio_rng *rng = xzalloc(sizeof(*rng));
    struct virtio_dev *vdev = virtio_dev_new(env, &info, NULL, rng);
    if (vdev) /* on failure rng was freed through info.destroy */
        rng->vdev = vdev;
    return vdev;
}

int virtio_rng_create(const struct virtio_env *env)
{
    return virtio_rng_new(env) ? 0 : -ENODEV;
}
