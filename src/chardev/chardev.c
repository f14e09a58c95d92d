/* Character backends. stdio owns the terminal: raw mode (only when stdin is
 * a tty) is undone on every exit path, and the QEMU -nographic escape keys
 * (Ctrl-A x/a/h) are handled here so every frontend gets them. Input is read
 * on the event loop thread only as fast as the frontend can take it; the
 * frontend wakes us with chardev_accept_input() from any thread. */
#include "chardev/chardev.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define ESCAPE_CHAR 0x01 /* Ctrl-A */
#define INPUT_CHUNK 256

enum chardev_kind { CHARDEV_NULL, CHARDEV_FILE, CHARDEV_STDIO };

/* How input readiness is learned: epoll, or (for regular files and
 * /dev/null, which epoll refuses) by reading from loop callbacks. */
enum input_mode { INPUT_NONE, INPUT_EPOLL, INPUT_POLLED };

struct chardev {
    enum chardev_kind kind;
    char *spec;
    int out_fd, in_fd;
    bool close_out;
    struct evloop *loop;
    const struct vm_control *vmctl;
    pthread_mutex_t write_lock;

    /* Input state: loop thread only, except resume_queued. */
    struct chardev_frontend fe;
    bool has_fe;
    enum input_mode mode;
    bool watching;     /* fd registered with the loop / a read is scheduled */
    bool eof;
    bool escape_seen;  /* last byte was Ctrl-A */
    atomic_bool resume_queued;
    /* Loop callbacks queued with evloop_call() and not yet run: a closed
     * chardev is freed by the last of them (evloop_free() runs them). */
    atomic_int queued;
    atomic_bool closed;
};

static void chardev_free(struct chardev *c);

static void queue_call(struct chardev *c, evloop_call_fn *fn)
{
    atomic_fetch_add(&c->queued, 1);
    evloop_call(c->loop, fn, c);
}

/* First thing in every queued callback; false if the chardev is closed. */
static bool call_enter(struct chardev *c)
{
    int left = atomic_fetch_sub(&c->queued, 1) - 1;
    if (!atomic_load(&c->closed))
        return true;
    if (left == 0)
        chardev_free(c);
    return false;
}

/* --- terminal state, restored on every exit path ------------------------ */

static struct termios saved_termios;
static volatile sig_atomic_t terminal_raw;
static atomic_bool stdio_in_use;

void chardev_restore_terminals(void)
{
    /* Async-signal-safe: called from the signal handlers below. */
    if (terminal_raw) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
        terminal_raw = 0;
    }
}

static void restore_and_reraise(int sig)
{
    int saved_errno = errno;
    chardev_restore_terminals();
    /* SA_RESETHAND put the default action back; deliver the signal again. */
    raise(sig);
    errno = saved_errno;
}

static void install_restore_handlers(void)
{
    static bool installed;
    if (installed)
        return;
    installed = true;
    atexit(chardev_restore_terminals);
    /* Termination requests, and the fatal signals a bug would raise (an
     * assertion's SIGABRT, a stray pointer's SIGSEGV...): the shell gets its
     * terminal back either way. */
    static const int signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT,
                                  SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < ARRAY_SIZE(signals); i++) {
        struct sigaction old;
        /* Respect a handler the program already set (it must restore). */
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler != SIG_DFL)
            continue;
        struct sigaction sa = {.sa_handler = restore_and_reraise, .sa_flags = SA_RESETHAND};
        sigemptyset(&sa.sa_mask);
        sigaction(signals[i], &sa, NULL);
    }
}

static void terminal_make_raw(void)
{
    if (!isatty(STDIN_FILENO) || terminal_raw)
        return;
    if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
        return;
    struct termios raw = saved_termios;
    cfmakeraw(&raw);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    install_restore_handlers();
    if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
        terminal_raw = 1;
}

/* --- output ---------------------------------------------------------------- */

