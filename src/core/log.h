/* Logging and error reporting shared by every Ember program.
 *
 * Messages go to stderr prefixed with the program name ("ember: ...").
 * Callers name the file, device or option involved in the text itself;
 * functions report through these helpers and return negative errno.
 */
#ifndef EMBER_CORE_LOG_H
#define EMBER_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Name printed before every message; defaults to "ember". */
void log_set_prog(const char *prog);
const char *log_prog(void);
/* Messages above this level are dropped (default LOG_INFO; EMBER_DEBUG=1 -> LOG_DEBUG). */
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

/* log_error() then return -err: `return log_fail(-EINVAL, "...")` style. */
int log_fail(int neg_errno, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print and exit(1): only for command-line front ends and impossible states at start-up. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
