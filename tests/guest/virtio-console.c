/* virtio-console, port 0 without MULTIPORT: text sent on the transmit
 * queue (one buffer, then one message split over two descriptors) and,
 * when offered, through the emergency-write register reaches the host
 * chardev; the harness checks the file it wrote. */
#include "guest.h"

#define VIRTIO_CONSOLE_F_EMERG_WRITE (1ULL << 2)
#define TXQ 1
#define CONSOLE_EMERG_WR 8 /* device config: cols, rows, max_nr_ports, emerg_wr */

static struct virtio_dev vd;
static char msg1[] = "hello from virtio-console\n";
static char part1[] = "split ";
static char part2[] = "message\n";

void guest_main(void)
{
    tap_plan(4);
    bool found = virtio_find(VIRTIO_ID_CONSOLE, 0, &vd);
    vd.nr_queues = 2; /* receiveq and transmitq of port 0 */
    if (!tap_check(found && virtio_setup(&vd, VIRTIO_CONSOLE_F_EMERG_WRITE),
                   "virtio-console found, both port-0 queues set up"))
        tap_bail("no usable virtio-console device");

    struct virtq_desc one = { .addr = (uintptr_t)msg1, .len = sizeof(msg1) - 1 };
    long n = virtio_transfer_q(&vd, TXQ, &one, 1, 5000000);
    tap_check(n >= 0, "transmitq: one-buffer message completed (len %ld)", n);

    struct virtq_desc two[2] = {
        { .addr = (uintptr_t)part1, .len = sizeof(part1) - 1 },
        { .addr = (uintptr_t)part2, .len = sizeof(part2) - 1 },
    };
    n = virtio_transfer_q(&vd, TXQ, two, 2, 5000000);
    tap_check(n >= 0, "transmitq: message split over two descriptors completed (len %ld)", n);

    if (vd.features & VIRTIO_CONSOLE_F_EMERG_WRITE) {
        printf("# emerg-write used\n");
        for (const char *p = "emergency\n"; *p; p++)
            mmio_write32(vd.device + CONSOLE_EMERG_WR, (uint8_t)*p);
        tap_check(true, "emergency write of \"emergency\" issued");
    } else {
        tap_skip("VIRTIO_CONSOLE_F_EMERG_WRITE not offered", "emergency write");
    }
}
