/* 8250/16550A UART. Transmission is instantaneous (bytes go straight to the
 * chardev), so THR and the transmitter are always empty from the guest's
 * point of view; what is modelled carefully is what drivers look at: the
 * register file, DLAB, FIFO control, the receive FIFO, the interrupt
 * identification priorities and the loopback path Linux uses to probe. */
#include "hw/serial.h"

#include "core/log.h"
#include "core/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum {
    UART_RBR = 0, UART_THR = 0, UART_DLL = 0,
    UART_IER = 1, UART_DLM = 1,
    UART_IIR = 2, UART_FCR = 2,
    UART_LCR = 3, UART_MCR = 4, UART_LSR = 5, UART_MSR = 6, UART_SCR = 7,
};

#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IER_RLSI 0x04 /* receiver line status */
#define IER_MSI 0x08  /* modem status */
#define IER_MASK 0x0f /* the 16550A has no more: Linux probes bit 6 (UUE) expecting 0 */

#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_PE 0x04
#define LSR_FE 0x08
#define LSR_BI 0x10
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERRORS (LSR_OE | LSR_PE | LSR_FE | LSR_BI)

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80
#define MSR_DELTAS 0x0f

#define FIFO_SIZE 16

struct serial {
    pthread_mutex_t lock;
    struct bus *pio;
    uint16_t port;
    unsigned gsi;
    const struct irq_sink *irq;
    struct chardev *chr;

    uint8_t ier, lcr, mcr, lsr, msr, scr, fcr;
    uint16_t divisor;
    bool thr_ipending; /* THR-empty interrupt armed (cleared by IIR read or THR write) */
    bool irq_level;    /* last level driven on the GSI */
    bool rx_throttled; /* told the chardev we were full; wake it when space frees */

    uint8_t rx[FIFO_SIZE];
    unsigned rx_head, rx_count;
};

static unsigned rx_capacity(const struct serial *s)
{
    return (s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;
}

static void rx_clear(struct serial *s)
{
    s->rx_head = s->rx_count = 0;
    s->lsr &= ~LSR_DR;
}

/* A byte arrives at the receiver: into the FIFO, or an overrun. */
static void rx_push(struct serial *s, uint8_t byte)
{
    if (s->rx_count >= rx_capacity(s)) {
        s->lsr |= LSR_OE;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % FIFO_SIZE] = byte;
    s->rx_count++;
    s->lsr |= LSR_DR;
}

static uint8_t rx_pop(struct serial *s)
{
    if (!s->rx_count)
        return 0;
    uint8_t byte = s->rx[s->rx_head];
    s->rx_head = (s->rx_head + 1) % FIFO_SIZE;
    if (--s->rx_count == 0)
        s->lsr &= ~LSR_DR;
    return byte;
}

/* The highest-priority pending interrupt, as IIR reports it. */
static uint8_t pending_iir(const struct serial *s)
{
    if ((s->ier & IER_RLSI) && (s->lsr & LSR_ERRORS))
        return IIR_RLSI;
    if ((s->ier & IER_RDI) && (s->lsr & LSR_DR))
        return IIR_RDI;
    if ((s->ier & IER_THRI) && s->thr_ipending)
        return IIR_THRI;
    if ((s->ier & IER_MSI) && (s->msr & MSR_DELTAS))
        return IIR_MSI;
    return IIR_NO_INT;
}

/* Called after every state change, with the lock held. */
static void update_irq(struct serial *s)
{
    bool level = pending_iir(s) != IIR_NO_INT;
    if (level != s->irq_level) {
        s->irq_level = level;
        irq_set_level(s->irq, s->gsi, level);
    }
}

/* Modem status lines: in loopback they follow MCR outputs; otherwise the
 * "other end" is always present and ready (DCD, DSR, CTS). */
static void update_msr(struct serial *s)
{
    uint8_t lines;
    if (s->mcr & MCR_LOOP) {
        lines = ((s->mcr & MCR_RTS) ? MSR_CTS : 0) | ((s->mcr & MCR_DTR) ? MSR_DSR : 0) |
                ((s->mcr & MCR_OUT1) ? MSR_RI : 0) | ((s->mcr & MCR_OUT2) ? MSR_DCD : 0);
    } else {
        lines = MSR_DCD | MSR_DSR | MSR_CTS;
    }
    uint8_t old = s->msr & 0xf0, changed = old ^ lines;
    uint8_t deltas = s->msr & MSR_DELTAS;
    if (changed & MSR_CTS)
        deltas |= MSR_DCTS;
    if (changed & MSR_DSR)
        deltas |= MSR_DDSR;
    if (changed & MSR_DCD)
        deltas |= MSR_DDCD;
    if ((old & MSR_RI) && !(lines & MSR_RI))
        deltas |= MSR_TERI;
    s->msr = lines | deltas;
}

static void transmit(struct serial *s, uint8_t byte)
{
    if (s->mcr & MCR_LOOP)
        rx_push(s, byte);
    else if (s->chr)
        chardev_write(s->chr, &byte, 1);
    /* The byte left at once: THR empty again. */
    s->thr_ipending = true;
}

static void write_fcr(struct serial *s, uint8_t val)
{
    /* Toggling FIFO enable clears both FIFOs, as on the 16550A. */
    if ((val ^ s->fcr) & FCR_ENABLE)
        rx_clear(s);
    if (val & FCR_CLEAR_RX) {
        rx_clear(s);
        s->lsr &= ~LSR_OE;
    }
    /* Only enable and trigger level are stored; bits 1-2 self-clear,
     * bit 5 (64-byte mode, 16750) stays 0 so Linux sees a 16550A. */
    s->fcr = val & 0xc9;
}

/* Space appeared in a receive FIFO the chardev was told was full. */
static bool take_input_wakeup(struct serial *s)
{
    if (!s->rx_throttled || s->rx_count >= rx_capacity(s))
        return false;
    s->rx_throttled = false;
    return true;
}

static void serial_write_reg(struct serial *s, unsigned reg, uint8_t val)
{
    switch (reg) {
    case UART_THR:
        if (s->lcr & LCR_DLAB) {
            s->divisor = (s->divisor & 0xff00) | val;
            break;
        }
        s->thr_ipending = false;
        transmit(s, val);
        break;
    case UART_IER:
        if (s->lcr & LCR_DLAB) {
            s->divisor = (uint16_t)((s->divisor & 0x00ff) | (val << 8));
            break;
        }
        /* Enabling THRI with THR empty raises it at once (Linux relies on this). */
        if (!(s->ier & IER_THRI) && (val & IER_THRI))
            s->thr_ipending = true;
        s->ier = val & IER_MASK;
        break;
    case UART_FCR:
        write_fcr(s, val);
        break;
    case UART_LCR:
        s->lcr = val;
        break;
    case UART_MCR:
        s->mcr = val & MCR_MASK;
        update_msr(s);
        break;
    case UART_LSR: /* read-only (factory test register on some parts) */
    case UART_MSR:
        break;
    case UART_SCR:
        s->scr = val;
        break;
    }
    update_irq(s);
}

static uint8_t serial_read_reg(struct serial *s, unsigned reg, bool *woke_input)
{
    uint8_t val = 0;
    switch (reg) {
    case UART_RBR:
        if (s->lcr & LCR_DLAB) {
            val = s->divisor & 0xff;
            break;
        }
        val = rx_pop(s);
        *woke_input = take_input_wakeup(s);
        break;
    case UART_IER:
        val = (s->lcr & LCR_DLAB) ? s->divisor >> 8 : s->ier;
        break;
    case UART_IIR:
        val = pending_iir(s);
        /* Reading IIR acknowledges a THR-empty interrupt it reports. */
        if (val == IIR_THRI)
            s->thr_ipending = false;
        if (s->fcr & FCR_ENABLE)
            val |= IIR_FIFO_ENABLED;
        break;
    case UART_LCR:
        val = s->lcr;
        break;
    case UART_MCR:
        val = s->mcr;
        break;
    case UART_LSR:
        val = s->lsr | LSR_THRE | LSR_TEMT;
        s->lsr &= ~LSR_ERRORS;
        break;
    case UART_MSR:
        val = s->msr;
        s->msr &= ~MSR_DELTAS;
        break;
    case UART_SCR:
        val = s->scr;
        break;
    }
    update_irq(s);
    return val;
}

/* Registers are byte-wide; a wider access reaches the addressed register
 * with its low byte (reads zero-extend), never the neighbours. */
static uint64_t serial_bus_read(void *opaque, uint64_t offset, unsigned size)
{
    struct serial *s = opaque;
    bool woke_input = false;
    pthread_mutex_lock(&s->lock);
    uint8_t val = serial_read_reg(s, offset & 7, &woke_input);
    pthread_mutex_unlock(&s->lock);
    if (woke_input && s->chr)
        chardev_accept_input(s->chr);
    return val;
}

static void serial_bus_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct serial *s = opaque;
    pthread_mutex_lock(&s->lock);
    serial_write_reg(s, offset & 7, (uint8_t)value);
    bool woke_input = take_input_wakeup(s); /* FCR may have cleared the FIFO */
    pthread_mutex_unlock(&s->lock);
    if (woke_input && s->chr)
        chardev_accept_input(s->chr);
}

