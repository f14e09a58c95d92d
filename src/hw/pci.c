/* PCI bus 0: host bridge, config mechanism #1 and ECAM, type-0 headers with
 * BAR sizing and moves, capability lists, MSI-X tables and PBAs, and INTx.
 *
 * Locking: each device has a mutex for its config bytes and MSI-X state.
 * Device callbacks (config hooks, BAR ops) are always called without it, so
 * a device may call back into pci_* from them. BAR moves call bus_register
 * with the device lock held; that is safe because the bus never holds its
 * own lock while calling a device. */
#include "hw/pci.h"

#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Type-0 header offsets and bits. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CLASS_SUB 0x0a
#define PCI_CLASS_BASE 0x0b
#define PCI_CACHE_LINE 0x0c
#define PCI_LATENCY 0x0d
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID 0x2e
#define PCI_CAP_PTR 0x34
#define PCI_INT_LINE 0x3c
#define PCI_INT_PIN 0x3d
#define PCI_STD_HEADER_END 0x40
#define PCI_LEGACY_CONFIG_SIZE 256

#define CMD_IO 0x0001
#define CMD_MEM 0x0002
#define CMD_MASTER 0x0004
#define CMD_INTX_DISABLE 0x0400
#define CMD_WRITABLE 0x0547 /* IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE */

#define STATUS_INTX 0x0008
#define STATUS_CAP_LIST 0x0010
#define STATUS_W1C 0xf900

#define BAR_IO 0x1
#define BAR_MEM64 0x4

#define CAP_ID_MSIX 0x11
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_VECTOR_CTRL 12
#define MSIX_MAX_VECTORS 2048

#define HOST_BRIDGE_VENDOR 0x8086
#define HOST_BRIDGE_DEVICE 0x29c0

struct pci_bar {
    struct pci_device *dev;
    unsigned index;
    enum pci_bar_kind kind;
    uint64_t size;
    const struct bus_ops *ops;
    void *opaque;
    bool present;
    bool mapped;
    uint64_t mapped_addr;
};

/* A vector's irqfd: an eventfd bound by the irq sink to the vector's
 * message, created on the vector's first delivery. */
struct msix_route {
    int fd;      /* -1: none yet */
    int route;   /* the sink's route id, valid when fd >= 0 */
    uint64_t addr;
    uint32_t data;
    bool refused; /* the sink has no route for it: use send_msi */
};

struct pci_msix {
    unsigned nr, bar, cap;
    uint64_t table_off, pba_off, pba_len;
    uint8_t *table;    /* nr * 16 bytes, guest-visible layout */
    uint64_t *pending; /* pba_len bytes */
    struct msix_route *routes; /* nr entries */
};

struct pci_device {
    struct pci_bus *bus;
    unsigned slot;
    char *name;
    const struct pci_device_ops *ops;
    void *opaque;
    pthread_mutex_t lock;
    uint8_t config[PCI_CONFIG_SPACE_SIZE];
    uint8_t wmask[PCI_LEGACY_CONFIG_SIZE];  /* bits a config write may change */
    uint8_t w1cmask[PCI_LEGACY_CONFIG_SIZE]; /* bits a write of 1 clears */
    uint8_t config_assigned[PCI_LEGACY_CONFIG_SIZE]; /* snapshot for reset */
    bool assigned;
    unsigned last_cap; /* offset of the last capability, 0 = none */
    unsigned cap_end;  /* first byte after the last capability */
    struct pci_bar bars[PCI_NUM_BARS];
    bool has_msix;
    struct pci_msix msix;
    bool intx_level;    /* what the device drives */
    bool intx_asserted; /* what reaches the GSI (after INTX_DISABLE) */
};

struct cf8_port;

struct pci_bus {
    struct bus *pio, *mmio;
    const struct irq_sink *irq;
    struct cf8_port *cf8;
    _Atomic uint32_t config_addr;
    struct pci_device *slots[PCI_MAX_SLOTS];
    pthread_mutex_t intx_lock;
    unsigned intx_count[4]; /* devices asserting GSI 16 + i */
    bool data_registered, ecam_registered;
};

/* --- port 0xcf8-0xcfb: config address + reset control ------------------- */

struct cf8_port {
    struct bus *pio;
    struct pci_bus *pci;
    const struct bus_ops *cf9_ops;
    void *cf9_opaque;
    struct cf8_port *next;
};

static pthread_mutex_t cf8_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cf8_port *cf8_ports;

static uint64_t all_ones(unsigned size)
{
    return size >= 8 ? ~0ULL : (1ULL << (8 * size)) - 1;
}

static uint64_t cf8_read(void *opaque, uint64_t offset, unsigned size)
{
    struct cf8_port *p = opaque;
    if (offset == 0 && size == 4 && p->pci)
        return atomic_load(&p->pci->config_addr);
    if (offset == 1 && size == 1 && p->cf9_ops && p->cf9_ops->read)
        return p->cf9_ops->read(p->cf9_opaque, 0, 1);
    /* Narrower accesses to 0xcf8 are not config cycles (they go to ISA). */
    return all_ones(size);
}

static void cf8_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct cf8_port *p = opaque;
    if (offset == 0 && size == 4 && p->pci)
        atomic_store(&p->pci->config_addr, (uint32_t)value & 0x80fffffcu);
    else if (offset == 1 && size == 1 && p->cf9_ops && p->cf9_ops->write)
        p->cf9_ops->write(p->cf9_opaque, 0, value, 1);
}

