/* startup: run a command, report milliseconds from spawn to the first byte
 * it writes to stdout, to the first appearance of MARKER in it (-m; -1 if
 * it never appears), to its exit, and its peak RSS.
 *
 *   startup [-m MARKER] CMD [ARGS...]
 *   -> first_byte_ms=12.3 marker_ms=20.1 exit_ms=45.6 max_rss_kib=10240 status=33
 *
 * The marker tells the guest's own first output from firmware's (SeaBIOS
 * writes to the serial console before the guest runs).
 *
 * Used by bench/boot.sh to compare ember and QEMU on the same guest. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    const char *marker = NULL;
    if (argc >= 3 && !strcmp(argv[1], "-m")) {
        marker = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc < 2 || (marker && !*marker)) {
        fprintf(stderr, "usage: startup [-m MARKER] CMD [ARGS...]\n");
        return 2;
    }
    size_t mlen = marker ? strlen(marker) : 0;
    int pfd[2];
    if (pipe(pfd) < 0) {
        perror("startup: pipe");
        return 2;
    }
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        perror("startup: fork");
        return 2;
    }
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execvp(argv[1], argv + 1);
        fprintf(stderr, "startup: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    double first = -1, seen = -1;
    /* The marker may straddle two reads: keep the last mlen - 1 bytes in
     * front of the next chunk. */
    char buf[8192];
    size_t keep = 0;
    for (;;) {
        ssize_t n = read(pfd[0], buf + keep, sizeof(buf) - keep - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        double t = now_ms() - t0;
        if (first < 0)
            first = t;
        if (!marker || seen >= 0)
            continue;
        size_t len = keep + (size_t)n;
        if (memmem(buf, len, marker, mlen)) {
            seen = t;
            continue;
        }
        keep = mlen - 1 < len ? mlen - 1 : len;
        memmove(buf, buf + len - keep, keep);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    double end = now_ms() - t0;
    printf("first_byte_ms=%.2f marker_ms=%.2f exit_ms=%.2f max_rss_kib=%ld status=%d\n", first,
           seen, end,
           ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
