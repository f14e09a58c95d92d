/* startup: run a command, report milliseconds from spawn to the first byte
 * it writes to stdout, to its exit, and its peak RSS.
 *
 *   startup CMD [ARGS...]
 *   -> first_byte_ms=12.3 exit_ms=45.6 max_rss_kib=10240 status=33
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
    if (argc < 2) {
        fprintf(stderr, "usage: startup CMD [ARGS...]\n");
        return 2;
    }
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
    double first = -1;
    char buf[4096];
    for (;;) {
        ssize_t n = read(pfd[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (first < 0)
            first = now_ms() - t0;
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    double end = now_ms() - t0;
    printf("first_byte_ms=%.2f exit_ms=%.2f max_rss_kib=%ld status=%d\n", first, end,
           ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