static const struct bus_ops cf8_ops = {.read = cf8_read, .write = cf8_write};

/* Find or create the shared port for pio; caller holds cf8_lock. */
static struct cf8_port *cf8_get(struct bus *pio)
{
    for (struct cf8_port *p = cf8_ports; p; p = p->next)
        if (p->pio == pio)
            return p;
    struct cf8_port *p = xzalloc(sizeof(*p));
    p->pio = pio;
    if (bus_register(pio, LAYOUT_PCI_CONFIG_ADDR, 4, &cf8_ops, p, "pci-config-address") < 0) {
        free(p);
        return NULL;
    }
    p->next = cf8_ports;
    cf8_ports = p;
    return p;
}

/* Drop the port once neither user holds it; caller holds cf8_lock. */
static void cf8_put(struct cf8_port *p)
{
    if (p->pci || p->cf9_ops)
        return;
    bus_unregister(p->pio, LAYOUT_PCI_CONFIG_ADDR, p);
    for (struct cf8_port **pp = &cf8_ports; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p);
}

int pci_port_cf9_attach(struct bus *pio, const struct bus_ops *ops, void *opaque)
{
    pthread_mutex_lock(&cf8_lock);
    struct cf8_port *p = cf8_get(pio);
    int ret = 0;
    if (!p)
        ret = -EEXIST;
    else if (p->cf9_ops)
        ret = log_fail(-EEXIST, "reset control port 0xcf9 is already claimed");
    else {
        p->cf9_ops = ops;
        p->cf9_opaque = opaque;
    }
    pthread_mutex_unlock(&cf8_lock);
    return ret;
}

void pci_port_cf9_detach(struct bus *pio, void *opaque)
{
    pthread_mutex_lock(&cf8_lock);
    for (struct cf8_port *p = cf8_ports; p; p = p->next) {
        if (p->pio == pio && p->cf9_ops && p->cf9_opaque == opaque) {
            p->cf9_ops = NULL;
            p->cf9_opaque = NULL;
            cf8_put(p);
            break;
        }
    }
    pthread_mutex_unlock(&cf8_lock);
}

/* --- INTx ------------------------------------------------------------------------ */

/* Recompute the device's contribution to its shared GSI; device lock held. */
static void intx_update(struct pci_device *d)
{
    uint16_t cmd = ld16(&d->config[PCI_COMMAND]);
    uint16_t status = ld16(&d->config[PCI_STATUS]);
    status = d->intx_level ? (status | STATUS_INTX) : (status & ~STATUS_INTX);
    st16(&d->config[PCI_STATUS], status);

    bool assert = d->intx_level && !(cmd & CMD_INTX_DISABLE);
    if (assert == d->intx_asserted)
        return;
    d->intx_asserted = assert;
    struct pci_bus *b = d->bus;
    unsigned gsi = layout_pci_intx_gsi(d->slot, 0);
    unsigned i = gsi - 16;
    pthread_mutex_lock(&b->intx_lock);
    unsigned before = b->intx_count[i];
    b->intx_count[i] = assert ? before + 1 : before - 1;
    if (!before != !b->intx_count[i])
        irq_set_level(b->irq, gsi, b->intx_count[i] != 0);
    pthread_mutex_unlock(&b->intx_lock);
}

void pci_set_intx(struct pci_device *d, bool level)
{
    pthread_mutex_lock(&d->lock);
    d->intx_level = level;
    intx_update(d);
    pthread_mutex_unlock(&d->lock);
}

/* --- MSI-X ------------------------------------------------------------------------ */

static uint16_t msix_ctrl(const struct pci_device *d)
{
    return ld16(&d->config[d->msix.cap + 2]);
}

static bool msix_vector_masked(const struct pci_device *d, unsigned v)
{
    uint16_t ctrl = msix_ctrl(d);
    if (!(ctrl & MSIX_CTRL_ENABLE) || (ctrl & MSIX_CTRL_MASKALL))
        return true;
    return d->msix.table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] & 1;
}

static bool msix_pending(const struct pci_device *d, unsigned v)
{
    return (d->msix.pending[v / 64] >> (v % 64)) & 1;
}

static void msix_set_pending(struct pci_device *d, unsigned v, bool on)
{
    if (on)
        d->msix.pending[v / 64] |= 1ULL << (v % 64);
    else
        d->msix.pending[v / 64] &= ~(1ULL << (v % 64));
}

/* Deliver vector v's message through its irqfd, binding one first (or
 * rebinding it when the guest changed the message). Returns false when the
 * sink offers no route for it; the caller then sends the MSI itself. Masking
 * stays here, in the PCI model: a masked vector never reaches this. */
static bool msix_send_irqfd(struct pci_device *d, unsigned v, uint64_t addr, uint32_t data)
{
    const struct irq_sink *sink = d->bus->irq;
    struct msix_route *r = &d->msix.routes[v];
    if (r->refused || !sink->msi_route_add || !sink->msi_route_update || !sink->msi_route_del)
        return false;
    if (r->fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        int route = fd < 0 ? -errno : sink->msi_route_add(sink->opaque, addr, data, fd);
        if (route < 0) {
            if (fd >= 0)
                close(fd);
            r->refused = true;
            log_debug("%s: MSI-X vector %u: no irqfd (%s); using direct MSIs", d->name, v,
                      strerror(-route));
            return false;
        }
        *r = (struct msix_route){.fd = fd, .route = route, .addr = addr, .data = data};
    } else if (r->addr != addr || r->data != data) {
        if (sink->msi_route_update(sink->opaque, r->route, addr, data) < 0)
            return false; /* this message goes directly; the next try updates again */
        r->addr = addr;
        r->data = data;
    }
    uint64_t one = 1;
    return write(r->fd, &one, sizeof(one)) == sizeof(one);
}

