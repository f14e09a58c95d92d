/* i8042 keyboard controller with a PS/2 keyboard and mouse attached that
 * answer the probing commands and never send input. One output buffer
 * queue holds bytes from the controller, the keyboard and the mouse; the
 * head byte decides OBF/AUXDATA and which IRQ line is high. */
#include "hw/i8042.h"

#include "core/log.h"
#include "core/util.h"
#include "machine/layout.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define STR_OBF 0x01
#define STR_IBF 0x02
#define STR_SYS 0x04
#define STR_CMD 0x08     /* last write went to the command port */
#define STR_UNLOCKED 0x10 /* keyboard not inhibited */
#define STR_AUXDATA 0x20

#define CTR_KBDINT 0x01
#define CTR_AUXINT 0x02
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40

#define OUTPORT_RESET 0x01 /* 0 = reset asserted */
#define OUTPORT_A20 0x02

#define QUEUE_SIZE 32

struct i8042 {
    pthread_mutex_t lock;
    struct bus *pio;
    const struct irq_sink *irq;
    const struct vm_control *vmctl;

    uint8_t status, ctr, outport;
    uint8_t pending_cmd; /* controller command waiting for its data byte, or 0 */
    uint8_t kbd_cmd;     /* keyboard command waiting for its parameter, or 0 */
    uint8_t aux_cmd;     /* mouse command waiting for its parameter, or 0 */
    bool kbd_scanning, aux_scanning;
    uint8_t last_read;

    struct {
        uint8_t byte;
        bool aux;
    } queue[QUEUE_SIZE];
    unsigned q_head, q_count;
    bool kbd_level, aux_level;
};

/* --- output buffer and IRQs ------------------------------------------------- */

static void update_irqs(struct i8042 *k)
{
    bool kbd = false, aux = false;
    k->status &= ~(STR_OBF | STR_AUXDATA);
    if (k->q_count) {
        bool head_aux = k->queue[k->q_head].aux;
        k->status |= STR_OBF | (head_aux ? STR_AUXDATA : 0);
        if (head_aux)
            aux = k->ctr & CTR_AUXINT;
        else
            kbd = k->ctr & CTR_KBDINT;
    }
    if (kbd != k->kbd_level) {
        k->kbd_level = kbd;
        irq_set_level(k->irq, LAYOUT_I8042_KBD_GSI, kbd);
    }
    if (aux != k->aux_level) {
        k->aux_level = aux;
        irq_set_level(k->irq, LAYOUT_I8042_AUX_GSI, aux);
    }
}

static void queue_byte(struct i8042 *k, uint8_t byte, bool aux)
{
    if (k->q_count == QUEUE_SIZE)
        return; /* a guest flooding commands without reading loses bytes */
    unsigned tail = (k->q_head + k->q_count) % QUEUE_SIZE;
    k->queue[tail].byte = byte;
    k->queue[tail].aux = aux;
    k->q_count++;
}

static uint8_t read_data(struct i8042 *k)
{
    if (k->q_count) {
        k->last_read = k->queue[k->q_head].byte;
        k->q_head = (k->q_head + 1) % QUEUE_SIZE;
        k->q_count--;
    }
    return k->last_read; /* an empty buffer repeats the last byte, like hardware */
}

/* --- the keyboard and the mouse --------------------------------------------- */

#define PS2_ACK 0xfa
#define PS2_RESEND 0xfe
#define PS2_SELFTEST_OK 0xaa

static void keyboard_command(struct i8042 *k, uint8_t byte)
{
    if (k->kbd_cmd) {
        uint8_t cmd = k->kbd_cmd;
        k->kbd_cmd = 0;
        queue_byte(k, PS2_ACK, false);
        if (cmd == 0xf0 && byte == 0) /* query scan code set: 2, or 0x41 translated */
            queue_byte(k, (k->ctr & CTR_XLATE) ? 0x41 : 0x02, false);
        return;
    }
    switch (byte) {
    case 0xed: /* set LEDs */
    case 0xf0: /* scan code set */
    case 0xf3: /* typematic rate */
        k->kbd_cmd = byte;
        queue_byte(k, PS2_ACK, false);
        break;
    case 0xee: /* echo */
        queue_byte(k, 0xee, false);
        break;
    case 0xf2: /* identify: MF2 keyboard; translated id when XLATE is on */
        queue_byte(k, PS2_ACK, false);
        queue_byte(k, 0xab, false);
        queue_byte(k, (k->ctr & CTR_XLATE) ? 0x41 : 0x83, false);
        break;
    case 0xf4:
        k->kbd_scanning = true;
        queue_byte(k, PS2_ACK, false);
        break;
    case 0xf5:
        k->kbd_scanning = false;
        queue_byte(k, PS2_ACK, false);
        break;
    case 0xff: /* reset and self-test */
        k->kbd_scanning = true;
        queue_byte(k, PS2_ACK, false);
        queue_byte(k, PS2_SELFTEST_OK, false);
        break;
    default:
        queue_byte(k, PS2_ACK, false);
        break;
    }
}