ssize_t chardev_write(struct chardev *c, const void *buf, size_t len)
{
    if (!c || c->out_fd < 0)
        return (ssize_t)len;
    const uint8_t *p = buf;
    size_t done = 0;
    pthread_mutex_lock(&c->write_lock);
    while (done < len) {
        ssize_t n = write(c->out_fd, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* stdout may share a non-blocking file description with stdin. */
            struct pollfd pfd = {.fd = c->out_fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
        } else {
            break; /* EPIPE, EIO...: the reader is gone; drop output */
        }
    }
    pthread_mutex_unlock(&c->write_lock);
    return done == len ? (ssize_t)len : (done ? (ssize_t)done : -EIO);
}

/* --- input ------------------------------------------------------------------ */

static const char escape_help[] =
    "\r\n"
    "C-a h    show this help\r\n"
    "C-a x    quit the emulator\r\n"
    "C-a a    send C-a to the guest\r\n"
    "\r\n";

/* Filter the escape sequences out of buf in place; returns bytes left. */
static size_t process_escapes(struct chardev *c, uint8_t *buf, size_t len)
{
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = buf[i];
        if (!c->escape_seen) {
            if (ch == ESCAPE_CHAR)
                c->escape_seen = true;
            else
                buf[out++] = ch;
            continue;
        }
        c->escape_seen = false;
        switch (ch) {
        case 'x':
        case 'X':
            log_info("quit requested with C-a x");
            if (c->vmctl)
                vm_request(c->vmctl, VM_EVENT_QUIT, 0);
            break;
        case 'a':
        case ESCAPE_CHAR:
            buf[out++] = ESCAPE_CHAR;
            break;
        case 'h':
        case 'H':
        case '?':
            chardev_write(c, escape_help, sizeof(escape_help) - 1);
            break;
        default:
            break; /* unknown escape: both bytes are dropped, as QEMU does */
        }
    }
    return out;
}

static void input_stop_watching(struct chardev *c)
{
    if (!c->watching)
        return;
    if (c->mode == INPUT_EPOLL)
        evloop_del_fd(c->loop, c->in_fd);
    c->watching = false; /* a scheduled polled read sees this and stops */
}

static void input_poll_cb(void *opaque);
static void input_fd_cb(void *opaque, uint32_t events);

static void input_start_watching(struct chardev *c)
{
    if (c->watching || c->eof || !c->has_fe || c->in_fd < 0 || c->mode == INPUT_NONE)
        return;
    c->watching = true;
    if (c->mode == INPUT_EPOLL)
        evloop_add_fd(c->loop, c->in_fd, EPOLLIN, input_fd_cb, c);
    else
        queue_call(c, input_poll_cb);
}

/* Read once (never blocks: the fd is readable, or a file/device that
 * returns at once) and hand the bytes over. Returns false to stop. */
static bool input_read_some(struct chardev *c)
{
    size_t room = c->fe.can_receive ? c->fe.can_receive(c->fe.opaque) : INPUT_CHUNK;
    if (room == 0) {
        input_stop_watching(c); /* the frontend calls chardev_accept_input() */
        return false;
    }
    uint8_t buf[INPUT_CHUNK];
    ssize_t n = read(c->in_fd, buf, MIN(room, sizeof(buf)));
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
    if (n <= 0) {
        /* EOF (a test piping input) or a dead terminal: stop reading, keep running. */
        input_stop_watching(c);
        c->eof = true;
        return false;
    }
    size_t len = c->kind == CHARDEV_STDIO ? process_escapes(c, buf, (size_t)n) : (size_t)n;
    if (len && c->fe.receive)
        c->fe.receive(c->fe.opaque, buf, len);
    return true;
}

static void input_fd_cb(void *opaque, uint32_t events)
{
    struct chardev *c = opaque;
    (void)events; /* EPOLLHUP with data left still reads; read() reports EOF */
    if (c->watching)
        input_read_some(c);
}

static void input_poll_cb(void *opaque)
{
    struct chardev *c = opaque;
    if (!call_enter(c) || !c->watching)
        return;
    if (input_read_some(c) && c->watching)
        queue_call(c, input_poll_cb);
}