/* Unbind every vector's irqfd (device reset: the next machine starts clean). */
static void msix_drop_routes(struct pci_device *d)
{
    const struct irq_sink *sink = d->bus->irq;
    for (unsigned v = 0; v < d->msix.nr; v++) {
        struct msix_route *r = &d->msix.routes[v];
        if (r->fd >= 0) {
            sink->msi_route_del(sink->opaque, r->route);
            close(r->fd);
        }
        *r = (struct msix_route){.fd = -1, .route = -1};
    }
}

/* Device lock held. The irq sink never calls back into devices. */
static void msix_send(struct pci_device *d, unsigned v)
{
    const uint8_t *e = &d->msix.table[v * MSIX_ENTRY_SIZE];
    uint64_t addr = ld32(e) | ((uint64_t)ld32(e + 4) << 32);
    uint32_t data = ld32(e + 8);
    if (!msix_send_irqfd(d, v, addr, data))
        irq_send_msi(d->bus->irq, addr, data);
}

/* Deliver every pending vector that is no longer masked. */
static void msix_deliver_unmasked(struct pci_device *d)
{
    for (unsigned v = 0; v < d->msix.nr; v++) {
        if (msix_pending(d, v) && !msix_vector_masked(d, v)) {
            msix_set_pending(d, v, false);
            msix_send(d, v);
        }
    }
}

bool pci_msix_enabled(const struct pci_device *d)
{
    if (!d->has_msix)
        return false;
    struct pci_device *md = (struct pci_device *)d;
    pthread_mutex_lock(&md->lock);
    bool on = msix_ctrl(d) & MSIX_CTRL_ENABLE;
    pthread_mutex_unlock(&md->lock);
    return on;
}

void pci_msix_notify(struct pci_device *d, unsigned vector)
{
    if (!d->has_msix || vector >= d->msix.nr)
        return;
    pthread_mutex_lock(&d->lock);
    if (msix_ctrl(d) & MSIX_CTRL_ENABLE) {
        if (msix_vector_masked(d, vector))
            msix_set_pending(d, vector, true);
        else
            msix_send(d, vector);
    }
    pthread_mutex_unlock(&d->lock);
}

static uint64_t msix_table_read(struct pci_device *d, uint64_t off, unsigned size)
{
    uint64_t v = 0, len = (uint64_t)d->msix.nr * MSIX_ENTRY_SIZE;
    pthread_mutex_lock(&d->lock);
    for (unsigned i = 0; i < size && off + i < len; i++)
        v |= (uint64_t)d->msix.table[off + i] << (8 * i);
    pthread_mutex_unlock(&d->lock);
    return v;
}

static void msix_table_write(struct pci_device *d, uint64_t off, uint64_t value, unsigned size)
{
    uint64_t len = (uint64_t)d->msix.nr * MSIX_ENTRY_SIZE;
    pthread_mutex_lock(&d->lock);
    for (unsigned i = 0; i < size && off + i < len; i++) {
        uint64_t pos = off + i;
        uint8_t b = (value >> (8 * i)) & 0xff;
        if (pos % MSIX_ENTRY_SIZE >= MSIX_VECTOR_CTRL) /* only the mask bit is writable */
            b = (pos % MSIX_ENTRY_SIZE == MSIX_VECTOR_CTRL) ? (b & 1) : 0;
        d->msix.table[pos] = b;
    }
    /* Unmasking a vector with its pending bit set delivers it now. */
    msix_deliver_unmasked(d);
    pthread_mutex_unlock(&d->lock);
}

static uint64_t msix_pba_read(struct pci_device *d, uint64_t off, unsigned size)
{
    uint64_t v = 0;
    pthread_mutex_lock(&d->lock);
    const uint8_t *bytes = (const uint8_t *)d->msix.pending;
    for (unsigned i = 0; i < size && off + i < d->msix.pba_len; i++)
        v |= (uint64_t)bytes[off + i] << (8 * i);
    pthread_mutex_unlock(&d->lock);
    return v;
}

/* --- BAR dispatch (MSI-X structures first, then the device) ------------------- */

static bool in_window(uint64_t off, uint64_t start, uint64_t len)
{
    return off >= start && off - start < len;
}

static uint64_t bar_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pci_bar *bar = opaque;
    struct pci_device *d = bar->dev;
    if (d->has_msix && bar->index == d->msix.bar) {
        if (in_window(offset, d->msix.table_off, (uint64_t)d->msix.nr * MSIX_ENTRY_SIZE))
            return msix_table_read(d, offset - d->msix.table_off, size);
        if (in_window(offset, d->msix.pba_off, d->msix.pba_len))
            return msix_pba_read(d, offset - d->msix.pba_off, size);
    }
    return bar->ops && bar->ops->read ? bar->ops->read(bar->opaque, offset, size) : all_ones(size);
}

static void bar_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct pci_bar *bar = opaque;
    struct pci_device *d = bar->dev;
    if (d->has_msix && bar->index == d->msix.bar) {
        if (in_window(offset, d->msix.table_off, (uint64_t)d->msix.nr * MSIX_ENTRY_SIZE)) {
            msix_table_write(d, offset - d->msix.table_off, value, size);
            return;
        }
        if (in_window(offset, d->msix.pba_off, d->msix.pba_len))
            return; /* the PBA is read-only */
    }
    if (bar->ops && bar->ops->write)
        bar->ops->write(bar->opaque, offset, value, size);
}

