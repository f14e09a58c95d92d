/* Constants shared by the guests' assembly and C. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define GUEST_MAX_CPUS 32        /* AP stacks are reserved for this many */
#define GUEST_TRAMPOLINE 0x8000  /* AP real-mode start page (SIPI vector 0x08) */

#endif
