/* A chardev for the virtio unit tests: records output, queues input and
 * delivers it as far as the frontend's can_receive() allows. */
#ifndef EMBER_TESTS_VIRTIO_FAKE_CHARDEV_H
#define EMBER_TESTS_VIRTIO_FAKE_CHARDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chardev/chardev.h"

struct chardev {
    struct chardev_frontend fe;
    bool attached;
    uint8_t out[8192];
    size_t out_len;
    uint8_t in[8192]; /* input waiting for can_receive() */
    size_t in_len;
    unsigned accept_calls;
};
/* Offer input; delivered as far as can_receive() allows. */
void fake_chardev_input(struct chardev *c, const void *buf, size_t len);

#endif
