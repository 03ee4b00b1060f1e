/* Time-limit arithmetic in UTC+8 (see deadline.h).
 *
 * DESIGN: everything works on local microseconds (UTC + 8 h), split into a
 * local day and a time of day. Civil dates come from days_from_civil()
 * (H. Hinnant's proleptic Gregorian algorithm), so no libc time function,
 * locale or TZ variable is involved. Work-time searches walk day by day and
 * stop after DEADLINE_MAX_SEARCH_DAYS; office-time sums count whole weeks at
 * once and correct the calendar's overrides, so every loop is bounded by a
 * constant whatever the arguments.
 */
#include "storage/deadline.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MIN_US 60000000LL
#define HOUR_US (60 * MIN_US)
#define DAY_US (24 * HOUR_US)
#define ZONE_US (8 * HOUR_US)
#define MINUTES_PER_DAY 1440

#define UNIT(x) CITYOPS__V1__TIME_UNIT__TIME_UNIT_##x

static const char *const weekday_names[7] = {"Monday",   "Tuesday", "Wednesday",
                                             "Thursday", "Friday",  "Saturday",
                                             "Sunday"};

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return DEADLINE_INVALID;
}

/* --- civil dates --- */

/* Days since 1970-01-01 of y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe;
    unsigned doy;
    unsigned doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned len[12] = {31, 28, 31, 30, 31, 30,
                                     31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : len[m - 1];
}

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* "YYYY-MM-DD", years 1970-9999, to a local day number. */
static int parse_date(const char *s, int32_t *day)
{
    unsigned y;
    unsigned m;
    unsigned d;

    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-' ||
        digits(s, 4, &y) != 0 || digits(s + 5, 2, &m) != 0 ||
        digits(s + 8, 2, &d) != 0) {
        return -1;
    }
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m)) {
        return -1;
    }
    *day = (int32_t)days_from_civil(y, m, d);
    return 0;
}

