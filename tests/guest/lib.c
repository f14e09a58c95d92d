/* The test guests' mini-library: see guest.h. Everything polls with a
 * deadline so a broken device yields a "not ok" line, not a hang. */
#include "guest.h"

#define COM1 0x3f8
#define UART_RBR 0
#define UART_THR 0
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20

/* ------------------------------------------------------------------ */
/* freestanding C basics                                              */

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return (uint8_t)a[i] < (uint8_t)b[i] ? -1 : 1;
        if (!a[i])
            return 0;
    }
    return 0;
}

struct fmt_out {
    char *buf;
    size_t size, len;
};

static void fmt_putc(struct fmt_out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void fmt_number(struct fmt_out *o, uint64_t v, unsigned base, bool upper, bool neg,
                       unsigned width, char pad)
{
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    unsigned n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    if (neg)
        tmp[n++] = '-';
    while (width > n) {
        fmt_putc(o, pad);
        width--;
    }
    while (n)
        fmt_putc(o, tmp[--n]);
}

/* %[0][width][.precision][l|ll|z](d|i|u|x|X|c|s|p|%) */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct fmt_out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            fmt_putc(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        unsigned width = 0, longs = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (unsigned)(*fmt++ - '0');
        size_t prec = (size_t)-1;
        if (*fmt == '.') {
            prec = 0;
            fmt++;
            while (*fmt >= '0' && *fmt <= '9')
                prec = prec * 10 + (size_t)(*fmt++ - '0');
        }
        while (*fmt == 'l' || *fmt == 'z') {
            longs++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = longs ? va_arg(ap, long) : va_arg(ap, int);
            fmt_number(&o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, false, v < 0, width, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            fmt_number(&o, v, *fmt == 'u' ? 10 : 16, *fmt == 'X', false, width, pad);
            break;
        }
        case 'p':
            fmt_putc(&o, '0');
            fmt_putc(&o, 'x');
            fmt_number(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, false, false, width, pad);
            break;
        case 'c':
            fmt_putc(&o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            size_t n = 0;
            while (n < prec && s[n])
                n++;
            while (width > n) {
                fmt_putc(&o, pad);
                width--;
            }
            for (size_t i = 0; i < n; i++)
                fmt_putc(&o, s[i]);
            break;
        }
        case '%':
            fmt_putc(&o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            fmt_putc(&o, '?');
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* ------------------------------------------------------------------ */
/* COM1                                                               */

void serial_init(void)
{
    outb(COM1 + UART_IER, 0x00);
    outb(COM1 + UART_LCR, 0x80); /* DLAB: divisor 1 = 115200 baud */
    outb(COM1 + 0, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + UART_LCR, 0x03); /* 8N1 */
    outb(COM1 + UART_FCR, 0x07); /* FIFO on, cleared, trigger level 1 */
    outb(COM1 + UART_MCR, 0x0b); /* DTR, RTS, OUT2 (IRQ gate on PCs) */
}

void serial_putc(char c)
{
    /* Bounded: a UART that never reports THR empty must not hang us. */
    for (unsigned i = 0; i < 100000; i++) {
        if (inb(COM1 + UART_LSR) & UART_LSR_THRE)
            break;
        cpu_relax();
    }
    outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            serial_putc('\r');
        serial_putc(*s);
    }
}

int serial_getc_timeout(uint64_t timeout_us)
{
    uint64_t end = time_now_us() + timeout_us;
    do {
        if (inb(COM1 + UART_LSR) & UART_LSR_DR)
            return inb(COM1 + UART_RBR);
        cpu_relax();
    } while (time_now_us() < end);
    return -1;
}

void printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    serial_puts(buf);
}

/* ------------------------------------------------------------------ */
/* TAP and exit                                                       */

static unsigned tap_planned, tap_run, tap_failed;

void guest_exit(unsigned value)
{
    outl(GUEST_DEBUG_EXIT_PORT, value);
    /* Only reached without isa-debug-exit: say so, then stop for good. */
    serial_puts("# isa-debug-exit (port 0xf4) did not end the VM\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}

void tap_plan(unsigned n)
{
    tap_planned = n;
    printf("1..%u\n", n);
}

static void tap_line(bool ok, const char *suffix, const char *fmt, va_list ap)
{
    char desc[256];
    vsnprintf(desc, sizeof(desc), fmt, ap);
    tap_run++;
    if (!ok)
        tap_failed++;
    printf("%s %u - %s%s\n", ok ? "ok" : "not ok", tap_run, desc, suffix);
}

bool tap_check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_line(cond, "", fmt, ap);
    va_end(ap);
    return cond;
}

void tap_skip(const char *why, const char *fmt, ...)
{
    char suffix[160];
    snprintf(suffix, sizeof(suffix), " # SKIP %s", why);
    va_list ap;
    va_start(ap, fmt);
    tap_line(true, suffix, fmt, ap);
    va_end(ap);
}

void tap_diag(const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    printf("# %s\n", buf);
}

void tap_finish(void)
{
    if (tap_run != tap_planned) {
        printf("# planned %u tests but ran %u\n", tap_planned, tap_run);
        guest_exit(GUEST_EXIT_FAIL);
    }
    guest_exit(tap_failed ? GUEST_EXIT_FAIL : GUEST_EXIT_PASS);
}

void tap_bail(const char *fmt, ...)
{
    char buf[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    printf("Bail out! %s\n", buf);
    guest_exit(GUEST_EXIT_FAIL);
}

/* ------------------------------------------------------------------ */
/* boot information, command line, extra mappings                     */

static char cmdline[1024];
static uint64_t rsdp_hint;
static const struct hvm_start_info *start_info_ptr;

extern uint64_t boot_pml4[512], boot_pdpt[512];

static void boot_info_read(uint32_t start_info_addr)
{
    const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)start_info_addr;
    if (!start_info_addr || si->magic != HVM_START_MAGIC) {
        printf("# no PVH start_info at %x (magic mismatch)\n", start_info_addr);
        return;
    }
    start_info_ptr = si;
    rsdp_hint = si->rsdp_paddr;
    /* Below 4 GiB is mapped; anything else is a loader bug we refuse. */
    if (si->cmdline_paddr && si->cmdline_paddr < 0xfffff000ULL) {
        const char *src = (const char *)(uintptr_t)si->cmdline_paddr;
        size_t i;
        for (i = 0; i + 1 < sizeof(cmdline) && src[i]; i++)
            cmdline[i] = src[i];
        cmdline[i] = '\0';
    }
}

const struct hvm_start_info *guest_start_info(void)
{
    return start_info_ptr;
}

const char *cmdline_all(void)
{
    return cmdline;
}

uint64_t guest_rsdp_hint(void)
{
    return rsdp_hint;
}

bool cmdline_get(const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *word = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - word) > klen && !strncmp(word, key, klen) && word[klen] == '=') {
            size_t n = (size_t)(p - word) - klen - 1;
            if (n >= size)
                n = size - 1;
            memcpy(buf, word + klen + 1, n);
            buf[n] = '\0';
            return true;
        }
    }
    return false;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    char v[32];
    if (!cmdline_get(key, v, sizeof(v)) || !v[0])
        return dflt;
    uint64_t r = 0;
    unsigned base = 10;
    const char *s = v;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            return dflt;
        r = r * base + d;
    }
    return r;
}

