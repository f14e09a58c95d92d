/* ACPI PM1a event/control, PM timer and the 0xcf9 reset register. */
#include "hw/acpi_pm.h"

#include "core/log.h"
#include "core/util.h"
#include "hw/pci.h"
#include "machine/layout.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define PM1_TMR_STS 0x0001
#define PM1_PWRBTN_STS 0x0100
#define PM1_WAK_STS 0x8000
#define PM1_STS_MASK (PM1_TMR_STS | 0x0020 /* GBL */ | PM1_PWRBTN_STS | 0x0200 | 0x0400 | PM1_WAK_STS)
#define PM1_EN_MASK (PM1_TMR_STS | 0x0020 | PM1_PWRBTN_STS | 0x0200 | 0x0400)

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK 0x1c00
#define PM1_CNT_SLP_EN 0x2000

#define PM_TIMER_HZ 3579545ULL
#define PM_TIMER_MASK 0xffffffULL
#define NSEC_PER_SEC 1000000000ULL

#define RCR_SYS_RST 0x02
#define RCR_RST_CPU 0x04
#define RCR_FULL_RST 0x08

struct acpi_pm {
    pthread_mutex_t lock;
    struct bus *pio;
    const struct irq_sink *irq;
    const struct vm_control *vmctl;
    uint16_t sts, en, cnt;
    uint8_t rcr;
    uint64_t last_timer; /* for the TMR_STS bit-23 carry */
    bool sci_level;
};

static uint64_t pm_timer_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Split so the multiplication cannot overflow for any uptime. */
    return (uint64_t)ts.tv_sec * PM_TIMER_HZ + (uint64_t)ts.tv_nsec * PM_TIMER_HZ / NSEC_PER_SEC;
}

static void update_sci(struct acpi_pm *pm)
{
    /* TMR_STS: the counter's bit 23 changed since we last looked. */
    uint64_t now = pm_timer_ticks();
    if ((now >> 23) != (pm->last_timer >> 23))
        pm->sts |= PM1_TMR_STS;
    pm->last_timer = now;
    bool level = (pm->sts & pm->en) != 0;
    if (level != pm->sci_level) {
        pm->sci_level = level;
        irq_set_level(pm->irq, LAYOUT_ACPI_SCI_GSI, level);
    }
}

/* Registers narrower than the access: compose/split by byte offset. */
static uint64_t slice(uint64_t reg_value, unsigned byte_off, unsigned size)
{
    uint64_t v = reg_value >> (8 * byte_off);
    return size >= 8 ? v : v & ((1ULL << (8 * size)) - 1);
}

static uint16_t merge16(uint16_t old, unsigned byte_off, uint64_t value, unsigned size)
{
    uint32_t r = old;
    for (unsigned i = 0; i < size && byte_off + i < 2; i++) {
        unsigned sh = 8 * (byte_off + i);
        r = (r & ~(0xffu << sh)) | ((uint32_t)((value >> (8 * i)) & 0xff) << sh);
    }
    return (uint16_t)r;
}

/* PM1a_EVT: status (W1C) at 0-1, enable at 2-3. */
static uint64_t pm1_evt_read(void *opaque, uint64_t offset, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    update_sci(pm);
    uint64_t both = pm->sts | ((uint64_t)pm->en << 16);
    pthread_mutex_unlock(&pm->lock);
    return slice(both, (unsigned)offset, size);
}

static void pm1_evt_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    update_sci(pm);
    for (unsigned i = 0; i < size && offset + i < 4; i++) {
        unsigned reg_byte = (unsigned)offset + i;
        uint8_t b = (value >> (8 * i)) & 0xff;
        if (reg_byte < 2)
            pm->sts &= (uint16_t)~((b << (8 * reg_byte)) & PM1_STS_MASK);
        else
            pm->en = merge16(pm->en, reg_byte - 2, b, 1) & PM1_EN_MASK;
    }
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

static uint64_t pm1_cnt_read(void *opaque, uint64_t offset, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    uint16_t cnt = pm->cnt | PM1_CNT_SCI_EN;
    pthread_mutex_unlock(&pm->lock);
    return slice(cnt, (unsigned)offset, size);
}

