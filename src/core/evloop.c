#include "evloop.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct fd_handler {
    int fd;
    evloop_fd_fn *cb;
    void *opaque;
    struct fd_handler *next;
};

struct pending_call {
    evloop_call_fn *fn;
    void *opaque;
    struct pending_call *next;
};

struct evloop {
    int epfd;
    int wake_fd;
    pthread_mutex_t lock; /* guards handlers list and calls queue */
    struct fd_handler *handlers;
    struct pending_call *calls, **calls_tail;
    atomic_bool stopping;
    int stop_code;
};

struct evtimer {
    struct evloop *loop;
    int fd;
    evloop_call_fn *cb;
    void *opaque;
};

uint64_t clock_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void run_pending_calls(struct evloop *loop)
{
    pthread_mutex_lock(&loop->lock);
    struct pending_call *c = loop->calls;
    loop->calls = NULL;
    loop->calls_tail = &loop->calls;
    pthread_mutex_unlock(&loop->lock);
    while (c) {
        struct pending_call *next = c->next;
        c->fn(c->opaque);
        free(c);
        c = next;
    }
}

static void on_wake(void *opaque, uint32_t events)
{
    (void)events;
    struct evloop *loop = opaque;
    uint64_t v;
    if (read(loop->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("event loop wake-up read failed: %d", errno);
    run_pending_calls(loop);
}

struct evloop *evloop_new(void)
{
    struct evloop *loop = xzalloc(sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->epfd < 0 || loop->wake_fd < 0)
        die("cannot create the event loop: %s", "epoll/eventfd failed");
    pthread_mutex_init(&loop->lock, NULL);
    loop->calls_tail = &loop->calls;
    evloop_add_fd(loop, loop->wake_fd, EPOLLIN, on_wake, loop);
    return loop;
}

void evloop_free(struct evloop *loop)
{
    if (!loop)
        return;
    run_pending_calls(loop);
    while (loop->handlers) {
        struct fd_handler *h = loop->handlers;
        loop->handlers = h->next;
        free(h);
    }
    close(loop->wake_fd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
}

int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_fn *cb, void *opaque)
{
    struct fd_handler *h = xzalloc(sizeof(*h));
    h->fd = fd;
    h->cb = cb;
    h->opaque = opaque;
    struct epoll_event ev = {.events = events, .data.ptr = h};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = -errno;
        free(h);
        return err;
    }
    pthread_mutex_lock(&loop->lock);
    h->next = loop->handlers;
    loop->handlers = h;
    pthread_mutex_unlock(&loop->lock);
    return 0;
}

static struct fd_handler *find_handler(struct evloop *loop, int fd)
{
    for (struct fd_handler *h = loop->handlers; h; h = h->next)
        if (h->fd == fd)
            return h;
    return NULL;
}

int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events)
{
    pthread_mutex_lock(&loop->lock);
    struct fd_handler *h = find_handler(loop, fd);
    pthread_mutex_unlock(&loop->lock);
    if (!h)
        return -ENOENT;
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

/* A handler removed while its event is being dispatched is parked here and
 * freed after the dispatch round, so a stale epoll_event never dangles. */
static struct fd_handler *removed;

int evloop_del_fd(struct evloop *loop, int fd)
{
    pthread_mutex_lock(&loop->lock);
    struct fd_handler **pp = &loop->handlers;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    struct fd_handler *h = *pp;
    if (h)
        *pp = h->next;
    pthread_mutex_unlock(&loop->lock);
    if (!h)
        return -ENOENT;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    h->cb = NULL;
    h->next = removed;
    removed = h;
    return 0;
}

void evloop_call(struct evloop *loop, evloop_call_fn *fn, void *opaque)
{
    struct pending_call *c = xzalloc(sizeof(*c));
    c->fn = fn;
    c->opaque = opaque;
    pthread_mutex_lock(&loop->lock);
    *loop->calls_tail = c;
    loop->calls_tail = &c->next;
    pthread_mutex_unlock(&loop->lock);
    uint64_t one = 1;
    if (write(loop->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("event loop wake-up write failed: %d", errno);
}

static void do_stop(void *opaque) { (void)opaque; }

void evloop_stop(struct evloop *loop, int code)
{
    if (atomic_exchange(&loop->stopping, true))
        return;
    loop->stop_code = code;
    evloop_call(loop, do_stop, NULL);
}

int evloop_run(struct evloop *loop)
{
    struct epoll_event evs[32];
    while (!atomic_load(&loop->stopping)) {
        int n = epoll_wait(loop->epfd, evs, (int)ARRAY_SIZE(evs), -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait failed: errno %d", errno);
        }
        for (int i = 0; i < n; i++) {
            struct fd_handler *h = evs[i].data.ptr;
            if (h->cb)
                h->cb(h->opaque, evs[i].events);
        }
        while (removed) {
            struct fd_handler *h = removed;
            removed = h->next;
            free(h);
        }
    }
    /* Re-arm: a later evloop_run() dispatches again until the next stop. */
    int code = loop->stop_code;
    atomic_store(&loop->stopping, false);
    return code;
}

static void on_timer(void *opaque, uint32_t events)
{
    (void)events;
    struct evtimer *t = opaque;
    uint64_t expirations;
    if (read(t->fd, &expirations, sizeof(expirations)) == sizeof(expirations))
        t->cb(t->opaque);
}

struct evtimer *evtimer_new(struct evloop *loop, evloop_call_fn *cb, void *opaque)
{
    struct evtimer *t = xzalloc(sizeof(*t));
    t->loop = loop;
    t->cb = cb;
    t->opaque = opaque;
    t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (t->fd < 0)
        die("cannot create a timer: errno %d", errno);
    evloop_add_fd(loop, t->fd, EPOLLIN, on_timer, t);
    return t;
}

static struct timespec ns_to_ts(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000ULL), .tv_nsec = (long)(ns % 1000000000ULL)};
}

void evtimer_arm(struct evtimer *t, uint64_t delay_ns, uint64_t period_ns)
{
    struct itimerspec its = {.it_value = ns_to_ts(delay_ns), .it_interval = ns_to_ts(period_ns)};
    if (delay_ns == 0 && period_ns)
        its.it_value = ns_to_ts(1); /* 0 would disarm */
    timerfd_settime(t->fd, 0, &its, NULL);
}

void evtimer_free(struct evtimer *t)
{
    if (!t)
        return;
    evloop_del_fd(t->loop, t->fd);
    close(t->fd);
    free(t);
}