/* Page directories for 1 GiB slots above 4 GiB (high 64-bit BARs). */
static uint64_t extra_pd[4][512] __attribute__((aligned(4096)));
static unsigned extra_pd_used;

bool guest_map_mmio(uint64_t phys, uint64_t len)
{
    if (!len || phys + len < phys || phys + len > (512ULL << 30))
        return false;
    for (uint64_t a = phys & ~((2ULL << 20) - 1); a < phys + len; a += 2ULL << 20) {
        unsigned gi = (unsigned)(a >> 30);
        if (gi < 4)
            continue; /* boot.S mapped the first 4 GiB */
        if (!(boot_pdpt[gi] & 1)) {
            if (extra_pd_used == ARRAY_SIZE(extra_pd))
                return false;
            uint64_t *pd = extra_pd[extra_pd_used++];
            boot_pdpt[gi] = (uint64_t)(uintptr_t)pd | 3;
        }
        uint64_t *pd = (uint64_t *)(uintptr_t)(boot_pdpt[gi] & ~0xfffULL);
        /* present, writable, PCD|PWT (uncached), 2 MiB page */
        pd[(a >> 21) & 511] = a | 0x9b;
    }
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
    return true;
}

/* ------------------------------------------------------------------ */
/* time: the ACPI PM timer                                            */

#define PMTMR_HZ 3579545ULL

static uint16_t pmtmr_port;
static uint32_t pmtmr_last;
static uint64_t pmtmr_ticks, fallback_us;

void time_init(void)
{
    struct acpi_pm_info pm;
    acpi_get_pm_info(&pm);
    if (pm.found && pm.pm_tmr && pm.pm_tmr < 0x10000) {
        pmtmr_port = (uint16_t)pm.pm_tmr;
        pmtmr_last = inl(pmtmr_port) & 0xffffff;
    }
}

bool time_have_pmtimer(void)
{
    return pmtmr_port != 0;
}

uint64_t time_now_us(void)
{
    if (!pmtmr_port) {
        /* No clock: count calls. Deadlines still end, just not in real time. */
        fallback_us += 20;
        return fallback_us;
    }
    /* 24 bits wrap every 4.7 s; callers poll far more often than that. */
    uint32_t now = inl(pmtmr_port) & 0xffffff;
    pmtmr_ticks += (now - pmtmr_last) & 0xffffff;
    pmtmr_last = now;
    return pmtmr_ticks * 1000000ULL / PMTMR_HZ;
}

void time_delay_us(uint64_t us)
{
    uint64_t end = time_now_us() + us;
    while (time_now_us() < end)
        cpu_relax();
}

