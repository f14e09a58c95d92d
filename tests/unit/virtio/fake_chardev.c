#include "fake_chardev.h"

#include "core/util.h"

#include <string.h>

/* ---- chardev ---- */

void chardev_set_frontend(struct chardev *c, const struct chardev_frontend *fe)
{
    c->attached = fe != NULL;
    if (fe)
        c->fe = *fe;
}

ssize_t chardev_write(struct chardev *c, const void *buf, size_t len)
{
    size_t n = MIN(len, sizeof(c->out) - c->out_len);
    memcpy(c->out + c->out_len, buf, n);
    c->out_len += n;
    return (ssize_t)len;
}

static void chardev_deliver(struct chardev *c)
{
    while (c->attached && c->in_len) {
        size_t room = c->fe.can_receive(c->fe.opaque);
        if (!room)
            return;
        size_t n = MIN(room, c->in_len);
        c->fe.receive(c->fe.opaque, c->in, n);
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
    }
}

void chardev_accept_input(struct chardev *c)
{
    c->accept_calls++;
    chardev_deliver(c);
}

void fake_chardev_input(struct chardev *c, const void *buf, size_t len)
{
    size_t n = MIN(len, sizeof(c->in) - c->in_len);
    memcpy(c->in + c->in_len, buf, n);
    c->in_len += n;
    chardev_deliver(c);
}
