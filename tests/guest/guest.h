/* The test guests' mini-library: port and MMIO access, COM1, TAP output,
 * isa-debug-exit, the PVH command line, ACPI tables, PCI config, IDT,
 * LAPIC/IOAPIC/PIT and a small virtio-pci (modern) driver.
 *
 * Exit protocol (isa-debug-exit at port 0xf4, iosize 4): the guest writes
 * GUEST_EXIT_PASS (0x10) or GUEST_EXIT_FAIL (0x11); the VMM exits with
 * (value << 1) | 1, i.e. status 33 for pass and 35 for fail. */
#ifndef GUEST_H
#define GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guest_layout.h"

#define GUEST_DEBUG_EXIT_PORT 0xf4
#define GUEST_EXIT_PASS 0x10
#define GUEST_EXIT_FAIL 0x11

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- port and memory-mapped I/O ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
/* Two 32-bit halves: devices need not support 8-byte accesses. */
static inline void mmio_write64(uint64_t a, uint64_t v)
{
    mmio_write32(a, (uint32_t)v);
    mmio_write32(a + 4, (uint32_t)(v >> 32));
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
/* Full barrier (store-load too) without SSE2's mfence, as Linux does it. */
static inline void mb(void) { __asm__ volatile("lock orl $0, (%%rsp)" ::: "memory", "cc"); }
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
/* Enable interrupts and halt until one arrives, atomically (sti shadow). */
static inline void cpu_wait_irq(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

/* ---- freestanding basics (lib.c) ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- console (COM1) ---- */
void serial_init(void);
void serial_putc(char c);
void serial_puts(const char *s);
/* Returns a received byte, or -1 if none arrived before timeout_us. */
int serial_getc_timeout(uint64_t timeout_us);
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- TAP ---- */
void tap_plan(unsigned n);
/* Prints "ok N - desc" or "not ok N - desc"; returns cond. */
bool tap_check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Skipped test: counts as ok ("ok N - desc # SKIP why"). */
void tap_skip(const char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the run: pass when every planned test ran and none failed. */
__attribute__((noreturn)) void tap_finish(void);
/* Fails the current test run at once (e.g. an unexpected exception). */
__attribute__((noreturn)) void tap_bail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void guest_exit(unsigned value);

/* ---- boot information ---- */
struct hvm_start_info {
    uint32_t magic; /* 0x336ec578, "xEn3" */
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
#define HVM_START_MAGIC 0x336ec578

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
/* The loader's start_info (NULL if the magic was wrong). Only valid
 * before anything overwrites low memory (the SMP trampoline does not
 * touch it: it lives at GUEST_TRAMPOLINE). */
const struct hvm_start_info *guest_start_info(void);

/* Each test program defines this; guest_start() calls it after setup. */
void guest_main(void);
/* The kernel command line's "key=value" word: copies value into buf,
 * returns false when absent. */
bool cmdline_get(const char *key, char *buf, size_t size);
uint64_t cmdline_u64(const char *key, uint64_t dflt);
const char *cmdline_all(void);
uint64_t guest_rsdp_hint(void);
/* Map [phys, phys+len) 1:1 as uncached device memory (above 4 GiB too). */
bool guest_map_mmio(uint64_t phys, uint64_t len);

/* ---- time: ACPI PM timer (3.579545 MHz) when present ---- */
void time_init(void);
bool time_have_pmtimer(void);
uint64_t time_now_us(void);
void time_delay_us(uint64_t us);

/* ---- ACPI ---- */
struct acpi_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
} __attribute__((packed));

/* The nth table with this signature (checksum verified), or NULL. */
const struct acpi_header *acpi_find_table(const char *sig, unsigned n);
uint64_t acpi_rsdp_address(void);
struct acpi_pm_info {
    bool found;
    uint16_t pm1a_cnt, pm1b_cnt;
    uint32_t pm_tmr;
    bool have_s5;
    uint8_t s5_typ_a;
    const struct acpi_header *dsdt;
};
void acpi_get_pm_info(struct acpi_pm_info *pm);
struct acpi_madt_info {
    bool found;
    uint64_t lapic_base;
    unsigned nr_cpus;           /* enabled (or online-capable) local APICs */
    uint8_t apic_ids[GUEST_MAX_CPUS];
    uint64_t ioapic_base;
    uint32_t ioapic_gsi_base;
    bool have_ioapic;
    uint32_t isa_gsi[16];       /* ISA IRQ -> GSI after interrupt source overrides */
    uint16_t isa_flags[16];
};
void acpi_get_madt_info(struct acpi_madt_info *m);
/* ECAM base of PCI segment 0 from MCFG, or 0. */
uint64_t acpi_mcfg_base(uint8_t *bus_start, uint8_t *bus_end);

/* ---- PCI ---- */
uint32_t pci_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint16_t pci_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off);
uint8_t pci_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);
void pci_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v);
/* Finds a function on bus 0 by IDs; returns false if none (nth match). */
bool pci_find(uint16_t vendor, uint16_t device, unsigned nth, unsigned *dev, unsigned *fn);
/* BAR n's address (64-bit BARs combined), its type and size (probed by
 * writing all-ones with decoding briefly off). */