static void input_resume_cb(void *opaque)
{
    struct chardev *c = opaque;
    if (!call_enter(c))
        return;
    atomic_store(&c->resume_queued, false);
    input_start_watching(c);
}

void chardev_accept_input(struct chardev *c)
{
    if (!c || c->mode == INPUT_NONE || !c->loop)
        return;
    if (!atomic_exchange(&c->resume_queued, true))
        queue_call(c, input_resume_cb);
}

void chardev_set_frontend(struct chardev *c, const struct chardev_frontend *fe)
{
    if (!c)
        return;
    input_stop_watching(c);
    c->has_fe = fe != NULL;
    if (fe)
        c->fe = *fe;
    else
        memset(&c->fe, 0, sizeof(c->fe));
    input_start_watching(c);
}

/* epoll refuses regular files and some devices (/dev/null): read those
 * from loop callbacks instead. */
static enum input_mode probe_input_mode(struct evloop *loop, int fd)
{
    if (!loop)
        return INPUT_NONE;
    int err = evloop_add_fd(loop, fd, EPOLLIN, input_fd_cb, NULL);
    if (err == 0) {
        evloop_del_fd(loop, fd);
        return INPUT_EPOLL;
    }
    return INPUT_POLLED;
}

/* --- open / close ----------------------------------------------------------- */

static struct chardev *chardev_alloc(enum chardev_kind kind, const char *spec,
                                     struct evloop *loop, const struct vm_control *vmctl)
{
    struct chardev *c = xzalloc(sizeof(*c));
    c->kind = kind;
    c->spec = xstrdup(spec);
    c->out_fd = -1;
    c->in_fd = -1;
    c->loop = loop;
    c->vmctl = vmctl;
    c->mode = INPUT_NONE;
    pthread_mutex_init(&c->write_lock, NULL);
    return c;
}

struct chardev *chardev_open(const char *spec, struct evloop *loop, const struct vm_control *vmctl)
{
    if (!spec) {
        log_error("chardev: missing backend (expected stdio, file:PATH, none or null)");
        return NULL;
    }
    if (!strcmp(spec, "none") || !strcmp(spec, "null"))
        return chardev_alloc(CHARDEV_NULL, spec, loop, vmctl);

    if (!strncmp(spec, "file:", 5)) {
        const char *path = spec + 5;
        if (!*path) {
            log_error("chardev '%s': missing file name after 'file:'", spec);
            return NULL;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            log_error("chardev '%s': cannot open %s: %s", spec, path, strerror(errno));
            return NULL;
        }
        struct chardev *c = chardev_alloc(CHARDEV_FILE, spec, loop, vmctl);
        c->out_fd = fd;
        c->close_out = true;
        return c;
    }

    if (!strcmp(spec, "stdio") || !strcmp(spec, "mon:stdio")) {
        if (atomic_exchange(&stdio_in_use, true)) {
            log_error("chardev '%s': stdio is already used by another serial port or console",
                      spec);
            return NULL;
        }
        struct chardev *c = chardev_alloc(CHARDEV_STDIO, spec, loop, vmctl);
        c->out_fd = STDOUT_FILENO;
        c->in_fd = STDIN_FILENO;
        c->mode = probe_input_mode(loop, STDIN_FILENO);
        terminal_make_raw();
        return c;
    }

    log_error("chardev '%s': unknown backend (expected stdio, file:PATH, none or null)", spec);
    return NULL;
}

static void chardev_free(struct chardev *c)
{
    pthread_mutex_destroy(&c->write_lock);
    free(c->spec);
    free(c);
}

/* Call once frontends are detached and vCPUs stopped (no more writes). */
void chardev_close(struct chardev *c)
{
    if (!c)
        return;
    input_stop_watching(c);
    c->has_fe = false;
    if (c->kind == CHARDEV_STDIO) {
        chardev_restore_terminals();
        atomic_store(&stdio_in_use, false);
    }
    if (c->close_out)
        close(c->out_fd);
    c->out_fd = -1;
    atomic_store(&c->closed, true);
    if (atomic_load(&c->queued) == 0)
        chardev_free(c);
}
