/* The machine: Ember's x86 PC built from a struct vm_config, its vCPU
 * threads, and what happens when the guest powers off, resets or crashes.
 *
 * Threads: the caller's thread runs the event loop (chardev input, timers,
 * block completions, virtio queues) inside machine_run(); each vCPU has its
 * own thread. Stop, reset and exit requests from devices (any thread) are
 * handed to the loop thread, which stops the vCPUs and acts. */
#ifndef EMBER_MACHINE_MACHINE_H
#define EMBER_MACHINE_MACHINE_H

#include "cli/config.h"

/* Exit status when the guest crashed the CPU (triple fault, or an
 * instruction the accelerator cannot run): a register dump is printed. */
#define MACHINE_EXIT_CRASH 2

struct machine;

/* Build the whole VM (RAM, accelerator, devices, kernel and firmware tables)
 * from cfg, which must outlive the machine. Prints one message naming the
 * file/device/option on failure and returns -errno. */
int machine_build(const struct vm_config *cfg, struct machine **out);
/* Run until the guest powers off, exits or crashes, or the user quits;
 * returns the process exit status. The terminal is restored on return. */
int machine_run(struct machine *m);
void machine_free(struct machine *m);

#endif