static const struct bus_ops bar_ops = {.read = bar_read, .write = bar_write};

/* --- BAR registers and mappings ----------------------------------------------- */

static unsigned bar_reg(unsigned n) { return PCI_BAR0 + 4 * n; }

/* Force the read-only bits of each BAR register (size mask and type). */
static void bars_fixup(struct pci_device *d)
{
    for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
        struct pci_bar *bar = &d->bars[n];
        if (!bar->present)
            continue;
        uint8_t *reg = &d->config[bar_reg(n)];
        uint32_t lo = ld32(reg);
        switch (bar->kind) {
        case PCI_BAR_IO:
            st32(reg, (lo & ~(uint32_t)(bar->size - 1) & ~3u) | BAR_IO);
            break;
        case PCI_BAR_MEM32:
            st32(reg, lo & ~(uint32_t)(bar->size - 1) & ~0xfu);
            break;
        case PCI_BAR_MEM64: {
            st32(reg, (lo & ~(uint32_t)(bar->size - 1) & ~0xfu) | BAR_MEM64);
            uint32_t hi = ld32(reg + 4);
            st32(reg + 4, hi & ~(uint32_t)((bar->size - 1) >> 32));
            break;
        }
        }
    }
}

/* Where BAR n should be decoded now, if anywhere. */
static bool bar_target(const struct pci_device *d, unsigned n, uint64_t *addr)
{
    const struct pci_bar *bar = &d->bars[n];
    uint16_t cmd = ld16(&d->config[PCI_COMMAND]);
    uint32_t lo = ld32(&d->config[bar_reg(n)]);
    uint64_t a, end;
    switch (bar->kind) {
    case PCI_BAR_IO:
        if (!(cmd & CMD_IO))
            return false;
        a = lo & ~3u;
        if (a == 0 || a + bar->size > 0x10000) /* unassigned, or being sized */
            return false;
        break;
    case PCI_BAR_MEM32:
        if (!(cmd & CMD_MEM))
            return false;
        a = lo & ~0xfu;
        if (a == 0 || a + bar->size > 0x100000000ULL)
            return false;
        break;
    default:
        if (!(cmd & CMD_MEM))
            return false;
        a = (lo & ~0xfu) | ((uint64_t)ld32(&d->config[bar_reg(n) + 4]) << 32);
        if (a == 0 || add_overflows(a, bar->size, &end))
            return false;
        break;
    }
    *addr = a;
    return true;
}

/* Make the bus follow the BAR registers and command enables; lock held. */
static void bars_update_mappings(struct pci_device *d)
{
    for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
        struct pci_bar *bar = &d->bars[n];
        if (!bar->present)
            continue;
        struct bus *bus = bar->kind == PCI_BAR_IO ? d->bus->pio : d->bus->mmio;
        uint64_t addr = 0;
        bool want = bar_target(d, n, &addr);
        if (bar->mapped && (!want || addr != bar->mapped_addr)) {
            bus_unregister(bus, bar->mapped_addr, bar);
            bar->mapped = false;
        }
        if (want && !bar->mapped && bus_register(bus, addr, bar->size, &bar_ops, bar, d->name) == 0) {
            bar->mapped = true;
            bar->mapped_addr = addr;
        }
    }
}

static void bars_unmap_all(struct pci_device *d)
{
    for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
        struct pci_bar *bar = &d->bars[n];
        if (bar->mapped) {
            bus_unregister(bar->kind == PCI_BAR_IO ? d->bus->pio : d->bus->mmio,
                           bar->mapped_addr, bar);
            bar->mapped = false;
        }
    }
}

uint64_t pci_device_bar_addr(const struct pci_device *d, unsigned n)
{
    if (n >= PCI_NUM_BARS)
        return 0;
    struct pci_device *md = (struct pci_device *)d;
    pthread_mutex_lock(&md->lock);
    uint64_t addr = d->bars[n].mapped ? d->bars[n].mapped_addr : 0;
    pthread_mutex_unlock(&md->lock);
    return addr;
}

/* --- config space access ------------------------------------------------------- */

static bool touches(unsigned offset, unsigned size, unsigned start, unsigned len)
{
    return offset < start + len && start < offset + size;
}

static uint32_t config_read_stored(struct pci_device *d, unsigned offset, unsigned size)
{
    uint32_t v = 0;
    pthread_mutex_lock(&d->lock);
    for (unsigned i = 0; i < size; i++)
        v |= (uint32_t)d->config[offset + i] << (8 * i);
    pthread_mutex_unlock(&d->lock);
    return v;
}

/* offset/size are naturally aligned and inside config space. */
static uint32_t device_config_read(struct pci_device *d, unsigned offset, unsigned size)
{
    uint32_t v;
    if (d->ops && d->ops->config_read && d->ops->config_read(d->opaque, offset, size, &v))
        return size == 4 ? v : v & (uint32_t)all_ones(size);
    return config_read_stored(d, offset, size);
}

