/* deadline: time-limit arithmetic (时限, DOMAIN.md 4), pure and deterministic.
 *
 * Contract:
 * - No clock, no randomness, no locale, no TZ: every result depends only on
 *   the arguments, so every node computes the same deadline on apply.
 * - Instants are UTC microseconds. Days, weekdays and office hours are those
 *   of China Standard Time, fixed UTC+8 without daylight saving. A "local day"
 *   is the number of days since 1970-01-01 in UTC+8.
 * - Supported instants: [DEADLINE_MIN_US, DEADLINE_MAX_US), i.e. from
 *   1970-01-01 08:00 +08 up to 10000-01-01 00:00 +08. An argument or a result
 *   outside that range is DEADLINE_INVALID, so no sum overflows.
 * - Office periods are half-open [start, end): an instant at a period's end
 *   is outside office hours.
 * - Every loop is bounded: a work-time deadline more than
 *   DEADLINE_MAX_SEARCH_DAYS local days after its start day (no configured
 *   limit is that long; a calendar of holidays only would need it) is
 *   DEADLINE_INVALID.
 *
 * Threads: none of these functions keeps state; call them from any thread.
 * A struct deadline_rules is read-only after deadline_rules_build().
 */
#ifndef CITYOPS_DEADLINE_H
#define CITYOPS_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

#include "cityops/v1/admin.pb-c.h"
#include "cityops/v1/case.pb-c.h"
#include "storage/store.h"

/* The only error: bad configuration, bad argument, or no deadline within
 * the supported range or DEADLINE_MAX_SEARCH_DAYS. */
#define DEADLINE_INVALID STORE_INVALID

#define DEADLINE_MAX_PERIODS 4 /* office periods per weekday */
#define DEADLINE_MAX_DAYS 4096 /* calendar overrides */
#define DEADLINE_MAX_SEARCH_DAYS 3650
#define DEADLINE_MIN_US 0LL
#define DEADLINE_MAX_US 253402272000000000LL /* 10000-01-01 00:00 +08 */

/* One office period in minutes after local midnight: start < end <= 1440. */
struct deadline_period {
    uint16_t start_min;
    uint16_t end_min;
};

/* Office hours and calendar of one configuration version. Periods of each
 * weekday are sorted and do not overlap (they may touch). Every working day
 * has office time: Monday always has periods, and a working day whose
 * weekday has none uses Monday's. */
struct deadline_rules {
    struct deadline_period week[7][DEADLINE_MAX_PERIODS]; /* [0] = Monday */
    uint8_t n_periods[7];
    /* Calendar overrides sorted by local day, no duplicates. */
    int32_t days[DEADLINE_MAX_DAYS];
    uint8_t workday[DEADLINE_MAX_DAYS]; /* 1: WORKDAY, 0: HOLIDAY */
    size_t n_days;
};

/* Build @r from configuration: @n_hours office hours per weekday (weekday
 * 1 = Monday ... 7 = Sunday) and @n_days calendar dates (YYYY-MM-DD, UTC+8,
 * years 1970-9999, any order: they are sorted into @r). The arrays and the
 * messages are borrowed for the call only.
 *
 * When @n_hours is 0 the hours are Monday-Friday 08:30-12:00 and
 * 14:00-17:30. Otherwise weekdays not listed have no periods of their own,
 * and Monday must be listed with at least one period: a working day whose
 * weekday has no periods (an adjusted working weekend, 调休) uses Monday's.
 * Dates not in the calendar: Monday-Friday work, Saturday and Sunday rest;
 * periods given for Saturday or Sunday only apply when the calendar makes
 * that date a WORKDAY.
 *
 * Rejected with DEADLINE_INVALID and a sentence in @err (@errlen bytes,
 * NUL-terminated; @err may be NULL): a weekday outside 1-7 or listed twice,
 * more than DEADLINE_MAX_PERIODS periods, a period with start >= end or
 * end > 1440, periods unsorted or overlapping, Monday without periods, a
 * date that does not parse or does not exist, a date listed twice, more than
 * DEADLINE_MAX_DAYS dates. On failure *@r must not be used. */