struct pci_bar {
    uint64_t addr, size;
    bool io, is64, prefetch;
};
bool pci_bar_probe(unsigned dev, unsigned fn, unsigned n, struct pci_bar *bar);
/* Points MSI-X table entry `entry` at vector on LAPIC dest_apic (fixed,
 * edge) and enables MSI-X. False if the device has no usable MSI-X. */
bool pci_msix_enable(unsigned dev, unsigned fn, unsigned entry, uint8_t vector,
                     unsigned dest_apic);

/* ---- interrupts ---- */
struct isr_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
typedef void (*isr_handler)(struct isr_frame *f);
void idt_init(void);  /* every vector: exceptions bail out, others are counted */
void idt_load(void);  /* on an AP: load the shared IDT */
void isr_set_handler(unsigned vector, isr_handler h);
unsigned long isr_count(unsigned vector);

#define LAPIC_ID 0x20
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ESR 0x280
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
uint64_t lapic_base(void);
void lapic_enable(void);
uint32_t lapic_read(unsigned reg);
void lapic_write(unsigned reg, uint32_t v);
void lapic_eoi(void);
unsigned lapic_id(void);
/* Sends an IPI; returns false if the ICR stayed busy. */
bool lapic_send_ipi(unsigned apic_id, uint32_t icr_lo);

void ioapic_set_base(uint64_t base);
uint32_t ioapic_read(unsigned reg);
/* Route pin to vector on the BSP's APIC (fixed, physical); level/active-low
 * as given; masked = false arms it. */
void ioapic_route(unsigned pin, uint8_t vector, bool level, bool active_low, bool masked,
                  unsigned dest_apic);
unsigned ioapic_pins(void);

void pic_mask_all(void);
/* PIT channel 0, mode 2 (rate generator) with the given divisor. */
void pit_start_periodic(uint16_t divisor);
void pit_stop(void);

/* ---- virtio-pci (modern) ---- */
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_FAILED 0x80
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTIO_QUEUE_MAX 16

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
#define VIRTIO_MAX_QUEUES 2
struct virtq {
    uint16_t size, notify_off, last_used, next_avail, next_desc;
    uint16_t msix;                         /* MSI-X vector, 0xffff = none */
    struct virtq_desc *desc;
    volatile uint16_t *avail;              /* flags, idx, ring[] */
    volatile uint8_t *used;                /* flags, idx, ring[] of {id, len} */
};
struct virtio_dev {
    unsigned pci_dev, pci_fn;
    uint64_t common, notify, isr, device;  /* mapped addresses */
    uint32_t notify_mul;
    uint64_t features;                     /* negotiated */
    unsigned nr_queues;                    /* to set up (default 1); set before virtio_setup */
    struct virtq q[VIRTIO_MAX_QUEUES];
};
/* Finds virtio device type n-th instance (modern ID 0x1040 + type), maps its
 * capabilities. Returns false with a TAP diagnostic on failure. */
bool virtio_find(unsigned type, unsigned nth, struct virtio_dev *vd);
/* Reset, ACK, DRIVER, features (VERSION_1 plus wanted & offered),
 * FEATURES_OK, queues 0..nr_queues-1 set up, DRIVER_OK. */
bool virtio_setup(struct virtio_dev *vd, uint64_t wanted_features);
#define VIRTIO_STATUS_NEEDS_RESET 0x40
/* Queue primitives: add a chain (returns its head descriptor or -1),
 * notify the device, poll the next used element. */
int virtq_add(struct virtio_dev *vd, unsigned qi, const struct virtq_desc *chain, unsigned n);
void virtq_kick(struct virtio_dev *vd, unsigned qi);
bool virtq_get_used(struct virtio_dev *vd, unsigned qi, uint32_t *id, uint32_t *len,
                    uint64_t timeout_us);
uint8_t virtio_status(const struct virtio_dev *vd);
/* Posts a descriptor chain on queue qi, notifies, polls for completion.
 * Returns bytes written by the device or -1 on timeout. */
long virtio_transfer_q(struct virtio_dev *vd, unsigned qi, const struct virtq_desc *chain,
                       unsigned n, uint64_t timeout_us);
/* The same on queue 0. */
long virtio_transfer(struct virtio_dev *vd, const struct virtq_desc *chain, unsigned n,
                     uint64_t timeout_us);

#endif
