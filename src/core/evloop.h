/* The main-thread event loop (epoll). Monitor sockets, chardev input, block
 * completions (io_uring eventfd), ioeventfds and timers are file descriptors
 * registered here; callbacks run on the loop thread only. */
#ifndef EMBER_CORE_EVLOOP_H
#define EMBER_CORE_EVLOOP_H

#include <stdint.h>
#include <sys/epoll.h>

struct evloop;
typedef void evloop_fd_fn(void *opaque, uint32_t epoll_events);
typedef void evloop_call_fn(void *opaque);

struct evloop *evloop_new(void);
void evloop_free(struct evloop *loop);

/* Register fd for EPOLLIN/EPOLLOUT/...; at most one registration per fd. */
int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_fn *cb, void *opaque);
int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events);
int evloop_del_fd(struct evloop *loop, int fd);

/* Run fn(opaque) on the loop thread soon. Safe from any thread. */
void evloop_call(struct evloop *loop, evloop_call_fn *fn, void *opaque);

/* Timers: a timerfd with a callback. Times are in nanoseconds of CLOCK_MONOTONIC. */
struct evtimer;
struct evtimer *evtimer_new(struct evloop *loop, evloop_call_fn *cb, void *opaque);
void evtimer_arm(struct evtimer *t, uint64_t delay_ns, uint64_t period_ns); /* 0,0 disarms */
void evtimer_free(struct evtimer *t);
uint64_t clock_monotonic_ns(void);

/* Dispatch until evloop_stop(); returns the code passed to it. A stop
 * requested before the call makes it return at once; afterwards the loop can
 * be run again. */
int evloop_run(struct evloop *loop);
/* Safe from any thread (and from callbacks). */
void evloop_stop(struct evloop *loop, int code);

#endif
