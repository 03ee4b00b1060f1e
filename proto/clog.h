/* clog: levelled log lines on stderr, one line per event that matters.
 *
 * Format: "2026-11-25T17:18:07.123Z INFO  cons: became leader (term 3)".
 * Thread-safe (one fprintf per line). The level floor is process-wide. */
#ifndef CITYOPS_CLOG_H
#define CITYOPS_CLOG_H

enum clog_level { CLOG_DEBUG = 0, CLOG_INFO, CLOG_WARN, CLOG_ERROR };

void clog_set_level(enum clog_level level);
/* Parse "debug", "info", "warn", "error"; returns -1 if unknown. */
int clog_level_parse(const char *name);
/* Prefix every line with @name (e.g. "n1"); borrowed, keep it alive. */
void clog_set_name(const char *name);

void clog_write(enum clog_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* clog(CLOG_INFO, "cons", "became leader (term %llu)", term); the macro
 * keeps clear of C99's complex clog(). */
#define clog(...) clog_write(__VA_ARGS__)

#endif /* CITYOPS_CLOG_H */