int deadline_rules_build(struct deadline_rules *r,
                         const Cityops__V1__WeekdayHours *const *hours,
                         size_t n_hours,
                         const Cityops__V1__CalendarDay *const *days,
                         size_t n_days,
                         char *err,
                         size_t errlen);

/* 1 if @local_day (days since 1970-01-01 in UTC+8) is a working day under
 * @r, else 0. */
int deadline_is_workday(const struct deadline_rules *r, int64_t local_day);

/* Deadline of a limit of @amount @unit started at @start_us, in
 * *@deadline_us (UTC us):
 * - EMERGENCY_HOURS: start + amount x 1 h; CALENDAR_DAYS: start + amount x
 *   24 h. Holidays and office hours do not matter.
 * - WORK_HOURS: the instant at which amount hours of office time inside
 *   office periods of working days have passed since the start. A start
 *   outside office hours counts from the next office period. A deadline that
 *   falls exactly on a period's end is that end (2 h from 15:30 with
 *   14:00-17:30 is 17:30 the same day, not 08:30 the next working day).
 *   Example (DOMAIN.md 4): 2 h from 11:30 with 08:30-12:00, 14:00-17:30 is
 *   15:30.
 * - WORK_DAYS: the same office-time position on the amount-th working day
 *   after the start's day. The position is the office time of the start's
 *   day before the start. A start outside office hours first moves to the
 *   next office period: before or between the day's periods, to the start of
 *   the next one (same day); after the last period or on a rest day, to the
 *   first period of the next working day, at position 0, and that day
 *   counts as the start's day. A position maps to the target day's periods
 *   half-open, so position 0 is the start of its first period and a
 *   position equal to the end of one period is the start of the next (a
 *   start in the 12:00-14:00 break lands at 14:00). A target day with less
 *   office time than the position (shorter hours) gives the end of its last
 *   period: the deadline stays on the N-th working day.
 * @amount 0, @unit UNSPECIFIED or unknown, @start_us or the result outside
 * the supported range: DEADLINE_INVALID, *@deadline_us untouched. */
int deadline_compute(const struct deadline_rules *r,
                     int64_t start_us,
                     Cityops__V1__TimeUnit unit,
                     uint32_t amount,
                     int64_t *deadline_us);

/* Shelving (挂账) stops the clock: the new deadline, in *@out_us, of a
 * clock of @unit whose deadline was @deadline_us, paused over
 * [@paused_us, @resumed_us):
 * - EMERGENCY_HOURS, CALENDAR_DAYS: deadline + (resumed - paused), even if
 *   the deadline had passed before the pause.
 * - WORK_HOURS, WORK_DAYS: the office time left between paused and the
 *   deadline (0 if the deadline was at or before the pause) is counted
 *   again from resumed as WORK_HOURS counts (an instant outside office hours
 *   counts from the next office period). With nothing left the result is
 *   the first office instant at or after resumed: a clock that had already
 *   run out gets no new office time, and the caller keeps its overdue flag.
 * @paused_us > @resumed_us, a bad unit or an instant outside the supported
 * range: DEADLINE_INVALID, *@out_us untouched. */
int deadline_resume(const struct deadline_rules *r,
                    Cityops__V1__TimeUnit unit,
                    int64_t deadline_us,
                    int64_t paused_us,
                    int64_t resumed_us,
                    int64_t *out_us);

/* Office time (us) inside [@from_us, @to_us): the overlap with office
 * periods of working days. 0 if @to_us <= @from_us; DEADLINE_INVALID
 * (negative) if an instant is outside the supported range. Exact for any
 * span: whole weeks are counted at once, the calendar's overrides corrected
 * one by one, so the cost is bounded by DEADLINE_MAX_DAYS. */
int64_t deadline_office_time(const struct deadline_rules *r,
                             int64_t from_us,
                             int64_t to_us);

#endif /* CITYOPS_DEADLINE_H */
