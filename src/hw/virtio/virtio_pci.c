#include "virtio_pci.h"

#include "core/evloop.h"
#include "core/log.h"
#include "core/util.h"
#include "hw/pci.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Offsets inside our vendor capabilities (struct virtio_pci_cap, 4.1.4). */
#define CAP_LEN 2
#define CAP_CFG_TYPE 3
#define CAP_BAR 4
#define CAP_ID 5
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_EXTRA 16 /* notify_off_multiplier or pci_cfg_data */
#define CAP_SIZE 16
#define CAP_SIZE_EXT 20
#define PCI_CAP_ID_VNDR 0x09

struct vq_state {
    struct virtio_dev *vdev;
    unsigned index;
    /* Driver-visible registers. */
    uint16_t size, msix_vector;
    bool enabled;
    uint64_t desc, driver, device;
    struct virtq vq;
    /* Notification path: the eventfd the loop watches (-1 without a loop),
     * and whether it is also an ioeventfd (guarded by ioev_lock). */
    int efd;
    bool ioev_on;
    uint64_t ioev_addr;
};

struct virtio_dev {
    struct virtio_device_info info;
    void *opaque;
    char *name;
    struct virtio_env env;
    struct pci_device *pci;

    pthread_mutex_t lock; /* recursive; guards everything below but isr */
    unsigned lock_depth;
    pthread_mutex_t ioev_lock;

    uint64_t host_features, driver_features;
    uint32_t dfselect, gfselect;
    uint16_t config_vector, queue_select;
    uint8_t status, config_generation;
    uint32_t epoch;
    uint8_t config[VIRTIO_CONFIG_MAX];
    unsigned nr_vectors;
    atomic_uint isr;

    /* PCI_CFG access window: config offset of the capability and our own
     * copy of its writable fields (bar, offset, length, data). */
    unsigned cfgwin_cap;
    uint8_t cfgwin[CAP_SIZE_EXT];

    /* Work collected under the lock, done by flush_deferred(). */
    uint64_t pending_vectors[2];
    bool pending_intx;
    bool ioev_want, ioev_dirty;

    struct vq_state q[];
};

/* Set while a vCPU thread is inside a PCI config-space callback: the PCI
 * layer may hold its own locks there, so deferred work goes to the loop. */
static __thread bool in_config_callback;

static void flush_deferred(struct virtio_dev *v);

void virtio_dev_lock(struct virtio_dev *v)
{
    pthread_mutex_lock(&v->lock);
    v->lock_depth++;
}

void virtio_dev_unlock(struct virtio_dev *v)
{
    bool outermost = --v->lock_depth == 0;
    pthread_mutex_unlock(&v->lock);
    if (outermost)
        flush_deferred(v);
}

uint8_t *virtio_dev_config(struct virtio_dev *v) { return v->config; }
struct virtq *virtio_dev_queue(struct virtio_dev *v, unsigned q) { return &v->q[q].vq; }
struct pci_device *virtio_dev_pci(struct virtio_dev *v) { return v->pci; }
const char *virtio_dev_name(const struct virtio_dev *v) { return v->name; }
const struct guest_mem *virtio_dev_mem(const struct virtio_dev *v) { return v->env.mem; }
struct evloop *virtio_dev_loop(const struct virtio_dev *v) { return v->env.loop; }
uint8_t virtio_dev_status(const struct virtio_dev *v) { return v->status; }
uint32_t virtio_dev_epoch(const struct virtio_dev *v) { return v->epoch; }

bool virtio_dev_has_feature(const struct virtio_dev *v, unsigned bit)
{
    return bit < 64 && (v->driver_features & (1ULL << bit));
}

bool virtio_dev_running(const struct virtio_dev *v)
{
    return (v->status & VIRTIO_STATUS_DRIVER_OK) && !(v->status & VIRTIO_STATUS_NEEDS_RESET);
}

/* ---- interrupts ---------------------------------------------------------- */

