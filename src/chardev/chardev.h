/* Character backends for serial ports and consoles: "stdio" (terminal in raw
 * mode, restored on every exit path; Ctrl-A x quits, Ctrl-A a sends Ctrl-A,
 * like QEMU's -nographic mux), "file:PATH" (output only), "none"/"null".
 * Input is read on the event loop thread and handed to the frontend. */
#ifndef EMBER_CHARDEV_CHARDEV_H
#define EMBER_CHARDEV_CHARDEV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/evloop.h"
#include "hw/vmctl.h"

struct chardev;

struct chardev_frontend {
    void *opaque;
    /* How many bytes the device can take now (flow control). */
    size_t (*can_receive)(void *opaque);
    void (*receive)(void *opaque, const uint8_t *buf, size_t len);
};

/* spec: "stdio" (also "mon:stdio": the escape keys are always on), "file:PATH",
 * "none", "null". Only one chardev may use stdio at a time. vmctl receives VM_EVENT_QUIT
 * on Ctrl-A x. Returns NULL after printing a message naming spec. */
struct chardev *chardev_open(const char *spec, struct evloop *loop, const struct vm_control *vmctl);
void chardev_close(struct chardev *c);
/* Attach the device side; input is delivered once attached. fe == NULL
 * detaches (input stops being read). fe is copied. Call from the thread
 * that runs the event loop (or before it runs). */
void chardev_set_frontend(struct chardev *c, const struct chardev_frontend *fe);
/* Frontend should call this when it can take input again after can_receive()==0. */
void chardev_accept_input(struct chardev *c);
/* Writes all bytes (blocking briefly if needed); thread-safe. */
ssize_t chardev_write(struct chardev *c, const void *buf, size_t len);
/* Restore terminal state (also registered with atexit and signal handlers). */
void chardev_restore_terminals(void);

#endif
