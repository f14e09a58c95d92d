/* virtio-rng: two requests return bytes that are neither constant nor
 * repeated; the completions raise the queue's MSI-X vector. */
#include "guest.h"

#define MSIX_VECTOR 0x40

static uint8_t buf[2][64];

static long rng_read(struct virtio_dev *vd, uint8_t *dst, unsigned len)
{
    struct virtq_desc d = { .addr = (uintptr_t)dst, .len = len, .flags = VIRTQ_DESC_F_WRITE };
    return virtio_transfer(vd, &d, 1, 10000000);
}

static bool all_same(const uint8_t *b, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (b[i] != b[0])
            return false;
    return true;
}

void guest_main(void)
{
    struct virtio_dev vd;
    tap_plan(5);
    lapic_enable();
    bool found = virtio_find(VIRTIO_ID_RNG, 0, &vd);
    bool msix = found && pci_msix_enable(vd.pci_dev, vd.pci_fn, 0, MSIX_VECTOR, lapic_id());
    if (msix)
        vd.q[0].msix = 0;
    if (!tap_check(found && virtio_setup(&vd, 0), "virtio-rng found and initialized"))
        tap_bail("no usable virtio-rng device");
    long n0 = rng_read(&vd, buf[0], sizeof(buf[0]));
    long n1 = rng_read(&vd, buf[1], sizeof(buf[1]));
    tap_check(n0 > 0 && n0 <= 64 && n1 > 0 && n1 <= 64,
              "two requests completed with 1-64 bytes (%ld, %ld)", n0, n1);
    tap_check(n0 >= 8 && !all_same(buf[0], (size_t)n0), "bytes are not all equal");
    size_t m = (size_t)(n0 < n1 ? n0 : n1);
    tap_check(m >= 8 && memcmp(buf[0], buf[1], m), "second request returned different bytes");

    /* Completions were polled with interrupts off: the MSI-X messages
     * wait in the LAPIC and arrive once interrupts are on. */
    uint64_t end = time_now_us() + 2000000;
    irq_enable();
    while (isr_count(MSIX_VECTOR) == 0 && time_now_us() < end)
        cpu_relax();
    irq_disable();
    tap_check(msix && isr_count(MSIX_VECTOR) >= 1,
              "queue 0 completion raised its MSI-X vector (%lu interrupts)", isr_count(MSIX_VECTOR));
    tap_diag("first bytes %02x %02x %02x %02x", buf[0][0], buf[0][1], buf[0][2], buf[0][3]);
}