static void device_config_write(struct pci_device *d, unsigned offset, uint32_t value, unsigned size)
{
    if (offset < PCI_LEGACY_CONFIG_SIZE) {
        pthread_mutex_lock(&d->lock);
        uint16_t old_ctrl = d->has_msix ? msix_ctrl(d) : 0;
        for (unsigned i = 0; i < size && offset + i < PCI_LEGACY_CONFIG_SIZE; i++) {
            unsigned pos = offset + i;
            uint8_t b = (value >> (8 * i)) & 0xff;
            d->config[pos] = (uint8_t)((d->config[pos] & ~d->wmask[pos]) | (b & d->wmask[pos]));
            d->config[pos] &= (uint8_t)~(b & d->w1cmask[pos]);
        }
        if (touches(offset, size, PCI_COMMAND, 2) || touches(offset, size, PCI_BAR0, 24)) {
            bars_fixup(d);
            bars_update_mappings(d);
        }
        if (touches(offset, size, PCI_COMMAND, 4))
            intx_update(d); /* INTX_DISABLE, and keep status bit 3 honest */
        if (d->has_msix && touches(offset, size, d->msix.cap + 2, 2) && msix_ctrl(d) != old_ctrl)
            msix_deliver_unmasked(d);
        pthread_mutex_unlock(&d->lock);
    }
    if (d->ops && d->ops->config_write)
        d->ops->config_write(d->opaque, offset, value, size);
}

static struct pci_device *lookup_devfn(struct pci_bus *b, unsigned devfn)
{
    if (devfn & 7) /* single-function devices only */
        return NULL;
    return b->slots[(devfn >> 3) % PCI_MAX_SLOTS];
}

uint32_t pci_bus_config_read(struct pci_bus *b, unsigned devfn, unsigned offset, unsigned size)
{
    struct pci_device *d = devfn < 256 ? lookup_devfn(b, devfn) : NULL;
    if (size != 1 && size != 2 && size != 4)
        return ~0u;
    if (!d || offset >= PCI_CONFIG_SPACE_SIZE || offset + size > PCI_CONFIG_SPACE_SIZE)
        return (uint32_t)all_ones(size);
    if (offset % size) { /* unaligned: byte by byte */
        uint32_t v = 0;
        for (unsigned i = 0; i < size; i++)
            v |= device_config_read(d, offset + i, 1) << (8 * i);
        return v;
    }
    return device_config_read(d, offset, size);
}

void pci_bus_config_write(struct pci_bus *b, unsigned devfn, unsigned offset, uint32_t value,
                          unsigned size)
{
    struct pci_device *d = devfn < 256 ? lookup_devfn(b, devfn) : NULL;
    if (!d || (size != 1 && size != 2 && size != 4) || offset >= PCI_CONFIG_SPACE_SIZE ||
        offset + size > PCI_CONFIG_SPACE_SIZE)
        return;
    if (offset % size) {
        for (unsigned i = 0; i < size; i++)
            device_config_write(d, offset + i, (value >> (8 * i)) & 0xff, 1);
        return;
    }
    device_config_write(d, offset, value, size);
}

/* Port 0xcfc-0xcff: data for the address latched at 0xcf8. */
static bool cf8_decode(struct pci_bus *b, uint64_t port_off, unsigned *devfn, unsigned *offset)
{
    uint32_t addr = atomic_load(&b->config_addr);
    if (!(addr & 0x80000000u) || ((addr >> 16) & 0xff) != 0)
        return false; /* disabled, or a bus other than 0 */
    *devfn = (addr >> 8) & 0xff;
    *offset = (addr & 0xfc) + (unsigned)(port_off & 3);
    return true;
}

static uint64_t cfc_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pci_bus *b = opaque;
    unsigned devfn, reg;
    if (size > 4 || !cf8_decode(b, offset, &devfn, &reg))
        return all_ones(size);
    return pci_bus_config_read(b, devfn, reg, size);
}

static void cfc_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct pci_bus *b = opaque;
    unsigned devfn, reg;
    if (size <= 4 && cf8_decode(b, offset, &devfn, &reg))
        pci_bus_config_write(b, devfn, reg, (uint32_t)value, size);
}

static const struct bus_ops cfc_ops = {.read = cfc_read, .write = cfc_write};

/* ECAM: bus << 20 | devfn << 12 | register. Only bus 0 has devices. */
static uint64_t ecam_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pci_bus *b = opaque;
    if (offset >> 20)
        return all_ones(size);
    unsigned devfn = (offset >> 12) & 0xff, reg = offset & 0xfff;
    if (size == 8) /* two dword config reads */
        return pci_bus_config_read(b, devfn, reg, 4) |
               ((uint64_t)pci_bus_config_read(b, devfn, reg + 4, 4) << 32);
    return pci_bus_config_read(b, devfn, reg, size);
}

static void ecam_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct pci_bus *b = opaque;
    if (offset >> 20)
        return;
    unsigned devfn = (offset >> 12) & 0xff, reg = offset & 0xfff;
    if (size == 8) {
        pci_bus_config_write(b, devfn, reg, (uint32_t)value, 4);
        pci_bus_config_write(b, devfn, reg + 4, (uint32_t)(value >> 32), 4);
        return;
    }
    pci_bus_config_write(b, devfn, reg, (uint32_t)value, size);
}

static const struct bus_ops ecam_ops = {.read = ecam_read, .write = ecam_write};

/* --- devices ------------------------------------------------------------------------ */

static void set_wmask16(struct pci_device *d, unsigned off, uint16_t mask)
{
    d->wmask[off] = mask & 0xff;
    d->wmask[off + 1] = mask >> 8;
}