/* ------------------------------------------------------------------ */
/* ACPI                                                               */

static bool acpi_checksum_ok(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + b[i]);
    return sum == 0;
}

static uint64_t rsdp_scan(uint64_t start, uint64_t end)
{
    for (uint64_t a = start; a + 20 <= end; a += 16) {
        const char *p = (const char *)(uintptr_t)a;
        if (!memcmp(p, "RSD PTR ", 8) && acpi_checksum_ok(p, 20))
            return a;
    }
    return 0;
}

static uint64_t acpi_rsdp_cached;

uint64_t acpi_rsdp_address(void)
{
    if (acpi_rsdp_cached)
        return acpi_rsdp_cached;
    uint64_t a = 0;
    if (rsdp_hint && rsdp_hint < 0xfffff000ULL &&
        !memcmp((const void *)(uintptr_t)rsdp_hint, "RSD PTR ", 8))
        a = rsdp_hint;
    if (!a) {
        uint64_t ebda = (uint64_t)(*(volatile uint16_t *)0x40e) << 4;
        if (ebda >= 0x80000 && ebda < 0xa0000)
            a = rsdp_scan(ebda, ebda + 1024);
    }
    if (!a)
        a = rsdp_scan(0xe0000, 0x100000);
    acpi_rsdp_cached = a;
    return a;
}

static const struct acpi_header *acpi_table_at(uint64_t addr)
{
    if (!addr || addr >= 0xfffff000ULL)
        return NULL;
    const struct acpi_header *h = (const struct acpi_header *)(uintptr_t)addr;
    if (h->length < sizeof(*h) || h->length > (16u << 20) || addr + h->length > 0x100000000ULL)
        return NULL;
    return acpi_checksum_ok(h, h->length) ? h : NULL;
}

const struct acpi_header *acpi_find_table(const char *sig, unsigned n)
{
    uint64_t rsdp = acpi_rsdp_address();
    if (!rsdp)
        return NULL;
    const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
    uint64_t root;
    unsigned esize;
    uint32_t rsdt32;
    memcpy(&rsdt32, r + 16, 4);
    if (r[15] >= 2) {
        memcpy(&root, r + 24, 8);
        esize = 8;
        if (!root) {
            root = rsdt32;
            esize = 4;
        }
    } else {
        root = rsdt32;
        esize = 4;
    }
    const struct acpi_header *rt = acpi_table_at(root);
    if (!rt)
        return NULL;
    unsigned count = (rt->length - sizeof(*rt)) / esize;
    const uint8_t *ent = (const uint8_t *)(rt + 1);
    for (unsigned i = 0; i < count; i++) {
        uint64_t a = 0;
        memcpy(&a, ent + i * esize, esize);
        const struct acpi_header *t = acpi_table_at(a);
        if (t && !memcmp(t->signature, sig, 4) && n-- == 0)
            return t;
    }
    return NULL;
}

/* The first integer of the \_S5 package: NameOp "_S5_" PackageOp
 * PkgLength NumElements (BytePrefix b | ZeroOp | OneOp). */
static bool acpi_dsdt_s5(const struct acpi_header *dsdt, uint8_t *typ)
{
    const uint8_t *b = (const uint8_t *)dsdt;
    uint32_t len = dsdt->length;
    for (uint32_t i = sizeof(*dsdt); i + 12 < len; i++) {
        if (memcmp(b + i, "_S5_", 4) || b[i + 4] != 0x12)
            continue;
        uint32_t p = i + 5;
        p += 1 + (b[p] >> 6); /* PkgLength: lead byte + 0..3 more */
        p += 1;               /* NumElements */
        if (p + 1 >= len)
            return false;
        if (b[p] == 0x0a) {
            *typ = b[p + 1];
            return true;
        }
        if (b[p] == 0x00 || b[p] == 0x01) {
            *typ = b[p];
            return true;
        }
        return false;
    }
    return false;
}

void acpi_get_pm_info(struct acpi_pm_info *pm)
{
    memset(pm, 0, sizeof(*pm));
    const struct acpi_header *f = acpi_find_table("FACP", 0);
    if (!f || f->length < 80)
        return;
    const uint8_t *b = (const uint8_t *)f;
    uint32_t v;
    pm->found = true;
    memcpy(&v, b + 64, 4);
    pm->pm1a_cnt = (uint16_t)v;
    memcpy(&v, b + 68, 4);
    pm->pm1b_cnt = (uint16_t)v;
    memcpy(&v, b + 76, 4);
    pm->pm_tmr = v;
    uint64_t dsdt = 0;
    memcpy(&v, b + 40, 4);
    dsdt = v;
    if (f->length >= 148) {
        uint64_t x;
        memcpy(&x, b + 140, 8);
        if (x)
            dsdt = x;
    }
    pm->dsdt = acpi_table_at(dsdt);
    if (pm->dsdt)
        pm->have_s5 = acpi_dsdt_s5(pm->dsdt, &pm->s5_typ_a);
}