static void mouse_command(struct i8042 *k, uint8_t byte)
{
    if (k->aux_cmd) {
        k->aux_cmd = 0;
        queue_byte(k, PS2_ACK, true);
        return;
    }
    switch (byte) {
    case 0xe8: /* set resolution */
    case 0xf3: /* set sample rate */
        k->aux_cmd = byte;
        queue_byte(k, PS2_ACK, true);
        break;
    case 0xe9: /* status request: stream mode, 4 counts/mm, 100 samples/s */
        queue_byte(k, PS2_ACK, true);
        queue_byte(k, 0x00, true);
        queue_byte(k, 0x02, true);
        queue_byte(k, 0x64, true);
        break;
    case 0xf2: /* identify: standard PS/2 mouse */
        queue_byte(k, PS2_ACK, true);
        queue_byte(k, 0x00, true);
        break;
    case 0xf4:
        k->aux_scanning = true;
        queue_byte(k, PS2_ACK, true);
        break;
    case 0xf5:
        k->aux_scanning = false;
        queue_byte(k, PS2_ACK, true);
        break;
    case 0xff:
        k->aux_scanning = false;
        queue_byte(k, PS2_ACK, true);
        queue_byte(k, PS2_SELFTEST_OK, true);
        queue_byte(k, 0x00, true);
        break;
    default:
        queue_byte(k, PS2_ACK, true);
        break;
    }
}

/* --- the controller ---------------------------------------------------------- */

/* Returns true if the guest asked for a reset (delivered after unlocking). */
static bool write_outport(struct i8042 *k, uint8_t val)
{
    k->outport = val | OUTPORT_RESET; /* the line pulses; it reads back released */
    return !(val & OUTPORT_RESET);
}

static bool controller_command(struct i8042 *k, uint8_t cmd)
{
    switch (cmd) {
    case 0x20: /* read command byte */
        queue_byte(k, k->ctr, false);
        break;
    case 0x60: /* write command byte */
    case 0xd1: /* write output port */
    case 0xd2: /* write keyboard output buffer */
    case 0xd3: /* write aux output buffer (loopback) */
    case 0xd4: /* write to the aux device */
        k->pending_cmd = cmd;
        break;
    case 0xa7:
        k->ctr |= CTR_AUXDIS;
        break;
    case 0xa8:
        k->ctr &= ~CTR_AUXDIS;
        break;
    case 0xa9: /* aux interface test: no error */
    case 0xab: /* keyboard interface test: no error */
        queue_byte(k, 0x00, false);
        break;
    case 0xaa: /* controller self-test */
        k->status |= STR_SYS;
        queue_byte(k, 0x55, false);
        break;
    case 0xad:
        k->ctr |= CTR_KBDDIS;
        break;
    case 0xae:
        k->ctr &= ~CTR_KBDDIS;
        break;
    case 0xc0: /* read input port: keyboard not locked */
        queue_byte(k, 0x80, false);
        break;
    case 0xd0: /* read output port */
        queue_byte(k, k->outport, false);
        break;
    case 0xdd: /* A20 off/on: RAM is flat, nothing to do */
    case 0xdf:
        break;
    default:
        /* 0xf0-0xff pulse output lines low for each clear bit 0-3: bit 0 is reset. */
        if (cmd >= 0xf0 && !(cmd & 0x01))
            return true;
        break;
    }
    return false;
}

static bool controller_data(struct i8042 *k, uint8_t val)
{
    uint8_t cmd = k->pending_cmd;
    k->pending_cmd = 0;
    switch (cmd) {
    case 0x60:
        k->ctr = val;
        k->status = (uint8_t)((k->status & ~STR_SYS) | (val & CTR_SYS));
        break;
    case 0xd1:
        return write_outport(k, val);
    case 0xd2:
        queue_byte(k, val, false);
        break;
    case 0xd3:
        queue_byte(k, val, true);
        break;
    case 0xd4:
        mouse_command(k, val);
        break;
    default:
        /* Data without a pending command goes to the keyboard; talking to
         * it re-enables the port, as on real controllers. */
        k->ctr &= ~CTR_KBDDIS;
        keyboard_command(k, val);
        break;
    }
    return false;
}

/* Reading the output buffer empties it, so its IRQ line drops; the next
 * queued byte then raises the line again. ISA IRQs 1 and 12 are
 * edge-triggered (8259 and IOAPIC alike): a line that simply stayed high
 * would deliver no interrupt for the second and later bytes of a multi-byte
 * reply (identify, reset), and Linux's atkbd/psmouse would time out waiting
 * for them, fail the probe, and re-probe on every stale byte it reads
 * later, forever (seconds of idle guest time, and a stall at shutdown). */
