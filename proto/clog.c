/* Levelled logging to stderr. */
#include "clog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum clog_level floor_level = CLOG_INFO;
static const char *node_name = "";

void clog_set_level(enum clog_level level)
{
    floor_level = level;
}

void clog_set_name(const char *name)
{
    node_name = name != NULL ? name : "";
}

int clog_level_parse(const char *name)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void clog_write(enum clog_level level, const char *module, const char *fmt, ...)
{
    static const char *tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    char line[1024];
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level < floor_level) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s%s%s: %s\n", stamp, ts.tv_nsec / 1000000,
            tags[level], node_name, node_name[0] ? " " : "", module, line);
}