void acpi_get_madt_info(struct acpi_madt_info *m)
{
    memset(m, 0, sizeof(*m));
    for (unsigned i = 0; i < 16; i++)
        m->isa_gsi[i] = i;
    m->lapic_base = 0xfee00000;
    m->ioapic_base = 0xfec00000;
    const struct acpi_header *t = acpi_find_table("APIC", 0);
    if (!t || t->length < 44)
        return;
    const uint8_t *b = (const uint8_t *)t;
    uint32_t v32;
    memcpy(&v32, b + 36, 4);
    m->found = true;
    m->lapic_base = v32;
    for (uint32_t off = 44; off + 2 <= t->length;) {
        uint8_t type = b[off], len = b[off + 1];
        if (len < 2 || off + len > t->length)
            break;
        const uint8_t *e = b + off;
        if (type == 0 && len >= 8) {
            memcpy(&v32, e + 4, 4);
            if ((v32 & 1) && m->nr_cpus < GUEST_MAX_CPUS)
                m->apic_ids[m->nr_cpus++] = e[3];
        } else if (type == 1 && len >= 12 && !m->have_ioapic) {
            memcpy(&v32, e + 4, 4);
            m->ioapic_base = v32;
            memcpy(&m->ioapic_gsi_base, e + 8, 4);
            m->have_ioapic = true;
        } else if (type == 2 && len >= 10 && e[3] < 16) {
            memcpy(&m->isa_gsi[e[3]], e + 4, 4);
            memcpy(&m->isa_flags[e[3]], e + 8, 2);
        } else if (type == 5 && len >= 12) {
            memcpy(&m->lapic_base, e + 4, 8);
        }
        off += len;
    }
}

uint64_t acpi_mcfg_base(uint8_t *bus_start, uint8_t *bus_end)
{
    const struct acpi_header *t = acpi_find_table("MCFG", 0);
    if (!t)
        return 0;
    const uint8_t *b = (const uint8_t *)t;
    for (uint32_t off = 44; off + 16 <= t->length; off += 16) {
        uint16_t seg;
        uint64_t base;
        memcpy(&base, b + off, 8);
        memcpy(&seg, b + off + 8, 2);
        if (seg == 0) {
            *bus_start = b[off + 10];
            *bus_end = b[off + 11];
            return base;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* PCI configuration mechanism #1                                      */

static void pci_select(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    outl(0xcf8, 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc));
}

uint32_t pci_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    pci_select(bus, dev, fn, off);
    return inl(0xcfc);
}

uint16_t pci_read16(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    pci_select(bus, dev, fn, off);
    return inw((uint16_t)(0xcfc + (off & 2)));
}

uint8_t pci_read8(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    pci_select(bus, dev, fn, off);
    return inb((uint16_t)(0xcfc + (off & 3)));
}

void pci_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v)
{
    pci_select(bus, dev, fn, off);
    outl(0xcfc, v);
}

void pci_write16(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint16_t v)
{
    pci_select(bus, dev, fn, off);
    outw((uint16_t)(0xcfc + (off & 2)), v);
}

bool pci_find(uint16_t vendor, uint16_t device, unsigned nth, unsigned *dev, unsigned *fn)
{
    for (unsigned d = 0; d < 32; d++) {
        for (unsigned f = 0; f < 8; f++) {
            uint32_t id = pci_read32(0, d, f, 0);
            if ((id & 0xffff) == 0xffff) {
                if (f == 0)
                    break;
                continue;
            }
            if ((id & 0xffff) == vendor && (id >> 16) == device && nth-- == 0) {
                *dev = d;
                *fn = f;
                return true;
            }
            if (f == 0 && !(pci_read8(0, d, 0, 0x0e) & 0x80))
                break; /* single-function device */
        }
    }
    return false;
}

bool pci_bar_probe(unsigned dev, unsigned fn, unsigned n, struct pci_bar *bar)
{
    memset(bar, 0, sizeof(*bar));
    if (n >= 6)
        return false;
    unsigned off = 0x10 + 4 * n;
    uint32_t lo = pci_read32(0, dev, fn, off);
    uint16_t cmd = pci_read16(0, dev, fn, 0x04);
    bar->io = lo & 1;
    bar->is64 = !bar->io && ((lo >> 1) & 3) == 2;
    bar->prefetch = !bar->io && (lo & 8);
    if (bar->is64 && n == 5)
        return false;
    /* Decoding off while the BAR holds all-ones. */
    pci_write16(0, dev, fn, 0x04, cmd & (uint16_t)~3u);
    pci_write32(0, dev, fn, off, 0xffffffff);
    uint32_t mask_lo = pci_read32(0, dev, fn, off);
    pci_write32(0, dev, fn, off, lo);
    uint32_t hi = 0, mask_hi = bar->is64 ? 0xffffffff : 0;
    if (bar->is64) {
        hi = pci_read32(0, dev, fn, off + 4);
        pci_write32(0, dev, fn, off + 4, 0xffffffff);
        mask_hi = pci_read32(0, dev, fn, off + 4);
        pci_write32(0, dev, fn, off + 4, hi);
    }
    pci_write16(0, dev, fn, 0x04, cmd);
    uint64_t mask;
    if (!(mask_lo & ~0xfu) && !(bar->is64 && mask_hi)) {
        memset(bar, 0, sizeof(*bar)); /* BAR not implemented */
        return false;
    }
    if (bar->io) {
        bar->addr = lo & ~3u;
        mask = (mask_lo & ~3u) | 0xffff0000u;
        mask |= 0xffffffff00000000ULL;
    } else {
        bar->addr = ((uint64_t)hi << 32) | (lo & ~0xfu);
        mask = ((uint64_t)mask_hi << 32) | (mask_lo & ~0xfu);
        if (!bar->is64)
            mask |= 0xffffffff00000000ULL;
    }
    bar->size = mask ? (~mask + 1) : 0;
    return bar->size != 0;
}