static void queue_interrupt(struct virtio_dev *v, unsigned isr_bit, uint16_t vector)
{
    atomic_fetch_or(&v->isr, isr_bit);
    v->pending_intx = true;
    if (vector < v->nr_vectors)
        v->pending_vectors[vector / 64] |= 1ULL << (vector % 64);
}

void virtio_dev_notify(struct virtio_dev *v, unsigned q)
{
    if (q < v->info.num_queues && virtq_should_interrupt(&v->q[q].vq))
        queue_interrupt(v, 1, v->q[q].msix_vector);
}

void virtio_dev_config_changed(struct virtio_dev *v)
{
    v->config_generation++;
    queue_interrupt(v, 2, v->config_vector);
}

void virtio_dev_fail(struct virtio_dev *v, const char *fmt, ...)
{
    if (v->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    log_error("%s: guest driver error: %s; device needs reset", v->name, why);
    v->status |= VIRTIO_STATUS_NEEDS_RESET;
    queue_interrupt(v, 2, v->config_vector);
}

/* Drive the INTx line from the ISR. Two threads may race here (one raising,
 * one reading ISR); each re-checks after setting the line, so the last word
 * always matches the ISR and no interrupt is lost. */
static void intx_update(struct virtio_dev *v)
{
    bool level;
    do {
        level = atomic_load(&v->isr) != 0;
        pci_set_intx(v->pci, level);
    } while ((atomic_load(&v->isr) != 0) != level);
}

static void ioeventfds_sync(struct virtio_dev *v, bool want)
{
    if (!v->env.add_ioeventfd || !v->env.del_ioeventfd)
        return;
    pthread_mutex_lock(&v->ioev_lock);
    uint64_t base = want ? pci_device_bar_addr(v->pci, VIRTIO_PCI_BAR) : 0;
    for (unsigned i = 0; i < v->info.num_queues; i++) {
        struct vq_state *qs = &v->q[i];
        uint64_t addr = base + VIRTIO_PCI_NOTIFY_OFF + i * VIRTIO_PCI_NOTIFY_MULT;
        if (qs->ioev_on && (!want || qs->ioev_addr != addr)) {
            v->env.del_ioeventfd(v->env.ioev_opaque, false, qs->ioev_addr, 2, qs->efd);
            qs->ioev_on = false;
        }
        if (want && base && qs->efd >= 0 && !qs->ioev_on) {
            /* On failure notifications still arrive through the bus. */
            if (v->env.add_ioeventfd(v->env.ioev_opaque, false, addr, 2, qs->efd) == 0) {
                qs->ioev_on = true;
                qs->ioev_addr = addr;
            }
        }
    }
    pthread_mutex_unlock(&v->ioev_lock);
}

static void flush_deferred_cb(void *opaque)
{
    flush_deferred(opaque);
}

static void flush_deferred(struct virtio_dev *v)
{
    if (in_config_callback && v->env.loop) {
        evloop_call(v->env.loop, flush_deferred_cb, v);
        return;
    }
    pthread_mutex_lock(&v->lock);
    uint64_t vec[2] = {v->pending_vectors[0], v->pending_vectors[1]};
    bool intx = v->pending_intx, ioev = v->ioev_dirty, want = v->ioev_want;
    v->pending_vectors[0] = v->pending_vectors[1] = 0;
    v->pending_intx = v->ioev_dirty = false;
    pthread_mutex_unlock(&v->lock);

    if (ioev)
        ioeventfds_sync(v, want);
    if (!intx && !vec[0] && !vec[1])
        return;
    if (pci_msix_enabled(v->pci)) {
        for (unsigned i = 0; i < v->nr_vectors; i++)
            if (vec[i / 64] & (1ULL << (i % 64)))
                pci_msix_notify(v->pci, i);
    } else if (intx) {
        intx_update(v);
    }
}

/* ---- queues -------------------------------------------------------------- */

static void queue_run(struct virtio_dev *v, unsigned q)
{
    virtio_dev_lock(v);
    if (virtio_dev_running(v) && v->q[q].enabled && v->info.queue_notify)
        v->info.queue_notify(v->opaque, q);
    virtio_dev_unlock(v);
}

static void on_queue_eventfd(void *opaque, uint32_t events)
{
    struct vq_state *qs = opaque;
    uint64_t count;
    if (read(qs->efd, &count, sizeof(count)) < 0)
        return; /* EAGAIN: someone else consumed it */
    queue_run(qs->vdev, qs->index);
}

/* Ask for queue q to be processed on the loop thread (or right here when
 * there is no loop). */
static void queue_kick(struct virtio_dev *v, unsigned q)
{
    if (v->q[q].efd >= 0) {
        uint64_t one = 1;
        if (write(v->q[q].efd, &one, sizeof(one)) < 0)
            log_warn("%s: queue %u: eventfd write failed", v->name, q);
    } else {
        queue_run(v, q);
    }
}

void virtio_dev_process_queue(struct virtio_dev *v, unsigned q, virtio_handle_fn *handle,
                              void *opaque)
{
    struct virtq *vq = &v->q[q].vq;
    uint16_t used_before = vq->used_idx;
    for (;;) {
        virtq_set_notification(vq, false);
        for (;;) {
            struct virtq_elem *e;
            const char *why = "";
            if (!virtio_dev_running(v))
                goto out;
            int r = virtq_pop(vq, &e, &why);
            if (r < 0) {
                virtio_dev_fail(v, "queue %u: %s", q, why);
                goto out;
            }
            if (r == 0)
                break;
            handle(opaque, q, e);
        }
        virtq_set_notification(vq, true);
        if (!virtq_has_avail(vq))
            break;
    }
out:
    if (vq->used_idx != used_before)
        virtio_dev_notify(v, q);
}

static void queue_enable(struct virtio_dev *v, struct vq_state *qs)
{
    const char *why = "";
    if (qs->enabled)
        return;
    if (qs->size > v->info.queue_size) {
        virtio_dev_fail(v, "queue %u: size %u exceeds the maximum %u", qs->index, qs->size,
                        v->info.queue_size);
        return;
    }
    int r = virtq_setup(&qs->vq, v->env.mem, qs->size, qs->desc, qs->driver, qs->device,
                        virtio_dev_has_feature(v, VIRTIO_F_EVENT_IDX),
                        virtio_dev_has_feature(v, VIRTIO_F_INDIRECT_DESC), &why);
    if (r < 0) {
        virtio_dev_fail(v, "queue %u: %s", qs->index, why);
        return;
    }
    qs->enabled = true;
}

/* ---- reset and status ---------------------------------------------------- */

static void reset_registers(struct virtio_dev *v)
{
    v->status = 0;
    v->driver_features = 0;
    v->dfselect = v->gfselect = 0;
    v->config_vector = VIRTIO_MSI_NO_VECTOR;
    v->queue_select = 0;
    v->epoch++;
    for (unsigned i = 0; i < v->info.num_queues; i++) {
        struct vq_state *qs = &v->q[i];
        qs->size = v->info.queue_size;
        qs->msix_vector = VIRTIO_MSI_NO_VECTOR;
        qs->enabled = false;
        qs->desc = qs->driver = qs->device = 0;
        virtq_reset(&qs->vq);
    }
    atomic_store(&v->isr, 0);
    v->pending_intx = true; /* lower the line */
    v->pending_vectors[0] = v->pending_vectors[1] = 0;
    v->ioev_want = false;
    v->ioev_dirty = true;
}

static void device_reset(struct virtio_dev *v)
{
    reset_registers(v);
    if (v->info.reset)
        v->info.reset(v->opaque);
}

static void status_write(struct virtio_dev *v, uint8_t val)
{
    if (val == 0) {
        device_reset(v);
        return;
    }
    /* NEEDS_RESET is ours: the driver can neither set nor clear it. */
    uint8_t old = v->status;
    uint8_t now = (val & ~VIRTIO_STATUS_NEEDS_RESET) | (old & VIRTIO_STATUS_NEEDS_RESET);
    if ((now & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
        /* Refuse (FEATURES_OK reads back clear) features we did not offer,
         * and legacy drivers: this device is modern only. */
        if ((v->driver_features & ~v->host_features) ||
            !(v->driver_features & (1ULL << VIRTIO_F_VERSION_1)))
            now &= ~VIRTIO_STATUS_FEATURES_OK;
    }
    v->status = now;
    if ((now & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
        v->ioev_want = true;
        v->ioev_dirty = true;
        /* Buffers made available before DRIVER_OK were not processed. */
        for (unsigned i = 0; i < v->info.num_queues; i++)
            if (v->q[i].enabled)
                queue_kick(v, i);
    }
}

/* ---- common configuration ------------------------------------------------ */

static void common_snapshot(struct virtio_dev *v, uint8_t *b)
{
    memset(b, 0, VIRTIO_PCI_COMMON_LEN);
    st32(b + VIRTIO_PCI_COMMON_DFSELECT, v->dfselect);
    st32(b + VIRTIO_PCI_COMMON_DF,
         v->dfselect < 2 ? (uint32_t)(v->host_features >> (32 * v->dfselect)) : 0);
    st32(b + VIRTIO_PCI_COMMON_GFSELECT, v->gfselect);
    st32(b + VIRTIO_PCI_COMMON_GF,
         v->gfselect < 2 ? (uint32_t)(v->driver_features >> (32 * v->gfselect)) : 0);
    st16(b + VIRTIO_PCI_COMMON_MSIX, v->config_vector);
    st16(b + VIRTIO_PCI_COMMON_NUMQ, (uint16_t)v->info.num_queues);
    b[VIRTIO_PCI_COMMON_STATUS] = v->status;
    b[VIRTIO_PCI_COMMON_CFGGENERATION] = v->config_generation;
    st16(b + VIRTIO_PCI_COMMON_Q_SELECT, v->queue_select);
    if (v->queue_select < v->info.num_queues) {
        const struct vq_state *qs = &v->q[v->queue_select];
        st16(b + VIRTIO_PCI_COMMON_Q_SIZE, qs->size);
        st16(b + VIRTIO_PCI_COMMON_Q_MSIX, qs->msix_vector);
        st16(b + VIRTIO_PCI_COMMON_Q_ENABLE, qs->enabled);
        st16(b + VIRTIO_PCI_COMMON_Q_NOFF, v->queue_select);
        st64(b + VIRTIO_PCI_COMMON_Q_DESCLO, qs->desc);
        st64(b + VIRTIO_PCI_COMMON_Q_AVAILLO, qs->driver);
        st64(b + VIRTIO_PCI_COMMON_Q_USEDLO, qs->device);
    } else {
        /* No such queue: size 0 says so. */
        st16(b + VIRTIO_PCI_COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
    }
}

static uint64_t le_bytes(const uint8_t *b, unsigned size)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static uint64_t common_read(struct virtio_dev *v, uint64_t off, unsigned size)
{
    uint8_t b[VIRTIO_PCI_COMMON_LEN];
    if (off >= VIRTIO_PCI_COMMON_LEN || size > VIRTIO_PCI_COMMON_LEN - off)
        return 0;
    common_snapshot(v, b);
    return le_bytes(b + off, size);
}

static uint16_t vector_or_none(const struct virtio_dev *v, uint16_t vec)
{
    /* A vector we do not have reads back as NO_VECTOR: the driver's check
     * that the mapping failed (4.1.5.1.2). */
    return vec < v->nr_vectors ? vec : VIRTIO_MSI_NO_VECTOR;
}

static void set_addr_half(uint64_t *addr, bool high, uint64_t val)
{
    if (high)
        *addr = (*addr & 0xffffffffULL) | (val << 32);
    else
        *addr = (*addr & ~0xffffffffULL) | (val & 0xffffffffULL);
}

static void queue_reg_write(struct virtio_dev *v, uint64_t off, uint64_t val, unsigned size)
{
    if (v->queue_select >= v->info.num_queues)
        return;
    struct vq_state *qs = &v->q[v->queue_select];
    uint64_t *addr = NULL;

    if (off == VIRTIO_PCI_COMMON_Q_MSIX && size == 2) {
        qs->msix_vector = vector_or_none(v, (uint16_t)val);
        return;
    }
    if (off == VIRTIO_PCI_COMMON_Q_ENABLE && size == 2) {
        if (val == 1)
            queue_enable(v, qs);
        return;
    }
    /* The rest describes the queue; frozen once it is enabled. */
    if (qs->enabled)
        return;
    if (off == VIRTIO_PCI_COMMON_Q_SIZE && size == 2) {
        qs->size = (uint16_t)val;
        return;
    }
    if (off >= VIRTIO_PCI_COMMON_Q_DESCLO && off < VIRTIO_PCI_COMMON_Q_USEDHI + 4) {
        unsigned rel = (unsigned)(off - VIRTIO_PCI_COMMON_Q_DESCLO);
        addr = rel < 8 ? &qs->desc : rel < 16 ? &qs->driver : &qs->device;
        if (size == 8 && rel % 8 == 0)
            *addr = val;
        else if (size == 4 && rel % 4 == 0)
            set_addr_half(addr, rel % 8 == 4, val);
    }
}

static void common_write(struct virtio_dev *v, uint64_t off, uint64_t val, unsigned size)
{
    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
        if (size == 4)
            v->dfselect = (uint32_t)val;
        return;
    case VIRTIO_PCI_COMMON_GFSELECT:
        if (size == 4)
            v->gfselect = (uint32_t)val;
        return;
    case VIRTIO_PCI_COMMON_GF:
        if (size == 4 && v->gfselect < 2 && !(v->status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned shift = 32 * v->gfselect;
            v->driver_features = (v->driver_features & ~(0xffffffffULL << shift)) |
                                 ((val & 0xffffffffULL) << shift);
        }
        return;
    case VIRTIO_PCI_COMMON_MSIX:
        if (size == 2)
            v->config_vector = vector_or_none(v, (uint16_t)val);
        return;
    case VIRTIO_PCI_COMMON_STATUS:
        if (size == 1)
            status_write(v, (uint8_t)val);
        return;
    case VIRTIO_PCI_COMMON_Q_SELECT:
        if (size == 2)
            v->queue_select = (uint16_t)val;
        return;
    default:
        queue_reg_write(v, off, val, size);
        return;
    }
}

/* ---- the virtio BAR ------------------------------------------------------ */

static uint64_t bar_read(void *opaque, uint64_t off, unsigned size)
{
    struct virtio_dev *v = opaque;
    uint64_t val = 0;
    virtio_dev_lock(v);
    if (off < VIRTIO_PCI_ISR_OFF) {
        val = common_read(v, off - VIRTIO_PCI_COMMON_OFF, size);
    } else if (off < VIRTIO_PCI_DEVICE_OFF) {
        /* Reading ISR acknowledges it and lowers INTx (4.1.4.5). */
        if (off == VIRTIO_PCI_ISR_OFF) {
            val = atomic_exchange(&v->isr, 0);
            v->pending_intx = true;
        }
    } else if (off < VIRTIO_PCI_NOTIFY_OFF) {
        uint64_t rel = off - VIRTIO_PCI_DEVICE_OFF;
        if (rel < v->info.config_size && size <= v->info.config_size - rel)
            val = le_bytes(v->config + rel, size);
    }
    virtio_dev_unlock(v);
    return val;
}

static void bar_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
    struct virtio_dev *v = opaque;
    if (off >= VIRTIO_PCI_NOTIFY_OFF) {
        /* The address names the queue; the value (its index) adds nothing. */
        uint64_t q = (off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT;
        if (q < v->info.num_queues)
            queue_kick(v, (unsigned)q);
        if (v->env.add_ioeventfd) {
            /* The ioeventfd did not catch this write: the BAR may have moved
             * since DRIVER_OK. Re-check the registration (after unlock). */
            virtio_dev_lock(v);
            v->ioev_dirty = v->ioev_want;
            virtio_dev_unlock(v);
        }
        return;
    }
    virtio_dev_lock(v);
    if (off < VIRTIO_PCI_ISR_OFF) {
        common_write(v, off - VIRTIO_PCI_COMMON_OFF, val, size);
    } else if (off >= VIRTIO_PCI_DEVICE_OFF) {
        uint64_t rel = off - VIRTIO_PCI_DEVICE_OFF;
        if (rel < v->info.config_size && size <= v->info.config_size - rel &&
            v->info.config_write)
            v->info.config_write(v->opaque, (unsigned)rel, val, size);
    }
    virtio_dev_unlock(v);
}

static const struct bus_ops virtio_bar_ops = {.read = bar_read, .write = bar_write};

/* BAR 1 only holds the MSI-X table and PBA, which the PCI layer emulates;
 * anything else reads as zero. */
static uint64_t msix_bar_read(void *opaque, uint64_t off, unsigned size) { return 0; }
static void msix_bar_write(void *opaque, uint64_t off, uint64_t val, unsigned size) {}
static const struct bus_ops msix_bar_ops = {.read = msix_bar_read, .write = msix_bar_write};

/* ---- PCI configuration space: the PCI_CFG access window (4.1.4.9) -------- */

static bool cfgwin_field(unsigned rel)
{
    return rel == CAP_BAR || (rel >= CAP_OFFSET && rel < CAP_SIZE_EXT);
}

static void cfgwin_access(struct virtio_dev *v, bool write)
{
    uint8_t bar = v->cfgwin[CAP_BAR];
    uint32_t off = ld32(v->cfgwin + CAP_OFFSET), len = ld32(v->cfgwin + CAP_LENGTH);
    if (bar != VIRTIO_PCI_BAR || (len != 1 && len != 2 && len != 4) ||
        off >= VIRTIO_PCI_BAR_SIZE || len > VIRTIO_PCI_BAR_SIZE - off)
        return;
    in_config_callback = true;
    if (write) {
        bar_write(v, off, le_bytes(v->cfgwin + CAP_EXTRA, len), len);
    } else {
        uint64_t val = bar_read(v, off, len);
        for (unsigned i = 0; i < 4; i++)
            v->cfgwin[CAP_EXTRA + i] = i < len ? (uint8_t)(val >> (8 * i)) : 0;
    }
    in_config_callback = false;
}

static void pci_config_write(void *opaque, unsigned offset, uint32_t value, unsigned size)
{
    struct virtio_dev *v = opaque;
    bool data_written = false;
    for (unsigned i = 0; i < size && i < 4; i++) {
        unsigned at = offset + i;
        if (at < v->cfgwin_cap || at >= v->cfgwin_cap + CAP_SIZE_EXT)
            continue;
        unsigned rel = at - v->cfgwin_cap;
        if (!cfgwin_field(rel))
            continue;
        v->cfgwin[rel] = (uint8_t)(value >> (8 * i));
        data_written |= rel >= CAP_EXTRA;
    }
    if (data_written)
        cfgwin_access(v, true);
}

static bool pci_config_read(void *opaque, unsigned offset, unsigned size, uint32_t *value)
{
    struct virtio_dev *v = opaque;
    if (offset + size <= v->cfgwin_cap || offset >= v->cfgwin_cap + CAP_SIZE_EXT || size > 4)
        return false;
    /* Reading the data field performs the BAR read. */
    if (offset + size > v->cfgwin_cap + CAP_EXTRA)
        cfgwin_access(v, false);
    const uint8_t *raw = pci_device_config(v->pci);
    uint32_t val = 0;
    for (unsigned i = 0; i < size; i++) {
        unsigned at = offset + i;
        uint8_t byte = at < PCI_CONFIG_SPACE_SIZE ? raw[at] : 0xff;
        if (at >= v->cfgwin_cap && at < v->cfgwin_cap + CAP_SIZE_EXT &&
            cfgwin_field(at - v->cfgwin_cap))
            byte = v->cfgwin[at - v->cfgwin_cap];
        val |= (uint32_t)byte << (8 * i);
    }
    *value = val;
    return true;
}

static void pci_reset(void *opaque)
{
    struct virtio_dev *v = opaque;
    virtio_dev_lock(v);
    device_reset(v);
    memset(v->cfgwin, 0, sizeof(v->cfgwin));
    virtio_dev_unlock(v);
}

static const struct pci_device_ops virtio_pci_ops = {
    .config_write = pci_config_write,
    .config_read = pci_config_read,
    .reset = pci_reset,
};

/* ---- creation ------------------------------------------------------------ */

static unsigned add_cap(struct virtio_dev *v, uint8_t cfg_type, uint32_t offset, uint32_t length,
                        const uint8_t *extra)
{
    uint8_t cap[CAP_SIZE_EXT] = {0};
    size_t len = extra ? CAP_SIZE_EXT : CAP_SIZE;
    cap[0] = PCI_CAP_ID_VNDR;
    cap[CAP_LEN] = (uint8_t)len;
    cap[CAP_CFG_TYPE] = cfg_type;
    cap[CAP_BAR] = cfg_type == VIRTIO_PCI_CAP_PCI_CFG ? 0 : VIRTIO_PCI_BAR;
    st32(cap + CAP_OFFSET, offset);
    st32(cap + CAP_LENGTH, length);
    if (extra)
        memcpy(cap + CAP_EXTRA, extra, 4);
    return pci_device_add_capability(v->pci, cap, len);
}

static int add_pci_function(struct virtio_dev *v)
{
    const struct virtio_device_info *info = &v->info;
    struct pci_device_id id = {
        .vendor = VIRTIO_PCI_VENDOR,
        .device = (uint16_t)(VIRTIO_PCI_DEVICE_BASE + info->device_type),
        .subsystem_vendor = VIRTIO_PCI_SUBSYS_VENDOR,
        .subsystem = VIRTIO_PCI_SUBSYS_DEVICE,
        .revision = 1,
        .class_base = info->class_base,
        .class_sub = info->class_sub,
        .class_prog_if = info->class_prog_if,
    };
    v->pci = pci_device_new(v->env.pci, v->name, &id, &virtio_pci_ops, v);
    if (!v->pci)
        return -ENOSPC;
    int r = pci_device_add_bar(v->pci, VIRTIO_PCI_MSIX_BAR, PCI_BAR_MEM32,
                               VIRTIO_PCI_MSIX_BAR_SIZE, &msix_bar_ops, v);
    if (r == 0)
        r = pci_device_add_bar(v->pci, VIRTIO_PCI_BAR, PCI_BAR_MEM64, VIRTIO_PCI_BAR_SIZE,
                               &virtio_bar_ops, v);
    if (r < 0)
        return log_fail(r, "%s: cannot add PCI BARs", v->name);

    uint8_t mult[4], zero[4] = {0};
    st32(mult, VIRTIO_PCI_NOTIFY_MULT);
    bool ok = add_cap(v, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF,
                      VIRTIO_PCI_COMMON_LEN, NULL) &&
              add_cap(v, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, VIRTIO_PCI_ISR_LEN, NULL) &&
              (!info->config_size ||
               add_cap(v, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF, info->config_size,
                       NULL)) &&
              add_cap(v, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
                      info->num_queues * VIRTIO_PCI_NOTIFY_MULT, mult);
    if (ok)
        ok = (v->cfgwin_cap = add_cap(v, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, zero)) != 0;
    if (!ok)
        return log_fail(-ENOSPC, "%s: no room for the virtio PCI capabilities", v->name);

    r = pci_device_init_msix(v->pci, v->nr_vectors, VIRTIO_PCI_MSIX_BAR, VIRTIO_PCI_MSIX_TABLE,
                             VIRTIO_PCI_MSIX_PBA);
    if (r < 0)
        return log_fail(r, "%s: cannot set up MSI-X", v->name);
    return 0;
}

static int setup_eventfds(struct virtio_dev *v)
{
    for (unsigned i = 0; i < v->info.num_queues; i++) {
        struct vq_state *qs = &v->q[i];
        if (!v->env.loop)
            continue;
        qs->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (qs->efd < 0)
            return log_fail(-errno, "%s: cannot create a queue eventfd", v->name);
        int r = evloop_add_fd(v->env.loop, qs->efd, EPOLLIN, on_queue_eventfd, qs);
        if (r < 0) {
            close(qs->efd);
            qs->efd = -1;
            return log_fail(r, "%s: cannot watch a queue eventfd", v->name);
        }
    }
    return 0;
}

struct virtio_dev *virtio_dev_new(const struct virtio_env *env,
                                  const struct virtio_device_info *info, const char *id,
                                  void *opaque)
{
    if (!info->num_queues || info->num_queues > VIRTIO_MAX_QUEUES ||
        info->config_size > VIRTIO_CONFIG_MAX || !info->queue_size ||
        info->queue_size > VIRTQ_MAX_SIZE || (info->queue_size & (info->queue_size - 1))) {
        log_error("%s: invalid virtio device parameters", info->name);
        if (info->destroy)
            info->destroy(opaque);
        return NULL;
    }
    struct virtio_dev *v = xzalloc(sizeof(*v) + info->num_queues * sizeof(struct vq_state));
    v->info = *info;
    v->opaque = opaque;
    v->env = *env;
    v->name = id && *id ? xasprintf("%s %s", info->name, id) : xstrdup(info->name);
    v->host_features = info->features | (1ULL << VIRTIO_F_VERSION_1) |
                       (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
    v->nr_vectors = info->num_queues + 1;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&v->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    pthread_mutex_init(&v->ioev_lock, NULL);
    for (unsigned i = 0; i < info->num_queues; i++) {
        v->q[i].vdev = v;
        v->q[i].index = i;
        v->q[i].efd = -1;
    }
    reset_registers(v);
    v->ioev_dirty = false;
    v->pending_intx = false;
    v->epoch = 0;

    if (add_pci_function(v) < 0 || setup_eventfds(v) < 0) {
        if (!v->pci) {
            virtio_dev_free(v);
            return NULL;
        }
        /* The PCI function cannot be taken off the bus and its callbacks
         * point here: keep a device that ignores the driver, free the rest. */
        if (v->info.destroy)
            v->info.destroy(v->opaque);
        v->info.queue_notify = NULL;
        v->info.config_write = NULL;
        v->info.reset = NULL;
        v->info.destroy = NULL;
        return NULL;
    }
    return v;
}

void virtio_dev_free(struct virtio_dev *v)
{
    if (!v)
        return;
    if (v->pci)
        ioeventfds_sync(v, false);
    for (unsigned i = 0; i < v->info.num_queues; i++) {
        if (v->q[i].efd >= 0) {
            evloop_del_fd(v->env.loop, v->q[i].efd);
            close(v->q[i].efd);
        }
    }
    if (v->info.destroy)
        v->info.destroy(v->opaque);
    pthread_mutex_destroy(&v->lock);
    pthread_mutex_destroy(&v->ioev_lock);
    free(v->name);
    free(v);
}