static struct pci_device *device_create(struct pci_bus *b, unsigned slot, const char *name,
                                        const struct pci_device_id *id,
                                        const struct pci_device_ops *ops, void *opaque)
{
    struct pci_device *d = xzalloc(sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    d->bus = b;
    d->slot = slot;
    d->name = xstrdup(name);
    d->ops = ops;
    d->opaque = opaque;
    uint8_t *c = d->config;
    st16(c + PCI_VENDOR_ID, id->vendor);
    st16(c + PCI_DEVICE_ID, id->device);
    c[PCI_REVISION] = id->revision;
    c[PCI_CLASS_PROG] = id->class_prog_if;
    c[PCI_CLASS_SUB] = id->class_sub;
    c[PCI_CLASS_BASE] = id->class_base;
    c[PCI_HEADER_TYPE] = 0x00;
    st16(c + PCI_SUBSYS_VENDOR, id->subsystem_vendor);
    st16(c + PCI_SUBSYS_ID, id->subsystem);
    set_wmask16(d, PCI_COMMAND, CMD_WRITABLE);
    d->w1cmask[PCI_STATUS + 1] = STATUS_W1C >> 8;
    d->wmask[PCI_CACHE_LINE] = 0xff;
    d->wmask[PCI_LATENCY] = 0xff;
    if (slot != 0) { /* the host bridge has no interrupt */
        c[PCI_INT_PIN] = 1; /* INTA# */
        c[PCI_INT_LINE] = (uint8_t)layout_pci_intx_gsi(slot, 0);
        d->wmask[PCI_INT_LINE] = 0xff;
    }
    for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
        d->bars[n].dev = d;
        d->bars[n].index = n;
    }
    b->slots[slot] = d;
    return d;
}

static void device_destroy(struct pci_device *d)
{
    pthread_mutex_lock(&d->lock);
    bars_unmap_all(d);
    d->intx_level = false;
    intx_update(d);
    if (d->has_msix)
        msix_drop_routes(d);
    pthread_mutex_unlock(&d->lock);
    d->bus->slots[d->slot] = NULL;
    free(d->msix.routes);
    free(d->msix.table);
    free(d->msix.pending);
    free(d->name);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

struct pci_device *pci_device_new(struct pci_bus *b, const char *name,
                                  const struct pci_device_id *id,
                                  const struct pci_device_ops *ops, void *opaque)
{
    for (unsigned slot = 0; slot < PCI_MAX_SLOTS; slot++)
        if (!b->slots[slot])
            return device_create(b, slot, name, id, ops, opaque);
    log_error("%s: no free PCI slot (bus 0 has %u)", name, PCI_MAX_SLOTS);
    return NULL;
}

unsigned pci_device_slot(const struct pci_device *d) { return d->slot; }
const char *pci_device_name(const struct pci_device *d) { return d->name; }
uint8_t *pci_device_config(struct pci_device *d) { return d->config; }

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

int pci_device_add_bar(struct pci_device *d, unsigned n, enum pci_bar_kind kind, uint64_t size,
                       const struct bus_ops *ops, void *opaque)
{
    if (n >= PCI_NUM_BARS || (kind == PCI_BAR_MEM64 && n + 1 >= PCI_NUM_BARS))
        return log_fail(-EINVAL, "%s: BAR %u does not exist", d->name, n);
    if (d->bars[n].present || (kind == PCI_BAR_MEM64 && d->bars[n + 1].present))
        return log_fail(-EEXIST, "%s: BAR %u is already declared", d->name, n);
    if (n > 0 && d->bars[n - 1].present && d->bars[n - 1].kind == PCI_BAR_MEM64)
        return log_fail(-EEXIST, "%s: BAR %u is the upper half of 64-bit BAR %u", d->name, n,
                        n - 1);
    bool ok;
    switch (kind) {
    case PCI_BAR_IO:
        ok = is_pow2(size) && size >= 4 && size <= 256;
        break;
    case PCI_BAR_MEM32:
        ok = is_pow2(size) && size >= 16 && size <= LAYOUT_PCI_MMIO32_SIZE;
        break;
    case PCI_BAR_MEM64:
        ok = is_pow2(size) && size >= 16 && size <= LAYOUT_PCI_MMIO32_SIZE;
        break;
    default:
        ok = false;
    }
    if (!ok)
        return log_fail(-EINVAL, "%s: BAR %u: bad size 0x%llx", d->name, n,
                        (unsigned long long)size);
    pthread_mutex_lock(&d->lock);
    struct pci_bar *bar = &d->bars[n];
    bar->kind = kind;
    bar->size = size;
    bar->ops = ops;
    bar->opaque = opaque;
    bar->present = true;
    unsigned words = kind == PCI_BAR_MEM64 ? 2 : 1;
    memset(&d->wmask[bar_reg(n)], 0xff, 4 * words);
    bars_fixup(d);
    pthread_mutex_unlock(&d->lock);
    return 0;
}

/* Caller holds the lock. Returns the offset or 0 if it does not fit. */
static unsigned add_capability_locked(struct pci_device *d, const void *data, size_t len)
{
    unsigned off = d->cap_end ? ALIGN_UP(d->cap_end, 4) : PCI_STD_HEADER_END;
    if (len < 2 || len > PCI_LEGACY_CONFIG_SIZE || off + len > PCI_LEGACY_CONFIG_SIZE)
        return 0;
    memcpy(&d->config[off], data, len);
    d->config[off + 1] = 0;
    if (d->last_cap)
        d->config[d->last_cap + 1] = (uint8_t)off;
    else
        d->config[PCI_CAP_PTR] = (uint8_t)off;
    d->config[PCI_STATUS] |= STATUS_CAP_LIST;
    /* The ID and next pointer are fixed; the body is the device's (it may be
     * a window such as virtio's PCI_CFG cap): guest-writable by default. */
    memset(&d->wmask[off + 2], 0xff, len - 2);
    d->last_cap = off;
    d->cap_end = off + (unsigned)len;
    return off;
}

unsigned pci_device_add_capability(struct pci_device *d, const void *data, size_t len)
{
    pthread_mutex_lock(&d->lock);
    unsigned off = add_capability_locked(d, data, len);
    pthread_mutex_unlock(&d->lock);
    if (!off)
        log_error("%s: no room for a %zu-byte PCI capability", d->name, len);
    return off;
}

int pci_device_init_msix(struct pci_device *d, unsigned nr_vectors, unsigned bar,
                         uint64_t table_offset, uint64_t pba_offset)
{
    if (d->has_msix)
        return log_fail(-EEXIST, "%s: MSI-X is already set up", d->name);
    if (nr_vectors == 0 || nr_vectors > MSIX_MAX_VECTORS)
        return log_fail(-EINVAL, "%s: MSI-X: %u vectors (expected 1-%u)", d->name, nr_vectors,
                        MSIX_MAX_VECTORS);
    if (bar >= PCI_NUM_BARS || !d->bars[bar].present || d->bars[bar].kind == PCI_BAR_IO)
        return log_fail(-EINVAL, "%s: MSI-X: BAR %u is not a memory BAR", d->name, bar);
    uint64_t table_len = (uint64_t)nr_vectors * MSIX_ENTRY_SIZE;
    uint64_t pba_len = ALIGN_UP((uint64_t)nr_vectors, 64) / 8;
    uint64_t size = d->bars[bar].size;
    if ((table_offset & 7) || (pba_offset & 7) || table_offset > size ||
        table_len > size - table_offset || pba_offset > size || pba_len > size - pba_offset ||
        (table_offset < pba_offset + pba_len && pba_offset < table_offset + table_len) ||
        table_offset > 0xffffffffULL || pba_offset > 0xffffffffULL)
        return log_fail(-EINVAL, "%s: MSI-X: table/PBA do not fit BAR %u", d->name, bar);

    uint8_t cap[12] = {CAP_ID_MSIX, 0};
    st16(&cap[2], (uint16_t)(nr_vectors - 1));
    st32(&cap[4], (uint32_t)table_offset | bar);
    st32(&cap[8], (uint32_t)pba_offset | bar);
    pthread_mutex_lock(&d->lock);
    unsigned off = add_capability_locked(d, cap, sizeof(cap));
    if (!off) {
        pthread_mutex_unlock(&d->lock);
        return log_fail(-ENOSPC, "%s: no room for the MSI-X capability", d->name);
    }
    memset(&d->wmask[off + 2], 0, sizeof(cap) - 2);
    d->wmask[off + 3] = (MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL) >> 8;
    d->msix.nr = nr_vectors;
    d->msix.bar = bar;
    d->msix.cap = off;
    d->msix.table_off = table_offset;
    d->msix.pba_off = pba_offset;
    d->msix.pba_len = pba_len;
    d->msix.table = xzalloc(table_len);
    d->msix.pending = xzalloc(pba_len);
    d->msix.routes = xcalloc(nr_vectors, sizeof(*d->msix.routes));
    for (unsigned v = 0; v < nr_vectors; v++)
        d->msix.routes[v] = (struct msix_route){.fd = -1, .route = -1};
    for (unsigned v = 0; v < nr_vectors; v++)
        d->msix.table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] = 1; /* masked */
    d->has_msix = true;
    pthread_mutex_unlock(&d->lock);
    return 0;
}

