#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog_name = "ember";
static enum log_level max_level = LOG_INFO;
static bool level_from_env_checked;

void log_set_prog(const char *prog) { prog_name = prog; }
const char *log_prog(void) { return prog_name; }
void log_set_level(enum log_level level)
{
    max_level = level;
    level_from_env_checked = true;
}

bool log_enabled(enum log_level level)
{
    if (!level_from_env_checked) {
        const char *env = getenv("EMBER_DEBUG");
        if (env && *env && strcmp(env, "0") != 0)
            max_level = LOG_DEBUG;
        level_from_env_checked = true;
    }
    return level <= max_level;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    static const char *const tag[] = {
        [LOG_ERROR] = "", [LOG_WARN] = "warning: ", [LOG_INFO] = "", [LOG_DEBUG] = "debug: "};
    if (!log_enabled(level))
        return;
    /* One fprintf per line keeps messages from vCPU threads unmixed. */
    char buf[1024];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    fprintf(stderr, "%s: %s%s\n", prog_name, tag[level], buf);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

int log_fail(int neg_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_ERROR, fmt, ap);
    va_end(ap);
    return neg_errno;
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}
