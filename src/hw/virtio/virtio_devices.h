/* Constructors behind virtio.h's *_create() that hand back the device, for
 * unit tests (which drive it through the BAR and free it afterwards). */
#ifndef EMBER_HW_VIRTIO_VIRTIO_DEVICES_H
#define EMBER_HW_VIRTIO_VIRTIO_DEVICES_H

#include "hw/virtio/virtio.h"

struct virtio_dev;

struct virtio_dev *virtio_blk_new(const struct virtio_env *env, struct block_dev *bd,
                                  const char *id, const char *serial, unsigned num_queues,
                                  bool readonly);
struct virtio_dev *virtio_rng_new(const struct virtio_env *env);
struct virtio_dev *virtio_console_new(const struct virtio_env *env, struct chardev *chr);

#endif