static void lower_irqs(struct i8042 *k)
{
    if (k->kbd_level) {
        k->kbd_level = false;
        irq_set_level(k->irq, LAYOUT_I8042_KBD_GSI, false);
    }
    if (k->aux_level) {
        k->aux_level = false;
        irq_set_level(k->irq, LAYOUT_I8042_AUX_GSI, false);
    }
}

/* Ports 0x60 and 0x64 are separate one-byte ranges (0x61 sits between). */
static uint64_t i8042_data_read(void *opaque, uint64_t offset, unsigned size)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    bool had_byte = k->q_count != 0;
    uint8_t val = read_data(k);
    if (had_byte)
        lower_irqs(k);
    update_irqs(k);
    pthread_mutex_unlock(&k->lock);
    return val;
}

static uint64_t i8042_status_read(void *opaque, uint64_t offset, unsigned size)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    uint8_t val = k->status;
    pthread_mutex_unlock(&k->lock);
    return val;
}

static void i8042_write(struct i8042 *k, bool command, uint8_t value)
{
    bool reset;
    pthread_mutex_lock(&k->lock);
    if (command) {
        k->status |= STR_CMD;
        reset = controller_command(k, value);
    } else {
        k->status &= ~STR_CMD;
        reset = controller_data(k, value);
    }
    update_irqs(k);
    pthread_mutex_unlock(&k->lock);
    if (reset)
        vm_request(k->vmctl, VM_EVENT_RESET, 0);
}

static void i8042_data_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    i8042_write(opaque, false, (uint8_t)value);
}

static void i8042_command_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    i8042_write(opaque, true, (uint8_t)value);
}

static const struct bus_ops i8042_data_ops = {
    .read = i8042_data_read,
    .write = i8042_data_write,
};

static const struct bus_ops i8042_command_ops = {
    .read = i8042_status_read,
    .write = i8042_command_write,
};

static void reset_locked(struct i8042 *k)
{
    k->status = STR_UNLOCKED;
    /* As firmware leaves it: both interrupts on, translation on. */
    k->ctr = CTR_KBDINT | CTR_AUXINT | CTR_SYS | CTR_XLATE;
    k->status |= STR_SYS;
    k->outport = OUTPORT_RESET | OUTPORT_A20;
    k->pending_cmd = k->kbd_cmd = k->aux_cmd = 0;
    k->kbd_scanning = true;
    k->aux_scanning = false;
    k->last_read = 0;
    k->q_head = k->q_count = 0;
    k->kbd_level = k->aux_level = false;
    irq_set_level(k->irq, LAYOUT_I8042_KBD_GSI, false);
    irq_set_level(k->irq, LAYOUT_I8042_AUX_GSI, false);
}

void i8042_reset(struct i8042 *k)
{
    pthread_mutex_lock(&k->lock);
    reset_locked(k);
    pthread_mutex_unlock(&k->lock);
}

struct i8042 *i8042_new(struct bus *pio, const struct irq_sink *irq, const struct vm_control *vmctl)
{
    struct i8042 *k = xzalloc(sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    k->pio = pio;
    k->irq = irq;
    k->vmctl = vmctl;
    reset_locked(k);
    if (bus_register(pio, LAYOUT_I8042_DATA_PORT, 1, &i8042_data_ops, k, "i8042") < 0)
        goto fail;
    if (bus_register(pio, LAYOUT_I8042_CMD_PORT, 1, &i8042_command_ops, k, "i8042") < 0) {
        bus_unregister(pio, LAYOUT_I8042_DATA_PORT, k);
        goto fail;
    }
    return k;
fail:
    pthread_mutex_destroy(&k->lock);
    free(k);
    return NULL;
}

void i8042_free(struct i8042 *k)
{
    if (!k)
        return;
    bus_unregister(k->pio, LAYOUT_I8042_DATA_PORT, k);
    bus_unregister(k->pio, LAYOUT_I8042_CMD_PORT, k);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

/* --- port 0x61 ------------------------------------------------------------------ */

/* The state is one byte per bus; a static slot avoids an allocation that
 * nothing could free (the agreed constructor returns no object). */
static _Atomic uint8_t port61_value;

static uint64_t port61_read(void *opaque, uint64_t offset, unsigned size)
{
    (void)opaque;
    /* Bits 4 (refresh) and 5 (PIT ch2 out) toggle so polling loops finish. */
    static atomic_uint toggle;
    unsigned t = atomic_fetch_add(&toggle, 1) & 1;
    return (atomic_load(&port61_value) & 0x0f) | (t ? 0x30 : 0x00);
}

static void port61_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    (void)opaque;
    atomic_store(&port61_value, (uint8_t)(value & 0x0f));
}

static const struct bus_ops port61_ops = {
    .read = port61_read,
    .write = port61_write,
};

int port61_new(struct bus *pio)
{
    return bus_register(pio, 0x61, 1, &port61_ops, NULL, "port61");
}