bool pci_msix_enable(unsigned dev, unsigned fn, unsigned entry, uint8_t vector,
                     unsigned dest_apic)
{
    unsigned ptr = pci_read8(0, dev, fn, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (pci_read8(0, dev, fn, ptr) == 0x11)
            break;
        ptr = pci_read8(0, dev, fn, ptr + 1) & 0xfc;
    }
    if (!ptr)
        return false;
    uint16_t ctl = pci_read16(0, dev, fn, ptr + 2);
    unsigned entries = (ctl & 0x7ff) + 1;
    uint32_t table = pci_read32(0, dev, fn, ptr + 4);
    struct pci_bar bar;
    if (entry >= entries || !pci_bar_probe(dev, fn, table & 7, &bar) || bar.io || !bar.addr ||
        (uint64_t)(table & ~7u) + 16ULL * entries > bar.size)
        return false;
    uint64_t e = bar.addr + (table & ~7u) + 16ULL * entry;
    if (!guest_map_mmio(e, 16))
        return false;
    /* Function mask on while the entry changes, then MSI-X on, unmasked. */
    pci_write16(0, dev, fn, ptr + 2, (uint16_t)((ctl & ~0x8000u) | 0x4000u));
    mmio_write32(e + 0, 0xfee00000u | (dest_apic << 12));
    mmio_write32(e + 4, 0);
    mmio_write32(e + 8, vector);
    mmio_write32(e + 12, 0); /* vector control: unmasked */
    pci_write16(0, dev, fn, ptr + 2, (uint16_t)((ctl & ~0x4000u) | 0x8000u));
    return true;
}

/* ------------------------------------------------------------------ */
/* interrupts                                                         */

struct idt_gate {
    uint16_t off_lo, selector;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));
static isr_handler handlers[256];
static volatile unsigned long counts[256];
static bool lapic_on;
extern const uint64_t isr_stub_table[256];

void isr_dispatch(struct isr_frame *f);
void isr_dispatch(struct isr_frame *f)
{
    unsigned v = (unsigned)f->vector & 0xff;
    counts[v]++;
    if (handlers[v]) {
        handlers[v](f);
        return;
    }
    if (v < 32)
        tap_bail("CPU exception %u at rip %lx, error code %lx", v, f->rip, f->error);
    if (v != 0xff && lapic_on)
        lapic_eoi();
}

void idt_load(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) d = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
}

void idt_init(void)
{
    for (unsigned v = 0; v < 256; v++) {
        uint64_t a = isr_stub_table[v];
        idt[v] = (struct idt_gate){ .off_lo = (uint16_t)a, .selector = 0x08, .ist = 0,
                                    .type = 0x8e, .off_mid = (uint16_t)(a >> 16),
                                    .off_hi = (uint32_t)(a >> 32), .zero = 0 };
    }
    idt_load();
}

void isr_set_handler(unsigned vector, isr_handler h)
{
    handlers[vector & 0xff] = h;
}

