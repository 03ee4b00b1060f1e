#ifndef CITYOPS_DEADLINE_TS_H
#define CITYOPS_DEADLINE_TS_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: for intervals and next-run times. */
static inline int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* *ts = now on @clock + @ms milliseconds: the absolute time that
 * pthread_cond_timedwait() takes (CLOCK_REALTIME, or the clock the
 * condition variable was set to). */
static inline void deadline_ts(clockid_t clock, unsigned ms,
                               struct timespec *ts)
{
    clock_gettime(clock, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

#endif
