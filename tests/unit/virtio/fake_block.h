/* A memory-backed block device for the virtio unit tests: implements the
 * block.h functions virtio-blk calls, synchronously or with completions held
 * until fake_block_complete_all(). */
#ifndef EMBER_TESTS_VIRTIO_FAKE_BLOCK_H
#define EMBER_TESTS_VIRTIO_FAKE_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

struct block_dev {
    uint8_t *data;
    uint64_t len;
    bool readonly;
    bool deferred; /* hold completions until fake_block_complete_all() */
    struct block_request *pending[512];
    int pending_ret[512];
    unsigned npending;
    unsigned flushes, discards, write_zeroes, submits;
};
struct block_dev *fake_block_new(uint64_t len, bool readonly);
void fake_block_free(struct block_dev *bd);
void fake_block_complete_all(struct block_dev *bd);

#endif