unsigned long isr_count(unsigned vector)
{
    return counts[vector & 0xff];
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

#define MSR_APIC_BASE 0x1b

uint64_t lapic_base(void)
{
    return rdmsr(MSR_APIC_BASE) & 0xffffff000ULL;
}

uint32_t lapic_read(unsigned reg)
{
    return mmio_read32(lapic_base() + reg);
}

void lapic_write(unsigned reg, uint32_t v)
{
    mmio_write32(lapic_base() + reg, v);
}

void lapic_enable(void)
{
    uint64_t b = rdmsr(MSR_APIC_BASE);
    if (!(b & (1u << 11)))
        wrmsr(MSR_APIC_BASE, b | (1u << 11));
    lapic_write(LAPIC_SVR, 0x1ff); /* software enable, spurious vector 0xff */
    lapic_on = true;
}

void lapic_eoi(void)
{
    lapic_write(LAPIC_EOI, 0);
}

unsigned lapic_id(void)
{
    return lapic_read(LAPIC_ID) >> 24;
}

bool lapic_send_ipi(unsigned apic_id, uint32_t icr_lo)
{
    lapic_write(LAPIC_ICR_HI, apic_id << 24);
    lapic_write(LAPIC_ICR_LO, icr_lo);
    for (unsigned i = 0; i < 100000; i++) {
        if (!(lapic_read(LAPIC_ICR_LO) & (1u << 12)))
            return true;
        cpu_relax();
    }
    return false;
}

static uint64_t ioapic_addr = 0xfec00000;

void ioapic_set_base(uint64_t base)
{
    ioapic_addr = base;
}

uint32_t ioapic_read(unsigned reg)
{
    mmio_write32(ioapic_addr, reg);
    return mmio_read32(ioapic_addr + 0x10);
}

static void ioapic_write(unsigned reg, uint32_t v)
{
    mmio_write32(ioapic_addr, reg);
    mmio_write32(ioapic_addr + 0x10, v);
}

unsigned ioapic_pins(void)
{
    return ((ioapic_read(1) >> 16) & 0xff) + 1;
}

void ioapic_route(unsigned pin, uint8_t vector, bool level, bool active_low, bool masked,
                  unsigned dest_apic)
{
    uint32_t lo = vector | (active_low ? 1u << 13 : 0) | (level ? 1u << 15 : 0) |
                  (masked ? 1u << 16 : 0);
    ioapic_write(0x10 + 2 * pin, 1u << 16); /* mask while changing */
    ioapic_write(0x11 + 2 * pin, dest_apic << 24);
    ioapic_write(0x10 + 2 * pin, lo);
}

void pic_mask_all(void)
{
    /* Remap to 0x20.. first so a stray PIC interrupt cannot look like a
     * CPU exception, then mask every line: we use the IOAPIC. */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

void pit_start_periodic(uint16_t divisor)
{
    outb(0x43, 0x34); /* channel 0, lobyte/hibyte, mode 2, binary */
    outb(0x40, (uint8_t)divisor);
    outb(0x40, (uint8_t)(divisor >> 8));
}

void pit_stop(void)
{
    outb(0x43, 0x30); /* mode 0 waits for a count that we never write */
}

/* ------------------------------------------------------------------ */
/* virtio-pci, modern                                                 */

#define VIRTIO_PCI_CAP_COMMON 1
#define VIRTIO_PCI_CAP_NOTIFY 2
#define VIRTIO_PCI_CAP_ISR 3
#define VIRTIO_PCI_CAP_DEVICE 4
#define VIRTIO_F_VERSION_1 (1ULL << 32)

#define VCOMMON_DFSELECT 0
#define VCOMMON_DF 4
#define VCOMMON_GFSELECT 8
#define VCOMMON_GF 12
#define VCOMMON_MSIX 16
#define VCOMMON_NUMQ 18
#define VCOMMON_STATUS 20
#define VCOMMON_Q_SELECT 22
#define VCOMMON_Q_SIZE 24
#define VCOMMON_Q_MSIX 26
#define VCOMMON_Q_ENABLE 28
#define VCOMMON_Q_NOFF 30
#define VCOMMON_Q_DESC 32
#define VCOMMON_Q_DRIVER 40
#define VCOMMON_Q_DEVICE 48

static uint8_t virtq_pages[8][4096] __attribute__((aligned(4096)));
static unsigned virtq_pages_used;

bool virtio_find(unsigned type, unsigned nth, struct virtio_dev *vd)
{
    memset(vd, 0, sizeof(*vd));
    unsigned d, f;
    if (!pci_find(0x1af4, (uint16_t)(0x1040 + type), nth, &d, &f)) {
        tap_diag("no virtio device type %u (PCI 1af4:%04x) on bus 0", type, 0x1040 + type);
        return false;
    }
    vd->pci_dev = d;
    vd->pci_fn = f;
    vd->nr_queues = 1;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        vd->q[i].msix = 0xffff;
    if (!(pci_read16(0, d, f, 0x06) & 0x10)) {
        tap_diag("virtio %02x.%x: no capability list", d, f);
        return false;
    }
    /* Decoding on, bus mastering on (the device DMAs into our queues). */
    pci_write16(0, d, f, 0x04, pci_read16(0, d, f, 0x04) | 0x6);
    unsigned ptr = pci_read8(0, d, f, 0x34) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        uint8_t id = pci_read8(0, d, f, ptr);
        if (id == 0x09) {
            uint8_t cfg_type = pci_read8(0, d, f, ptr + 3);
            uint8_t bar_n = pci_read8(0, d, f, ptr + 4);
            uint32_t off = pci_read32(0, d, f, ptr + 8);
            uint32_t len = pci_read32(0, d, f, ptr + 12);
            struct pci_bar bar;
            if (cfg_type >= 1 && cfg_type <= 4 && bar_n < 6 && pci_bar_probe(d, f, bar_n, &bar) &&
                !bar.io && bar.addr && (uint64_t)off + len <= bar.size &&
                guest_map_mmio(bar.addr + off, len ? len : 1)) {
                uint64_t a = bar.addr + off;
                if (cfg_type == VIRTIO_PCI_CAP_COMMON && !vd->common)
                    vd->common = a;
                else if (cfg_type == VIRTIO_PCI_CAP_NOTIFY && !vd->notify) {
                    vd->notify = a;
                    vd->notify_mul = pci_read32(0, d, f, ptr + 16);
                } else if (cfg_type == VIRTIO_PCI_CAP_ISR && !vd->isr)
                    vd->isr = a;
                else if (cfg_type == VIRTIO_PCI_CAP_DEVICE && !vd->device)
                    vd->device = a;
            }
        }
        ptr = pci_read8(0, d, f, ptr + 1) & 0xfc;
    }
    if (!vd->common || !vd->notify || !vd->isr) {
        tap_diag("virtio %02x.%x: missing common/notify/isr capability (%lx %lx %lx)", d, f,
                 vd->common, vd->notify, vd->isr);
        return false;
    }
    return true;
}

static bool virtio_fail(struct virtio_dev *vd, const char *why)
{
    mmio_write8(vd->common + VCOMMON_STATUS, VIRTIO_STATUS_FAILED);
    tap_diag("virtio %02x.%x: %s", vd->pci_dev, vd->pci_fn, why);
    return false;
}

static bool virtq_setup(struct virtio_dev *vd, unsigned qi)
{
    uint64_t c = vd->common;
    struct virtq *q = &vd->q[qi];
    mmio_write16(c + VCOMMON_Q_SELECT, (uint16_t)qi);
    uint16_t qmax = mmio_read16(c + VCOMMON_Q_SIZE);
    if (!qmax)
        return virtio_fail(vd, "queue size is 0");
    q->size = qmax < VIRTIO_QUEUE_MAX ? qmax : VIRTIO_QUEUE_MAX;
    /* A device reset and set up again keeps its queue pages. */
    uint8_t *page = (uint8_t *)q->desc;
    if (!page) {
        if (virtq_pages_used == ARRAY_SIZE(virtq_pages))
            return virtio_fail(vd, "out of queue memory");
        page = virtq_pages[virtq_pages_used++];
    }
    memset(page, 0, 4096);
    q->desc = (struct virtq_desc *)page;
    q->avail = (volatile uint16_t *)(page + 1024);
    q->used = page + 2048;
    q->last_used = q->next_avail = q->next_desc = 0;
    mmio_write16(c + VCOMMON_Q_SIZE, q->size);
    mmio_write16(c + VCOMMON_Q_MSIX, q->msix);
    if (mmio_read16(c + VCOMMON_Q_MSIX) != q->msix)
        return virtio_fail(vd, "queue_msix_vector did not read back");
    mmio_write64(c + VCOMMON_Q_DESC, (uint64_t)(uintptr_t)q->desc);
    mmio_write64(c + VCOMMON_Q_DRIVER, (uint64_t)(uintptr_t)q->avail);
    mmio_write64(c + VCOMMON_Q_DEVICE, (uint64_t)(uintptr_t)q->used);
    q->notify_off = mmio_read16(c + VCOMMON_Q_NOFF);
    mmio_write16(c + VCOMMON_Q_ENABLE, 1);
    if (mmio_read16(c + VCOMMON_Q_ENABLE) != 1)
        return virtio_fail(vd, "queue_enable did not read back 1");
    return true;
}

bool virtio_setup(struct virtio_dev *vd, uint64_t wanted)
{
    uint64_t c = vd->common;
    mmio_write8(c + VCOMMON_STATUS, 0);
    for (unsigned i = 0; i < 100000 && mmio_read8(c + VCOMMON_STATUS); i++)
        cpu_relax();
    if (mmio_read8(c + VCOMMON_STATUS))
        return virtio_fail(vd, "device status did not reset to 0");
    mmio_write8(c + VCOMMON_STATUS, VIRTIO_STATUS_ACK);
    mmio_write8(c + VCOMMON_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);

    mmio_write32(c + VCOMMON_DFSELECT, 0);
    uint64_t offered = mmio_read32(c + VCOMMON_DF);
    mmio_write32(c + VCOMMON_DFSELECT, 1);
    offered |= (uint64_t)mmio_read32(c + VCOMMON_DF) << 32;
    if (!(offered & VIRTIO_F_VERSION_1))
        return virtio_fail(vd, "VIRTIO_F_VERSION_1 not offered");
    vd->features = (wanted & offered) | VIRTIO_F_VERSION_1;
    mmio_write32(c + VCOMMON_GFSELECT, 0);
    mmio_write32(c + VCOMMON_GF, (uint32_t)vd->features);
    mmio_write32(c + VCOMMON_GFSELECT, 1);
    mmio_write32(c + VCOMMON_GF, (uint32_t)(vd->features >> 32));
    uint8_t st = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    mmio_write8(c + VCOMMON_STATUS, st);
    if (!(mmio_read8(c + VCOMMON_STATUS) & VIRTIO_STATUS_FEATURES_OK))
        return virtio_fail(vd, "device rejected FEATURES_OK");

    if (vd->nr_queues < 1 || vd->nr_queues > VIRTIO_MAX_QUEUES)
        return virtio_fail(vd, "bad number of queues requested");
    if (mmio_read16(c + VCOMMON_NUMQ) < vd->nr_queues)
        return virtio_fail(vd, "device has fewer queues than needed");
    mmio_write16(c + VCOMMON_MSIX, 0xffff);
    for (unsigned qi = 0; qi < vd->nr_queues; qi++)
        if (!virtq_setup(vd, qi))
            return false;
    mmio_write8(c + VCOMMON_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
    if (mmio_read8(c + VCOMMON_STATUS) & VIRTIO_STATUS_FAILED)
        return virtio_fail(vd, "device set FAILED after DRIVER_OK");
    return true;
}

int virtq_add(struct virtio_dev *vd, unsigned qi, const struct virtq_desc *chain, unsigned n)
{
    struct virtq *q = &vd->q[qi];
    if (!n || n > q->size)
        return -1;
    /* Descriptors are handed out round-robin; callers keep at most size
     * in flight, so a slot is free again by the time it comes round. */
    uint16_t head = q->next_desc;
    for (unsigned i = 0; i < n; i++) {
        uint16_t slot = (uint16_t)((head + i) % q->size);
        q->desc[slot] = chain[i];
        q->desc[slot].flags = (uint16_t)(chain[i].flags & ~VIRTQ_DESC_F_NEXT);
        if (i + 1 < n) {
            q->desc[slot].flags |= VIRTQ_DESC_F_NEXT;
            q->desc[slot].next = (uint16_t)((slot + 1) % q->size);
        }
    }
    q->next_desc = (uint16_t)((head + n) % q->size);
    q->avail[2 + q->next_avail % q->size] = head; /* ring[] */
    barrier();
    q->next_avail++;
    q->avail[1] = q->next_avail;                  /* idx */
    return head;
}

void virtq_kick(struct virtio_dev *vd, unsigned qi)
{
    mb(); /* idx visible before the device looks */
    mmio_write16(vd->notify + (uint64_t)vd->q[qi].notify_off * vd->notify_mul, (uint16_t)qi);
}

bool virtq_get_used(struct virtio_dev *vd, unsigned qi, uint32_t *id, uint32_t *len,
                    uint64_t timeout_us)
{
    struct virtq *q = &vd->q[qi];
    uint64_t end = time_now_us() + timeout_us;
    volatile uint16_t *used_idx = (volatile uint16_t *)(q->used + 2);
    while (*used_idx == q->last_used) {
        if (time_now_us() > end)
            return false;
        cpu_relax();
    }
    barrier();
    unsigned slot = q->last_used % q->size;
    *id = *(volatile uint32_t *)(q->used + 4 + 8 * slot);
    *len = *(volatile uint32_t *)(q->used + 4 + 8 * slot + 4);
    q->last_used++;
    (void)mmio_read8(vd->isr); /* acknowledge (lowers INTx) */
    return true;
}

long virtio_transfer_q(struct virtio_dev *vd, unsigned qi, const struct virtq_desc *chain,
                       unsigned n, uint64_t timeout_us)
{
    int head = virtq_add(vd, qi, chain, n);
    if (head < 0)
        return -1;
    virtq_kick(vd, qi);
    uint32_t id, len;
    if (!virtq_get_used(vd, qi, &id, &len, timeout_us))
        return -1;
    if (id != (uint32_t)head) {
        tap_diag("virtio: used id %u, expected head %d", id, head);
        return -1;
    }
    return len;
}

long virtio_transfer(struct virtio_dev *vd, const struct virtq_desc *chain, unsigned n,
                     uint64_t timeout_us)
{
    return virtio_transfer_q(vd, 0, chain, n, timeout_us);
}

uint8_t virtio_status(const struct virtio_dev *vd)
{
    return mmio_read8(vd->common + VCOMMON_STATUS);
}

/* ------------------------------------------------------------------ */
/* entry from boot.S                                                  */

__attribute__((weak)) void ap_main(unsigned slot);
__attribute__((weak)) void ap_main(unsigned slot)
{
    (void)slot;
}

void guest_start(uint32_t start_info);
void guest_start(uint32_t start_info)
{
    serial_init();
    serial_puts("\n# ember test guest\n"); /* own line, whatever firmware printed */
    boot_info_read(start_info);
    idt_init();
    /* Firmware (SeaBIOS) leaves the 8259 routing IRQ0 to vector 8: a
     * guest that enables interrupts would take the timer as a #DF. */
    pic_mask_all();
    time_init();
    if (cmdline[0])
        printf("# cmdline: %s\n", cmdline);
    guest_main();
    tap_finish();
}