/* --- the bus ----------------------------------------------------------------------- */

struct pci_bus *pci_bus_new(struct bus *pio, struct bus *mmio, const struct irq_sink *irq)
{
    struct pci_bus *b = xzalloc(sizeof(*b));
    b->pio = pio;
    b->mmio = mmio;
    b->irq = irq;
    pthread_mutex_init(&b->intx_lock, NULL);

    pthread_mutex_lock(&cf8_lock);
    b->cf8 = cf8_get(pio);
    if (b->cf8 && b->cf8->pci) {
        log_error("pci: port 0xcf8 already serves another PCI bus");
        b->cf8 = NULL;
    }
    if (b->cf8)
        b->cf8->pci = b;
    pthread_mutex_unlock(&cf8_lock);
    if (!b->cf8)
        goto fail;
    if (bus_register(pio, LAYOUT_PCI_CONFIG_DATA, 4, &cfc_ops, b, "pci-config-data") < 0)
        goto fail;
    b->data_registered = true;
    if (mmio) {
        if (bus_register(mmio, LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE, &ecam_ops, b,
                         "pci-ecam") < 0)
            goto fail;
        b->ecam_registered = true;
    }
    static const struct pci_device_id host_bridge = {
        .vendor = HOST_BRIDGE_VENDOR,
        .device = HOST_BRIDGE_DEVICE,
        .subsystem_vendor = 0x1af4, /* as QEMU's q35 reports it */
        .subsystem = 0x1100,
        .class_base = 0x06, /* bridge */
        .class_sub = 0x00,  /* host bridge */
    };
    device_create(b, 0, "pci-host-bridge", &host_bridge, NULL, NULL);
    return b;
fail:
    pci_bus_free(b);
    return NULL;
}

