/* virtio-console (virtio 1.2, 5.3) without MULTIPORT: one console port with
 * receiveq 0 (host to guest) and transmitq 1 (guest to host). Linux shows
 * it as /dev/hvc0. Guest output goes to the chardev; chardev input fills
 * receive buffers, and can_receive() tells the chardev how much fits so
 * nothing is dropped while the guest is slow to refill. */
#include "virtio_devices.h"
#include "virtio_pci.h"

#include "chardev/chardev.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <stdlib.h>

#define CONSOLE_DEVICE_TYPE 3
#define CONSOLE_QUEUE_SIZE 128
#define CONSOLE_RXQ 0
#define CONSOLE_TXQ 1

#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

/* Configuration layout (5.3.4). */
#define CFG_COLS 0
#define CFG_ROWS 2
#define CFG_MAX_NR_PORTS 4
#define CFG_EMERG_WR 8
#define CFG_SIZE 12

struct virtio_console {
    struct virtio_dev *vdev;
    struct chardev *chr;
    struct chardev_frontend fe; /* kept here: the chardev may keep the pointer */
    bool attached;
    struct virtq_elem *rx; /* receive buffer being filled, popped from receiveq */
    size_t rx_filled;
};

static void console_output(struct virtio_console *con, const void *buf, size_t len)
{
    if (con->chr && len)
        chardev_write(con->chr, buf, len);
}

/* Make sure a receive buffer is at hand; false if the guest offers none. */
static bool rx_take_buffer(struct virtio_console *con)
{
    struct virtq *vq = virtio_dev_queue(con->vdev, CONSOLE_RXQ);
    const char *why = "";
    while (!con->rx) {
        if (!virtio_dev_running(con->vdev))
            return false;
        struct virtq_elem *e;
        int r = virtq_pop(vq, &e, &why);
        if (r < 0) {
            virtio_dev_fail(con->vdev, "queue %u: %s", CONSOLE_RXQ, why);
            return false;
        }
        if (r == 0) {
            /* Ask for a kick when buffers arrive, then look once more. */
            virtq_set_notification(vq, true);
            if (!virtq_has_avail(vq))
                return false;
            continue;
        }
        if (e->in_len == 0) { /* nothing to write into: give it back empty */
            virtq_push(vq, e, 0);
            virtio_dev_notify(con->vdev, CONSOLE_RXQ);
            continue;
        }
        con->rx = e;
        con->rx_filled = 0;
    }
    return true;
}

static void rx_complete(struct virtio_console *con)
{
    virtq_push(virtio_dev_queue(con->vdev, CONSOLE_RXQ), con->rx, (uint32_t)con->rx_filled);
    con->rx = NULL;
    virtio_dev_notify(con->vdev, CONSOLE_RXQ);
}

static size_t console_can_receive(void *opaque)
{
    struct virtio_console *con = opaque;
    size_t room = 0;
    virtio_dev_lock(con->vdev);
    if (rx_take_buffer(con))
        room = con->rx->in_len - con->rx_filled;
    virtio_dev_unlock(con->vdev);
    return room;
}

static void console_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct virtio_console *con = opaque;
    virtio_dev_lock(con->vdev);
    while (len && rx_take_buffer(con)) {
        size_t n = virtq_iov_from_buf(con->rx->in, con->rx->nr_in, con->rx_filled, buf,
                                MIN(len, con->rx->in_len - con->rx_filled));
        con->rx_filled += n;
        buf += n;
        len -= n;
        /* Hand each buffer over at once: console input wants low latency. */
        rx_complete(con);
    }
    if (len)
        log_debug("%s: dropped %zu input bytes: no receive buffer",
                  virtio_dev_name(con->vdev), len);
    virtio_dev_unlock(con->vdev);
}

static void tx_handle(void *opaque, unsigned q, struct virtq_elem *e)
{
    struct virtio_console *con = opaque;
    for (unsigned i = 0; i < e->nr_out; i++)
        console_output(con, e->out[i].iov_base, e->out[i].iov_len);
    virtq_push(virtio_dev_queue(con->vdev, q), e, 0);
}

static void console_queue_notify(void *opaque, unsigned q)
{
    struct virtio_console *con = opaque;
    if (q == CONSOLE_TXQ)
        virtio_dev_process_queue(con->vdev, q, tx_handle, con);
    else if (q == CONSOLE_RXQ && con->chr)
        chardev_accept_input(con->chr); /* new receive buffers: input may flow again */
}

static void console_config_write(void *opaque, unsigned offset, uint64_t value, unsigned size)
{
    struct virtio_console *con = opaque;
    /* emerg_wr: one character, early output before the queues exist. */
    if (offset == CFG_EMERG_WR && virtio_dev_has_feature(con->vdev, VIRTIO_CONSOLE_F_EMERG_WRITE)) {
        uint8_t c = (uint8_t)value;
        console_output(con, &c, 1);
    }
}

static void console_reset(void *opaque)
{
    struct virtio_console *con = opaque;
    virtq_elem_free(con->rx); /* the guest forgot it; so do we */
    con->rx = NULL;
}

static void console_destroy(void *opaque)
{
    struct virtio_console *con = opaque;
    if (con->attached)
        chardev_set_frontend(con->chr, NULL);
    virtq_elem_free(con->rx);
    free(con);
}

struct virtio_dev *virtio_console_new(const struct virtio_env *env, struct chardev *chr)
{
    static const struct virtio_device_info info = {
        .name = "virtio-console",
        .device_type = CONSOLE_DEVICE_TYPE,
        .class_base = 0x07, /* simple communication controller, other */
        .class_sub = 0x80,
        .features = 1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE,
        .num_queues = 2,
        .queue_size = CONSOLE_QUEUE_SIZE,
        .config_size = CFG_SIZE,
        .queue_notify = console_queue_notify,
        .config_write = console_config_write,
        .reset = console_reset,
        .destroy = console_destroy,
    };
    struct virtio_console *con = xzalloc(sizeof(*con));
    con->chr = chr;
    struct virtio_dev *vdev = virtio_dev_new(env, &info, NULL, con);
    if (!vdev)
        return NULL; /* con was freed through info.destroy */
    con->vdev = vdev;
    st32(virtio_dev_config(vdev) + CFG_MAX_NR_PORTS, 1);
    if (chr) {
        con->fe = (struct chardev_frontend){
            .opaque = con,
            .can_receive = console_can_receive,
            .receive = console_receive,
        };
        chardev_set_frontend(chr, &con->fe);
        con->attached = true;
    }
    return vdev;
}

int virtio_console_create(const struct virtio_env *env, struct chardev *chr)
{
    return virtio_console_new(env, chr) ? 0 : -ENODEV;
}