static const struct bus_ops serial_bus_ops = {
    .read = serial_bus_read,
    .write = serial_bus_write,
};

/* Chardev side, on the event loop thread. */
static size_t serial_can_receive(void *opaque)
{
    struct serial *s = opaque;
    pthread_mutex_lock(&s->lock);
    size_t room = rx_capacity(s) - s->rx_count;
    if (!room)
        s->rx_throttled = true;
    pthread_mutex_unlock(&s->lock);
    return room;
}

static void serial_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial *s = opaque;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < len; i++)
        rx_push(s, buf[i]);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static void reset_locked(struct serial *s)
{
    s->ier = 0;
    s->lcr = 0;
    s->mcr = 0;
    s->fcr = 0;
    s->scr = 0;
    s->lsr = 0;
    s->divisor = 12; /* 9600 baud, what a PC BIOS leaves */
    s->thr_ipending = false;
    s->msr = MSR_DCD | MSR_DSR | MSR_CTS;
    rx_clear(s);
    s->irq_level = false;
    irq_set_level(s->irq, s->gsi, false);
}

void serial_reset(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    bool woke_input = s->rx_throttled;
    s->rx_throttled = false;
    reset_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (woke_input && s->chr)
        chardev_accept_input(s->chr);
}

struct serial *serial_new(struct bus *pio, uint16_t port, unsigned gsi, const struct irq_sink *irq,
                          struct chardev *chr)
{
    struct serial *s = xzalloc(sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->pio = pio;
    s->port = port;
    s->gsi = gsi;
    s->irq = irq;
    s->chr = chr;
    reset_locked(s);
    if (bus_register(pio, port, 8, &serial_bus_ops, s, "serial") < 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    if (chr) {
        const struct chardev_frontend fe = {
            .opaque = s,
            .can_receive = serial_can_receive,
            .receive = serial_receive,
        };
        chardev_set_frontend(chr, &fe);
    }
    return s;
}

void serial_free(struct serial *s)
{
    if (!s)
        return;
    if (s->chr)
        chardev_set_frontend(s->chr, NULL);
    bus_unregister(s->pio, s->port, s);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