void pci_bus_free(struct pci_bus *b)
{
    if (!b)
        return;
    for (unsigned slot = 0; slot < PCI_MAX_SLOTS; slot++)
        if (b->slots[slot])
            device_destroy(b->slots[slot]);
    if (b->ecam_registered)
        bus_unregister(b->mmio, LAYOUT_PCI_ECAM_BASE, b);
    if (b->data_registered)
        bus_unregister(b->pio, LAYOUT_PCI_CONFIG_DATA, b);
    if (b->cf8) {
        pthread_mutex_lock(&cf8_lock);
        b->cf8->pci = NULL;
        cf8_put(b->cf8);
        pthread_mutex_unlock(&cf8_lock);
    }
    pthread_mutex_destroy(&b->intx_lock);
    free(b);
}

struct bar_ref {
    struct pci_device *dev;
    unsigned n;
};

static int bar_ref_by_size_desc(const void *pa, const void *pb)
{
    const struct bar_ref *a = pa, *b = pb;
    uint64_t sa = a->dev->bars[a->n].size, sb = b->dev->bars[b->n].size;
    if (sa != sb)
        return sa > sb ? -1 : 1;
    /* Stable, readable order for equal sizes: slot, then BAR number. */
    if (a->dev->slot != b->dev->slot)
        return a->dev->slot < b->dev->slot ? -1 : 1;
    return (int)a->n - (int)b->n;
}

/* Place every BAR of one kind class (I/O or memory) in its window. */
static int assign_window(struct pci_bus *b, bool io, uint64_t base, uint64_t size)
{
    struct bar_ref refs[PCI_MAX_SLOTS * PCI_NUM_BARS];
    unsigned nr = 0;
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        struct pci_device *d = b->slots[s];
        for (unsigned n = 0; d && n < PCI_NUM_BARS; n++)
            if (d->bars[n].present && (d->bars[n].kind == PCI_BAR_IO) == io)
                refs[nr++] = (struct bar_ref){d, n};
    }
    /* Largest first: natural alignment then packs without holes. */
    qsort(refs, nr, sizeof(refs[0]), bar_ref_by_size_desc);
    uint64_t next = base, end = base + size;
    for (unsigned i = 0; i < nr; i++) {
        struct pci_device *d = refs[i].dev;
        struct pci_bar *bar = &d->bars[refs[i].n];
        uint64_t addr = ALIGN_UP(next, bar->size);
        if (addr + bar->size > end)
            return log_fail(-ENOSPC, "%s: no room for BAR %u (0x%llx bytes) in the PCI %s window",
                            d->name, refs[i].n, (unsigned long long)bar->size, io ? "I/O" : "MMIO");
        pthread_mutex_lock(&d->lock);
        uint8_t *reg = &d->config[bar_reg(refs[i].n)];
        st32(reg, (uint32_t)addr);
        if (bar->kind == PCI_BAR_MEM64)
            st32(reg + 4, (uint32_t)(addr >> 32));
        bars_fixup(d);
        pthread_mutex_unlock(&d->lock);
        next = addr + bar->size;
    }
    return 0;
}

int pci_bus_assign_bars(struct pci_bus *b)
{
    int ret = assign_window(b, true, LAYOUT_PCI_PIO_BASE, LAYOUT_PCI_PIO_SIZE);
    if (ret == 0)
        ret = assign_window(b, false, LAYOUT_PCI_MMIO32_BASE, LAYOUT_PCI_MMIO32_SIZE);
    if (ret < 0)
        return ret;
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++) {
        struct pci_device *d = b->slots[s];
        if (!d)
            continue;
        pthread_mutex_lock(&d->lock);
        uint16_t cmd = ld16(&d->config[PCI_COMMAND]) | CMD_IO | CMD_MEM | CMD_MASTER;
        st16(&d->config[PCI_COMMAND], cmd);
        bars_update_mappings(d);
        memcpy(d->config_assigned, d->config, PCI_LEGACY_CONFIG_SIZE);
        d->assigned = true;
        pthread_mutex_unlock(&d->lock);
    }
    return 0;
}

static void device_reset(struct pci_device *d)
{
    pthread_mutex_lock(&d->lock);
    if (d->assigned) {
        memcpy(d->config, d->config_assigned, PCI_LEGACY_CONFIG_SIZE);
    } else {
        st16(&d->config[PCI_COMMAND], 0);
        for (unsigned n = 0; n < PCI_NUM_BARS; n++)
            if (d->bars[n].present)
                st32(&d->config[bar_reg(n)], 0);
        bars_fixup(d);
    }
    if (d->has_msix) {
        st16(&d->config[d->msix.cap + 2], (uint16_t)(d->msix.nr - 1)); /* off, unmasked */
        memset(d->msix.table, 0, (size_t)d->msix.nr * MSIX_ENTRY_SIZE);
        for (unsigned v = 0; v < d->msix.nr; v++)
            d->msix.table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] = 1;
        memset(d->msix.pending, 0, d->msix.pba_len);
        msix_drop_routes(d);
    }
    d->intx_level = false;
    intx_update(d);
    bars_update_mappings(d);
    pthread_mutex_unlock(&d->lock);
    if (d->ops && d->ops->reset)
        d->ops->reset(d->opaque);
}

void pci_bus_reset(struct pci_bus *b)
{
    atomic_store(&b->config_addr, 0);
    for (unsigned s = 0; s < PCI_MAX_SLOTS; s++)
        if (b->slots[s])
            device_reset(b->slots[s]);
}
