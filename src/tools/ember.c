/* ember: run one virtual machine. Parse the QEMU-style command line, build
 * the machine, run it, and exit with the status the guest decided (see
 * --help: 0 power-off/quit, 1 host error, 2 guest crash, N isa-debug-exit). */
#include <signal.h>
#include <stdlib.h>

#include "cli/config.h"
#include "core/log.h"
#include "machine/machine.h"

/* Static: the configuration outlives the machine built from it. */
static struct vm_config config;

int main(int argc, char **argv)
{
    log_set_prog("ember");
    /* A reader that goes away (ember ... | head) must not kill the VM with
     * the terminal still raw: writes then fail with EPIPE, and the character
     * devices drop that output. */
    signal(SIGPIPE, SIG_IGN);
    int ret = config_parse(argc, argv, &config);
    if (ret != 0) {
        config_free(&config);
        return ret > 0 ? 0 : 1;
    }
    struct machine *m = NULL;
    if (machine_build(&config, &m) < 0)
        return 1;
    /* No teardown after the run: exit() flushes stdio and the kernel
     * releases the VM; the machine stays reachable for the leak checker. */
    exit(machine_run(m));
}