static void pm1_cnt_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    uint16_t cnt = merge16(pm->cnt, (unsigned)offset, value, size);
    bool sleep = cnt & PM1_CNT_SLP_EN;
    unsigned slp_typ = (cnt & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
    pm->cnt = (cnt & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN; /* SLP_EN is write-only */
    pthread_mutex_unlock(&pm->lock);
    if (!sleep)
        return;
    if (slp_typ == ACPI_PM_SLP_TYP_S5)
        vm_request(pm->vmctl, VM_EVENT_POWEROFF, 0);
    else
        log_warn("acpi_pm: guest asked for sleep type %u; only S5 (power off) is supported", slp_typ);
}

static uint64_t pm_tmr_read(void *opaque, uint64_t offset, unsigned size)
{
    (void)opaque;
    return slice(pm_timer_ticks() & PM_TIMER_MASK, (unsigned)offset, size);
}

/* Reset control register (0xcf9). Reached through the PCI config-address
 * port (they share a dword), so it sees only byte accesses. */
static uint64_t rcr_read(void *opaque, uint64_t offset, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    uint8_t v = pm->rcr;
    pthread_mutex_unlock(&pm->lock);
    return v;
}

static void rcr_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    pm->rcr = value & (RCR_SYS_RST | RCR_FULL_RST); /* RST_CPU self-clears */
    pthread_mutex_unlock(&pm->lock);
    if (value & RCR_RST_CPU)
        vm_request(pm->vmctl, VM_EVENT_RESET, 0);
}

static const struct bus_ops pm1_evt_ops = {.read = pm1_evt_read, .write = pm1_evt_write};
static const struct bus_ops pm1_cnt_ops = {.read = pm1_cnt_read, .write = pm1_cnt_write};
static const struct bus_ops pm_tmr_ops = {.read = pm_tmr_read};
static const struct bus_ops rcr_ops = {.read = rcr_read, .write = rcr_write};

static void reset_locked(struct acpi_pm *pm)
{
    pm->sts = 0;
    pm->en = 0;
    pm->cnt = PM1_CNT_SCI_EN;
    pm->rcr = 0;
    pm->last_timer = pm_timer_ticks();
    pm->sci_level = false;
    irq_set_level(pm->irq, LAYOUT_ACPI_SCI_GSI, false);
}

void acpi_pm_reset(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    reset_locked(pm);
    pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_press_power_button(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->sts |= PM1_PWRBTN_STS;
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

static void unregister_all(struct acpi_pm *pm)
{
    bus_unregister(pm->pio, LAYOUT_ACPI_PM1_EVT, pm);
    bus_unregister(pm->pio, LAYOUT_ACPI_PM1_CNT, pm);
    bus_unregister(pm->pio, LAYOUT_ACPI_PM_TMR, pm);
    pci_port_cf9_detach(pm->pio, pm);
}

struct acpi_pm *acpi_pm_new(struct bus *pio, const struct irq_sink *irq, const struct vm_control *vmctl)
{
    struct acpi_pm *pm = xzalloc(sizeof(*pm));
    pthread_mutex_init(&pm->lock, NULL);
    pm->pio = pio;
    pm->irq = irq;
    pm->vmctl = vmctl;
    reset_locked(pm);
    if (bus_register(pio, LAYOUT_ACPI_PM1_EVT, 4, &pm1_evt_ops, pm, "acpi-pm1-evt") < 0 ||
        bus_register(pio, LAYOUT_ACPI_PM1_CNT, 2, &pm1_cnt_ops, pm, "acpi-pm1-cnt") < 0 ||
        bus_register(pio, LAYOUT_ACPI_PM_TMR, 4, &pm_tmr_ops, pm, "acpi-pm-tmr") < 0 ||
        pci_port_cf9_attach(pio, &rcr_ops, pm) < 0) {
        unregister_all(pm);
        pthread_mutex_destroy(&pm->lock);
        free(pm);
        return NULL;
    }
    return pm;
}

void acpi_pm_free(struct acpi_pm *pm)
{
    if (!pm)
        return;
    unregister_all(pm);
    pthread_mutex_destroy(&pm->lock);
    free(pm);
}