/* 0 = Monday ... 6 = Sunday; 1970-01-01 was a Thursday. */
static int weekday_of(int64_t day)
{
    int64_t w = (day + 3) % 7;

    return (int)(w < 0 ? w + 7 : w);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int in_range(int64_t us)
{
    return us >= DEADLINE_MIN_US && us < DEADLINE_MAX_US;
}

/* --- rules --- */

static int
check_periods(const Cityops__V1__WeekdayHours *h, char *err, size_t errlen)
{
    const char *name = weekday_names[h->weekday - 1];

    if (h->n_periods > DEADLINE_MAX_PERIODS) {
        return fail(err, errlen, "%s has %zu office periods, at most %d", name,
                    h->n_periods, DEADLINE_MAX_PERIODS);
    }
    for (size_t i = 0; i < h->n_periods; i++) {
        const Cityops__V1__OfficePeriod *p = h->periods[i];

        if (p->start_minute >= p->end_minute ||
            p->end_minute > MINUTES_PER_DAY) {
            return fail(err, errlen,
                        "%s period %zu (minutes %u-%u) must have "
                        "start < end <= 1440",
                        name, i + 1, p->start_minute, p->end_minute);
        }
        if (i > 0 && p->start_minute < h->periods[i - 1]->end_minute) {
            return fail(err, errlen,
                        "%s period %zu (minutes %u-%u) starts before "
                        "period %zu ends (minute %u): periods must be "
                        "sorted and not overlap",
                        name, i + 1, p->start_minute, p->end_minute, i,
                        h->periods[i - 1]->end_minute);
        }
    }
    return 0;
}

static void set_default_hours(struct deadline_rules *r)
{
    for (int wd = 0; wd < 5; wd++) {
        r->week[wd][0] = (struct deadline_period){8 * 60 + 30, 12 * 60};
        r->week[wd][1] = (struct deadline_period){14 * 60, 17 * 60 + 30};
        r->n_periods[wd] = 2;
    }
}

static int build_hours(struct deadline_rules *r,
                       const Cityops__V1__WeekdayHours *const *hours,
                       size_t n_hours,
                       char *err,
                       size_t errlen)
{
    uint8_t seen[7] = {0};

    if (n_hours == 0) {
        set_default_hours(r);
        return 0;
    }
    for (size_t i = 0; i < n_hours; i++) {
        const Cityops__V1__WeekdayHours *h = hours[i];
        int wd;
        int rv;

        assert(h != NULL);
        if (h->weekday < 1 || h->weekday > 7) {
            return fail(err, errlen,
                        "office hours entry %zu has weekday %u, not 1 "
                        "(Monday) to 7 (Sunday)",
                        i + 1, h->weekday);
        }
        wd = (int)h->weekday - 1;
        if (seen[wd]) {
            return fail(err, errlen, "%s office hours are listed twice",
                        weekday_names[wd]);
        }
        seen[wd] = 1;
        rv = check_periods(h, err, errlen);
        if (rv != 0) {
            return rv;
        }
        for (size_t k = 0; k < h->n_periods; k++) {
            r->week[wd][k].start_min = (uint16_t)h->periods[k]->start_minute;
            r->week[wd][k].end_min = (uint16_t)h->periods[k]->end_minute;
        }
        r->n_periods[wd] = (uint8_t)h->n_periods;
    }
    if (r->n_periods[0] == 0) {
        return fail(err, errlen,
                    "Monday has no office periods, but its hours are the "
                    "ones adjusted working days (调休) fall back to");
    }
    return 0;
}

/* Insertion sort: calendars usually arrive sorted, which makes it linear. */
static void sort_days(struct deadline_rules *r)
{
    for (size_t i = 1; i < r->n_days; i++) {
        int32_t day = r->days[i];
        uint8_t work = r->workday[i];
        size_t j = i;

        while (j > 0 && r->days[j - 1] > day) {
            r->days[j] = r->days[j - 1];
            r->workday[j] = r->workday[j - 1];
            j--;
        }
        r->days[j] = day;
        r->workday[j] = work;
    }
}

static int build_calendar(struct deadline_rules *r,
                          const Cityops__V1__CalendarDay *const *days,
                          size_t n_days,
                          char *err,
                          size_t errlen)
{
    if (n_days > DEADLINE_MAX_DAYS) {
        return fail(err, errlen, "the calendar has %zu dates, at most %d",
                    n_days, DEADLINE_MAX_DAYS);
    }
    for (size_t i = 0; i < n_days; i++) {
        assert(days[i] != NULL);
        if (parse_date(days[i]->date, &r->days[i]) != 0) {
            return fail(err, errlen,
                        "calendar date %zu \"%.32s\" is not a date "
                        "YYYY-MM-DD between 1970 and 9999",
                        i + 1, days[i]->date != NULL ? days[i]->date : "");
        }
        r->workday[i] = days[i]->workday ? 1 : 0;
    }
    r->n_days = n_days;
    sort_days(r);
    for (size_t i = 1; i < r->n_days; i++) {
        if (r->days[i] == r->days[i - 1]) {
            for (size_t k = 0; k < n_days; k++) {
                int32_t d;

                if (parse_date(days[k]->date, &d) == 0 && d == r->days[i]) {
                    return fail(err, errlen, "calendar date %s is listed twice",
                                days[k]->date);
                }
            }
        }
    }
    return 0;
}

int deadline_rules_build(struct deadline_rules *r,
                         const Cityops__V1__WeekdayHours *const *hours,
                         size_t n_hours,
                         const Cityops__V1__CalendarDay *const *days,
                         size_t n_days,
                         char *err,
                         size_t errlen)
{
    int rv;

    assert(r != NULL);
    assert(hours != NULL || n_hours == 0);
    assert(days != NULL || n_days == 0);
    memset(r, 0, sizeof(*r));
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    rv = build_hours(r, hours, n_hours, err, errlen);
    if (rv != 0) {
        return rv;
    }
    return build_calendar(r, days, n_days, err, errlen);
}

/* --- days --- */

/* Index of the first override >= @day. */
static size_t lower_bound(const struct deadline_rules *r, int64_t day)
{
    size_t lo = 0;
    size_t hi = r->n_days;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (r->days[mid] < day) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int deadline_is_workday(const struct deadline_rules *r, int64_t local_day)
{
    size_t i;

    assert(r != NULL);
    i = lower_bound(r, local_day);
    if (i < r->n_days && r->days[i] == local_day) {
        return r->workday[i];
    }
    return weekday_of(local_day) < 5;
}

/* The periods a working day of weekday @wd uses. */
static const struct deadline_period *
weekday_periods(const struct deadline_rules *r, int wd, int *n)
{
    if (r->n_periods[wd] == 0) {
        wd = 0;
    }
    *n = r->n_periods[wd];
    return r->week[wd];
}

/* The periods of @day: none on a rest day. */
static const struct deadline_period *
day_periods(const struct deadline_rules *r, int64_t day, int *n)
{
    if (!deadline_is_workday(r, day)) {
        *n = 0;
        return NULL;
    }
    return weekday_periods(r, weekday_of(day), n);
}

static int64_t period_start(const struct deadline_period *p)
{
    return p->start_min * MIN_US;
}

static int64_t period_end(const struct deadline_period *p)
{
    return p->end_min * MIN_US;
}

/* Office time of a working day of weekday @wd. */
static int64_t weekday_length(const struct deadline_rules *r, int wd)
{
    int n;
    const struct deadline_period *p = weekday_periods(r, wd, &n);
    int64_t len = 0;

    for (int k = 0; k < n; k++) {
        len += period_end(&p[k]) - period_start(&p[k]);
    }
    return len;
}

/* Office time of @day inside [@t1, @t2) (times of day). */
static int64_t
day_office(const struct deadline_rules *r, int64_t day, int64_t t1, int64_t t2)
{
    int n;
    const struct deadline_period *p = day_periods(r, day, &n);
    int64_t sum = 0;

    for (int k = 0; k < n; k++) {
        int64_t a = t1 > period_start(&p[k]) ? t1 : period_start(&p[k]);
        int64_t b = t2 < period_end(&p[k]) ? t2 : period_end(&p[k]);

        if (b > a) {
            sum += b - a;
        }
    }
    return sum;
}

/* Office time of the whole days [@a, @b): Monday-Friday without the
 * calendar, counted by whole weeks, then each override's difference. */
static int64_t days_office(const struct deadline_rules *r, int64_t a, int64_t b)
{
    int64_t week = 0;
    int64_t sum;
    int64_t d;

    for (int wd = 0; wd < 5; wd++) {
        week += weekday_length(r, wd);
    }
    sum = (b - a) / 7 * week;
    for (d = a + (b - a) / 7 * 7; d < b; d++) {
        int wd = weekday_of(d);

        sum += wd < 5 ? weekday_length(r, wd) : 0;
    }
    for (size_t i = lower_bound(r, a); i < r->n_days && r->days[i] < b; i++) {
        int wd = weekday_of(r->days[i]);
        int64_t plain = wd < 5 ? weekday_length(r, wd) : 0;
        int64_t actual = r->workday[i] ? weekday_length(r, wd) : 0;

        sum += actual - plain;
    }
    return sum;
}

int64_t deadline_office_time(const struct deadline_rules *r,
                             int64_t from_us,
                             int64_t to_us)
{
    int64_t d1;
    int64_t d2;
    int64_t t1;
    int64_t t2;

    assert(r != NULL);
    if (!in_range(from_us) || !in_range(to_us)) {
        return DEADLINE_INVALID;
    }
    if (to_us <= from_us) {
        return 0;
    }
    d1 = floor_div(from_us + ZONE_US, DAY_US);
    t1 = from_us + ZONE_US - d1 * DAY_US;
    d2 = floor_div(to_us + ZONE_US, DAY_US);
    t2 = to_us + ZONE_US - d2 * DAY_US;
    if (d1 == d2) {
        return day_office(r, d1, t1, t2);
    }
    return day_office(r, d1, t1, DAY_US) + days_office(r, d1 + 1, d2) +
           day_office(r, d2, 0, t2);
}

/* --- counting forward --- */

/* The instant at which @need us of office time have passed since @start_us
 * (@need 0: the first office instant at or after it). */
static int advance_office(const struct deadline_rules *r,
                          int64_t start_us,
                          int64_t need,
                          int64_t *out_us)
{
    int64_t day0 = floor_div(start_us + ZONE_US, DAY_US);
    int64_t tod = start_us + ZONE_US - day0 * DAY_US;

    for (int64_t day = day0; day <= day0 + DEADLINE_MAX_SEARCH_DAYS; day++) {
        int n;
        const struct deadline_period *p = day_periods(r, day, &n);

        for (int k = 0; k < n; k++) {
            int64_t from;

            if (tod >= period_end(&p[k])) {
                continue;
            }
            from = tod > period_start(&p[k]) ? tod : period_start(&p[k]);
            if (need <= period_end(&p[k]) - from) {
                *out_us = day * DAY_US + from + need - ZONE_US;
                return in_range(*out_us) ? 0 : DEADLINE_INVALID;
            }
            need -= period_end(&p[k]) - from;
        }
        tod = 0;
    }
    return DEADLINE_INVALID;
}

/* Where a WORK_DAYS clock starts: the day that counts as the start's day,
 * and the office-time position on it. */
static int work_days_origin(const struct deadline_rules *r,
                            int64_t start_us,
                            int64_t *origin_day,
                            int64_t *pos)
{
    int64_t day0 = floor_div(start_us + ZONE_US, DAY_US);
    int64_t tod = start_us + ZONE_US - day0 * DAY_US;
    int n;
    const struct deadline_period *p = day_periods(r, day0, &n);

    *pos = 0;
    for (int k = 0; k < n; k++) {
        if (tod < period_end(&p[k])) {
            if (tod > period_start(&p[k])) {
                *pos += tod - period_start(&p[k]);
            }
            *origin_day = day0;
            return 0;
        }
        *pos += period_end(&p[k]) - period_start(&p[k]);
    }
    *pos = 0;
    for (int64_t day = day0 + 1; day <= day0 + DEADLINE_MAX_SEARCH_DAYS;
         day++) {
        if (deadline_is_workday(r, day)) {
            *origin_day = day;
            return 0;
        }
    }
    return DEADLINE_INVALID;
}

static int compute_work_days(const struct deadline_rules *r,
                             int64_t start_us,
                             uint32_t amount,
                             int64_t *deadline_us)
{
    int64_t limit =
        floor_div(start_us + ZONE_US, DAY_US) + DEADLINE_MAX_SEARCH_DAYS;
    int64_t day;
    int64_t pos;
    int64_t at;
    int n;
    const struct deadline_period *p;

    if (work_days_origin(r, start_us, &day, &pos) != 0) {
        return DEADLINE_INVALID;
    }
    while (amount > 0) {
        if (++day > limit) {
            return DEADLINE_INVALID;
        }
        amount -= (uint32_t)deadline_is_workday(r, day);
    }
    p = day_periods(r, day, &n);
    at = period_end(&p[n - 1]); /* a shorter day: the end of its office */
    for (int k = 0; k < n; k++) {
        int64_t len = period_end(&p[k]) - period_start(&p[k]);

        if (pos < len) {
            at = period_start(&p[k]) + pos;
            break;
        }
        pos -= len;
    }
    at += day * DAY_US - ZONE_US;
    if (!in_range(at)) {
        return DEADLINE_INVALID;
    }
    *deadline_us = at;
    return 0;
}

/* start + amount x @step, DEADLINE_INVALID past the supported range. */
static int add_elapsed(int64_t start_us,
                       uint32_t amount,
                       int64_t step,
                       int64_t *deadline_us)
{
    if ((int64_t)amount > (DEADLINE_MAX_US - 1 - start_us) / step) {
        return DEADLINE_INVALID;
    }
    *deadline_us = start_us + (int64_t)amount * step;
    return 0;
}

int deadline_compute(const struct deadline_rules *r,
                     int64_t start_us,
                     Cityops__V1__TimeUnit unit,
                     uint32_t amount,
                     int64_t *deadline_us)
{
    int64_t out;
    int rv;

    assert(r != NULL);
    assert(deadline_us != NULL);
    if (amount == 0 || !in_range(start_us)) {
        return DEADLINE_INVALID;
    }
    switch (unit) {
    case UNIT(EMERGENCY_HOURS):
        return add_elapsed(start_us, amount, HOUR_US, deadline_us);
    case UNIT(CALENDAR_DAYS):
        return add_elapsed(start_us, amount, DAY_US, deadline_us);
    case UNIT(WORK_HOURS):
        /* More hours than the search window holds cannot succeed; the
         * check also keeps amount x 1 h from overflowing. */
        if (amount > (uint32_t)(DEADLINE_MAX_SEARCH_DAYS + 1) * 24) {
            return DEADLINE_INVALID;
        }
        rv = advance_office(r, start_us, (int64_t)amount * HOUR_US, &out);
        break;
    case UNIT(WORK_DAYS):
        rv = compute_work_days(r, start_us, amount, &out);
        break;
    default:
        return DEADLINE_INVALID;
    }
    if (rv == 0) {
        *deadline_us = out;
    }
    return rv;
}

int deadline_resume(const struct deadline_rules *r,
                    Cityops__V1__TimeUnit unit,
                    int64_t deadline_us,
                    int64_t paused_us,
                    int64_t resumed_us,
                    int64_t *out_us)
{
    int64_t left;
    int64_t out;

    assert(r != NULL);
    assert(out_us != NULL);
    if (!in_range(deadline_us) || !in_range(paused_us) ||
        !in_range(resumed_us) || paused_us > resumed_us) {
        return DEADLINE_INVALID;
    }
    switch (unit) {
    case UNIT(EMERGENCY_HOURS):
    case UNIT(CALENDAR_DAYS):
        out = deadline_us + (resumed_us - paused_us);
        if (!in_range(out)) {
            return DEADLINE_INVALID;
        }
        *out_us = out;
        return 0;
    case UNIT(WORK_HOURS):
    case UNIT(WORK_DAYS):
        left = deadline_office_time(r, paused_us, deadline_us);
        if (advance_office(r, resumed_us, left, &out) != 0) {
            return DEADLINE_INVALID;
        }
        *out_us = out;
        return 0;
    default:
        return DEADLINE_INVALID;
    }
}
