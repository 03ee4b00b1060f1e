/* Unit tests of storage/deadline.h: time limits in UTC+8 (DOMAIN.md 4).
 *
 * Instants are written as local times, "2026-10-09 11:30 +08", and turned
 * into UTC microseconds by at(), which counts days year by year and month by
 * month (not the module's algorithm) and is itself checked against known
 * epoch values. Every expected value is worked out by hand in the comment of
 * its row.
 *
 * Calendar assumed by CAL (2026 National Day, and New Year 2027):
 *   2026-09-27 Sunday     WORKDAY (调休)
 *   2026-10-01 Thursday .. 2026-10-07 Wednesday   HOLIDAY
 *   2026-10-10 Saturday   WORKDAY (调休)
 *   2027-01-01 Friday     HOLIDAY
 * Other dates: Monday-Friday work, Saturday and Sunday rest. Weekdays used:
 * 2026-09-25 Fri, 09-26 Sat, 09-28 Mon, 09-30 Wed, 10-08 Thu, 10-09 Fri,
 * 10-11 Sun, 10-12 Mon, 10-15 Thu, 10-16 Fri, 10-19 Mon, 2026-12-31 Thu,
 * 2027-01-04 Mon.
 *
 * Rule sets:
 *   PLAIN  default hours (Mon-Fri 08:30-12:00, 14:00-17:30, 7 h), no calendar
 *   CAL    default hours, the calendar above
 *   ALT    Mon-Fri 09:00-12:00, 13:00-17:00 (7 h), Saturday 09:00-12:00
 *          (3 h), Sunday none (so a working Sunday uses Monday's), same
 *          calendar as CAL: a later configuration version
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "storage/deadline.h"

#define SEC 1000000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

#define U(x) CITYOPS__V1__TIME_UNIT__TIME_UNIT_##x
#define EH U(EMERGENCY_HOURS)
#define WH U(WORK_HOURS)
#define WD U(WORK_DAYS)
#define CD U(CALENDAR_DAYS)

enum { PLAIN, CAL, ALT, N_RULES };

static struct deadline_rules rules[N_RULES];

/* --- local time helper --- */

static int leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* "YYYY-MM-DD HH:MM +08" to UTC us. */
static int64_t at(const char *s)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};
    int y;
    int mo;
    int d;
    int h;
    int mi;
    int64_t days = 0;

    assert_int_equal(sscanf(s, "%d-%d-%d %d:%d +08", &y, &mo, &d, &h, &mi), 5);
    assert_non_null(strstr(s, " +08"));
    for (int yy = 1970; yy < y; yy++) {
        days += leap(yy) ? 366 : 365;
    }
    for (int m = 1; m < mo; m++) {
        days += mdays[m - 1] + (m == 2 && leap(y));
    }
    days += d - 1;
    return days * DAY + h * HOUR + mi * MIN - 8 * HOUR;
}

static int64_t local_day(const char *s)
{
    return (at(s) + 8 * HOUR) / DAY;
}

/* Local day number to "YYYY-MM-DD", the inverse of at()'s count. */
static void date_of(int64_t day, char out[32])
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};
    int y = 1970;
    int m = 1;

    while (day >= (leap(y) ? 366 : 365)) {
        day -= leap(y) ? 366 : 365;
        y++;
    }
    while (day >= mdays[m - 1] + (m == 2 && leap(y))) {
        day -= mdays[m - 1] + (m == 2 && leap(y));
        m++;
    }
    snprintf(out, 32, "%04d-%02d-%02d", y % 10000, m, (int)day + 1);
}

static void test_local_time_helper_matches_known_epoch_values(void **state)
{
    (void)state;
    /* The epoch is 08:00 in UTC+8. */
    assert_int_equal(at("1970-01-01 08:00 +08"), 0);
    assert_int_equal(at("1970-01-01 00:00 +08"), -28800 * SEC);
    /* 2000-01-01T00:00Z = 946684800 s. */
    assert_int_equal(at("2000-01-01 08:00 +08"), 946684800 * SEC);
    /* 1e9 s = 2001-09-09T01:46:40Z; 09:46 +08 is 40 s before. */
    assert_int_equal(at("2001-09-09 09:46 +08"), 999999960 * SEC);
    /* 2^31 - 1 s = 2038-01-19T03:14:07Z; 11:14 +08 is 7 s before. */
    assert_int_equal(at("2038-01-19 11:14 +08"), 2147483640LL * SEC);
    /* 2024-02-29T00:00Z = 1709164800 s (a leap day). */
    assert_int_equal(at("2024-02-29 08:00 +08"), 1709164800LL * SEC);
    /* 2026-01-01 is day 56 x 365 + 14 leap days = 20454; 2026-10-09 is
     * 281 days later, 20735; 11:30 +08 = 03:30Z: 20735 x 86400 + 12600. */
    assert_int_equal(at("2026-10-09 11:30 +08"), 1791516600LL * SEC);
    /* 2026-12-31 is day 20454 + 364 = 20818; 2027-01-01 00:30 +08 is
     * 2026-12-31 16:30Z: 20818 x 86400 + 59400. */
    assert_int_equal(at("2027-01-01 00:30 +08"), 1798734600LL * SEC);
    assert_int_equal(local_day("2027-01-01 00:30 +08"), 20819);
    {
        char d[32];

        date_of(20819, d);
        assert_string_equal(d, "2027-01-01");
        date_of(10957, d); /* 946684800 s / 86400 */
        assert_string_equal(d, "2000-01-01");
    }
}

/* --- rule sets --- */

static Cityops__V1__OfficePeriod periods[16];
static Cityops__V1__OfficePeriod *period_ptrs[16];
static size_t n_period_msgs;

static void
hours_init(Cityops__V1__WeekdayHours *h, uint32_t weekday, const char *spec)
{
    unsigned h1;
    unsigned m1;
    unsigned h2;
    unsigned m2;
    int used;

    *h = (Cityops__V1__WeekdayHours)CITYOPS__V1__WEEKDAY_HOURS__INIT;
    h->weekday = weekday;
    h->periods = &period_ptrs[n_period_msgs];
    while (sscanf(spec, " %u:%u-%u:%u%n", &h1, &m1, &h2, &m2, &used) == 4) {
        Cityops__V1__OfficePeriod *p = &periods[n_period_msgs];

        assert_true(n_period_msgs < 16);
        *p = (Cityops__V1__OfficePeriod)CITYOPS__V1__OFFICE_PERIOD__INIT;
        p->start_minute = h1 * 60 + m1;
        p->end_minute = h2 * 60 + m2;
        period_ptrs[n_period_msgs++] = p;
        h->n_periods++;
        spec += used;
    }
}

struct cal_row {
    const char *date;
    int workday;
};

static const struct cal_row national_day[] = {
    {"2026-09-27", 1}, {"2026-10-01", 0}, {"2026-10-02", 0}, {"2026-10-03", 0},
    {"2026-10-04", 0}, {"2026-10-05", 0}, {"2026-10-06", 0}, {"2026-10-07", 0},
    {"2026-10-10", 1}, {"2027-01-01", 0},
};
#define N_NATIONAL (sizeof(national_day) / sizeof(national_day[0]))

static Cityops__V1__CalendarDay cal_msgs[DEADLINE_MAX_DAYS + 1];
static const Cityops__V1__CalendarDay *cal_ptrs[DEADLINE_MAX_DAYS + 1];
static char cal_text[DEADLINE_MAX_DAYS + 1][32];

static void cal_set(size_t i, const char *date, int workday)
{
    cal_msgs[i] = (Cityops__V1__CalendarDay)CITYOPS__V1__CALENDAR_DAY__INIT;
    snprintf(cal_text[i], sizeof(cal_text[i]), "%s", date);
    cal_msgs[i].date = cal_text[i];
    cal_msgs[i].workday = workday;
    cal_ptrs[i] = &cal_msgs[i];
}

static void cal_national(void)
{
    for (size_t i = 0; i < N_NATIONAL; i++) {
        cal_set(i, national_day[i].date, national_day[i].workday);
    }
}

static int build(struct deadline_rules *r,
                 const Cityops__V1__WeekdayHours *const *hours,
                 size_t n_hours,
                 size_t n_days,
                 char *err)
{
    return deadline_rules_build(r, hours, n_hours, cal_ptrs, n_days, err, 256);
}

static int group_setup(void **state)
{
    Cityops__V1__WeekdayHours alt[6];
    const Cityops__V1__WeekdayHours *alt_ptrs[6];
    char err[256];

    (void)state;
    n_period_msgs = 0;
    for (uint32_t wd = 1; wd <= 5; wd++) {
        hours_init(&alt[wd - 1], wd, "09:00-12:00 13:00-17:00");
    }
    hours_init(&alt[5], 6, "09:00-12:00");
    for (int i = 0; i < 6; i++) {
        alt_ptrs[i] = &alt[i];
    }
    cal_national();
    if (build(&rules[PLAIN], NULL, 0, 0, err) != 0 ||
        build(&rules[CAL], NULL, 0, N_NATIONAL, err) != 0 ||
        build(&rules[ALT], alt_ptrs, 6, N_NATIONAL, err) != 0) {
        fprintf(stderr, "rules: %s\n", err);
        return -1;
    }
    return 0;
}

/* --- deadline_compute tables --- */

struct row {
    int rules;
    const char *start;
    Cityops__V1__TimeUnit unit;
    uint32_t amount;
    const char *expect;
};

static void check_rows(const struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int64_t got = -1;
        int rv = deadline_compute(&rules[rows[i].rules], at(rows[i].start),
                                  rows[i].unit, rows[i].amount, &got);

        if (rv != 0 || got != at(rows[i].expect)) {
            fail_msg("row %zu: %s + %u (unit %d): rv %d, got %lld, want %s "
                     "= %lld",
                     i, rows[i].start, rows[i].amount, (int)rows[i].unit, rv,
                     (long long)got, rows[i].expect,
                     (long long)at(rows[i].expect));
        }
    }
}

static void test_work_hours_count_only_office_time_on_working_days(void **state)
{
    static const struct row rows[] = {
        /* DOMAIN.md 4: 11:30-12:00 = 0.5 h, 1.5 h left from 14:00. */
        {CAL, "2026-10-09 11:30 +08", WH, 2, "2026-10-09 15:30 +08"},
        /* Before office hours: counts from 08:30, 08:30 + 2 h. */
        {CAL, "2026-10-08 07:00 +08", WH, 2, "2026-10-08 10:30 +08"},
        /* Lunch break: counts from 14:00, 14:00 + 2 h. */
        {CAL, "2026-10-08 12:45 +08", WH, 2, "2026-10-08 16:00 +08"},
        /* After hours Thursday: Friday 08:30 + 2 h. */
        {CAL, "2026-10-08 19:00 +08", WH, 2, "2026-10-09 10:30 +08"},
        /* Friday evening: weekend skipped, Monday 08:30 + 3 h. */
        {CAL, "2026-10-16 18:00 +08", WH, 3, "2026-10-19 11:30 +08"},
        /* Friday 16:30: 1 h to 17:30, 3 h left, Monday 08:30 + 3 h. */
        {CAL, "2026-10-16 16:30 +08", WH, 4, "2026-10-19 11:30 +08"},
        /* Ends exactly at a period's end: 15:30 + 2 h = 17:30, not the next
         * working day's 08:30. */
        {CAL, "2026-10-08 15:30 +08", WH, 2, "2026-10-08 17:30 +08"},
        /* Starts at a period's end (12:00 is outside [08:30, 12:00)):
         * 14:00 + 1 h. */
        {CAL, "2026-10-08 12:00 +08", WH, 1, "2026-10-08 15:00 +08"},
        /* 15 h from Monday 08:30: 7 h Monday, 7 h Tuesday, Wednesday
         * 08:30 + 1 h. */
        {CAL, "2026-10-12 08:30 +08", WH, 15, "2026-10-14 09:30 +08"},
        /* National Day: Wed 09-30 16:00-17:30 = 1.5 h, 10-01..07 off,
         * Thu 10-08 08:30 + 2.5 h = 11:00. */
        {CAL, "2026-09-30 16:00 +08", WH, 4, "2026-10-08 11:00 +08"},
        /* Same start without the calendar: 1.5 h Wednesday, Thursday
         * 10-01 08:30 + 2.5 h. */
        {PLAIN, "2026-09-30 16:00 +08", WH, 4, "2026-10-01 11:00 +08"},
        /* Adjusted working Sunday 09-27 uses Monday's hours: from Saturday,
         * Sunday 08:30 + 1 h. */
        {CAL, "2026-09-26 10:00 +08", WH, 1, "2026-09-27 09:30 +08"},
        /* Without the calendar Sunday rests: Monday 09-28 08:30 + 1 h. */
        {PLAIN, "2026-09-26 10:00 +08", WH, 1, "2026-09-28 09:30 +08"},
        /* ALT has no Sunday hours, so Sunday 09-27 uses ALT's Monday
         * (09:00-12:00): 09:00 + 1 h. */
        {ALT, "2026-09-26 10:00 +08", WH, 1, "2026-09-27 10:00 +08"},
        /* Adjusted Saturday 10-10: Friday 17:00-17:30 = 0.5 h, Saturday
         * (Monday's hours) 08:30 + 0.5 h. */
        {CAL, "2026-10-09 17:00 +08", WH, 1, "2026-10-10 09:00 +08"},
        /* ALT gives Saturday its own 09:00-12:00: Friday 16:00-17:00 =
         * 1 h, Saturday 09:00 + 3 h = 12:00 (end of its only period). */
        {ALT, "2026-10-09 16:00 +08", WH, 4, "2026-10-10 12:00 +08"},
        /* Local midnight Monday: 08:30 + 1 h. */
        {CAL, "2026-10-12 00:00 +08", WH, 1, "2026-10-12 09:30 +08"},
        /* One minute before midnight Sunday: Monday 08:30 + 1 h. */
        {CAL, "2026-10-11 23:59 +08", WH, 1, "2026-10-12 09:30 +08"},
        /* 2027-01-01 00:30 +08 is still Thursday 2026-12-31 16:30 in UTC
         * (inside 14:00-17:30 if read in UTC). Local Friday Jan 1 is a
         * holiday, then the weekend: Monday 01-04 08:30 + 1 h. */
        {CAL, "2027-01-01 00:30 +08", WH, 1, "2027-01-04 09:30 +08"},
        /* Without the holiday Jan 1 is a working Friday: 08:30 + 1 h. */
        {PLAIN, "2027-01-01 00:30 +08", WH, 1, "2027-01-01 09:30 +08"},
        /* Across the year: Thu 12-31 17:00-17:30 = 0.5 h, Jan 1 holiday,
         * weekend, Monday 01-04 08:30 + 1.5 h. */
        {CAL, "2026-12-31 17:00 +08", WH, 2, "2027-01-04 10:00 +08"},
    };

    (void)state;
    check_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void test_work_days_keep_the_office_time_position(void **state)
{
    static const struct row rows[] = {
        /* Monday 10:00 + 1 working day: Tuesday 10:00. */
        {CAL, "2026-10-12 10:00 +08", WD, 1, "2026-10-13 10:00 +08"},
        /* Friday 15:00 + 1: weekend skipped, Monday 15:00. */
        {CAL, "2026-10-16 15:00 +08", WD, 1, "2026-10-19 15:00 +08"},
        /* Wed 09-30 10:00 + 2: 10-01..07 off, 10-08 (1), 10-09 (2). */
        {CAL, "2026-09-30 10:00 +08", WD, 2, "2026-10-09 10:00 +08"},
        /* + 3: the adjusted Saturday 10-10 is the third, Monday's hours,
         * position 1.5 h = 10:00. */
        {CAL, "2026-09-30 10:00 +08", WD, 3, "2026-10-10 10:00 +08"},
        /* Without the calendar: 10-01 (1), 10-02 (2). */
        {PLAIN, "2026-09-30 10:00 +08", WD, 2, "2026-10-02 10:00 +08"},
        /* Before office hours: position 0 the same day; Friday 08:30. */
        {CAL, "2026-10-15 07:00 +08", WD, 1, "2026-10-16 08:30 +08"},
        /* Lunch break: position 3.5 h (all of the morning), which maps to
         * the start of the afternoon: Friday 14:00. */
        {CAL, "2026-10-15 12:30 +08", WD, 1, "2026-10-16 14:00 +08"},
        /* After hours Thursday: origin Friday position 0, + 1 = Monday
         * 08:30. */
        {CAL, "2026-10-15 18:00 +08", WD, 1, "2026-10-19 08:30 +08"},
        /* Friday evening: origin Monday 10-19, + 1 = Tuesday 08:30. */
        {CAL, "2026-10-16 18:00 +08", WD, 1, "2026-10-20 08:30 +08"},
        /* Saturday: origin Monday 10-19, + 2 = Wednesday 08:30. */
        {CAL, "2026-10-17 11:00 +08", WD, 2, "2026-10-21 08:30 +08"},
        /* On a holiday: origin Thursday 10-08, + 1 = Friday 08:30. */
        {CAL, "2026-10-01 10:00 +08", WD, 1, "2026-10-09 08:30 +08"},
        /* ALT, shorter target day: Friday 16:00 is position 3 h + 3 h =
         * 6 h; Saturday 10-10 has 3 h (09:00-12:00), so its end, 12:00. */
        {ALT, "2026-10-09 16:00 +08", WD, 1, "2026-10-10 12:00 +08"},
        /* ALT, position that fits: Friday 10:30 = 1.5 h, Saturday
         * 09:00 + 1.5 h. */
        {ALT, "2026-10-09 10:30 +08", WD, 1, "2026-10-10 10:30 +08"},
        /* ALT, working Sunday with Monday's hours: Friday 09-25 16:00 is
         * position 6 h; Sat 09-26 rests; Sun 09-27: 3 h in 09:00-12:00,
         * 3 h into 13:00 = 16:00. */
        {ALT, "2026-09-25 16:00 +08", WD, 1, "2026-09-27 16:00 +08"},
        /* Year boundary: 2027-01-01 00:30 +08 is a holiday (Thursday in
         * UTC); origin Monday 01-04 position 0, + 1 = Tuesday 08:30. */
        {CAL, "2027-01-01 00:30 +08", WD, 1, "2027-01-05 08:30 +08"},
    };

    (void)state;
    check_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void test_emergency_hours_and_calendar_days_ignore_holidays(void **state)
{
    static const struct row rows[] = {
        /* 24 h from Wed 16:00 ends on the holiday 10-01 16:00. */
        {CAL, "2026-09-30 16:00 +08", EH, 24, "2026-10-01 16:00 +08"},
        /* 2 h from 16:00 ends after office hours, 18:00. */
        {CAL, "2026-09-30 16:00 +08", EH, 2, "2026-09-30 18:00 +08"},
        /* 1 h from the first half hour of 2027 (+08). */
        {CAL, "2027-01-01 00:30 +08", EH, 1, "2027-01-01 01:30 +08"},
        /* 3 x 24 h into the holidays. */
        {CAL, "2026-09-30 16:00 +08", CD, 3, "2026-10-03 16:00 +08"},
        /* 1 x 24 h across the year. */
        {CAL, "2026-12-31 20:00 +08", CD, 1, "2027-01-01 20:00 +08"},
        /* 10 x 24 h from Friday 18:00. */
        {ALT, "2026-10-16 18:00 +08", CD, 10, "2026-10-26 18:00 +08"},
    };

    (void)state;
    check_rows(rows, sizeof(rows) / sizeof(rows[0]));
}

static void
test_a_config_change_gives_new_deadlines_from_the_same_start(void **state)
{
    int64_t a = 0;
    int64_t b = 0;

    (void)state;
    /* CAL: 11:30-12:00 = 0.5 h, 14:00 + 1.5 h = 15:30. ALT: 0.5 h, then
     * 13:00 + 1.5 h = 14:30. */
    assert_int_equal(
        deadline_compute(&rules[CAL], at("2026-10-08 11:30 +08"), WH, 2, &a),
        0);
    assert_int_equal(
        deadline_compute(&rules[ALT], at("2026-10-08 11:30 +08"), WH, 2, &b),
        0);
    assert_int_equal(a, at("2026-10-08 15:30 +08"));
    assert_int_equal(b, at("2026-10-08 14:30 +08"));
    /* The rules are values: computing with ALT did not change CAL. */
    assert_int_equal(
        deadline_compute(&rules[CAL], at("2026-10-08 11:30 +08"), WH, 2, &a),
        0);
    assert_int_equal(a, at("2026-10-08 15:30 +08"));
}

/* --- calendar and office time --- */

static void test_is_workday_follows_the_calendar_in_local_days(void **state)
{
    const struct deadline_rules *r = &rules[CAL];

    (void)state;
    assert_int_equal(deadline_is_workday(r, local_day("2026-09-26 12:00 +08")),
                     0); /* Saturday */
    assert_int_equal(deadline_is_workday(r, local_day("2026-09-27 12:00 +08")),
                     1); /* adjusted Sunday */
    assert_int_equal(deadline_is_workday(r, local_day("2026-09-28 12:00 +08")),
                     1); /* Monday */
    assert_int_equal(deadline_is_workday(r, local_day("2026-10-05 12:00 +08")),
                     0); /* holiday Monday */
    assert_int_equal(deadline_is_workday(r, local_day("2026-10-10 12:00 +08")),
                     1); /* adjusted Saturday */
    assert_int_equal(deadline_is_workday(r, local_day("2026-10-11 12:00 +08")),
                     0); /* Sunday */
    assert_int_equal(deadline_is_workday(r, local_day("2027-01-01 00:30 +08")),
                     0); /* holiday, Thursday in UTC */
    assert_int_equal(deadline_is_workday(r, local_day("2026-12-31 23:59 +08")),
                     1);                                         /* Thursday */
    assert_int_equal(deadline_is_workday(&rules[PLAIN], 0), 1);  /* Thu */
    assert_int_equal(deadline_is_workday(&rules[PLAIN], 2), 0);  /* Sat */
    assert_int_equal(deadline_is_workday(&rules[PLAIN], -1), 1); /* Wed */
    assert_int_equal(deadline_is_workday(&rules[PLAIN], -5), 0); /* Sat */
}

struct span {
    int rules;
    const char *from;
    const char *to;
    int64_t expect;
};

static void test_office_time_sums_periods_of_working_days(void **state)
{
    static const struct span rows[] = {
        /* A plain week Mon-Sun: 5 x 7 h. */
        {CAL, "2026-10-12 00:00 +08", "2026-10-19 00:00 +08", 35 * HOUR},
        /* 09-28..10-11: Mon-Wed 21 h, 10-01..07 0, Thu-Fri 14 h, Sat
         * 10-10 7 h, Sun 0: 42 h. */
        {CAL, "2026-09-28 00:00 +08", "2026-10-12 00:00 +08", 42 * HOUR},
        /* The same days without the calendar: 10 working days. */
        {PLAIN, "2026-09-28 00:00 +08", "2026-10-12 00:00 +08", 70 * HOUR},
        /* The adjusted Sunday alone: Monday's 7 h. */
        {CAL, "2026-09-27 00:00 +08", "2026-09-28 00:00 +08", 7 * HOUR},
        /* DOMAIN example backwards: 0.5 h + 1.5 h. */
        {CAL, "2026-10-08 11:30 +08", "2026-10-08 15:30 +08", 2 * HOUR},
        /* Reversed span: 0. */
        {CAL, "2026-10-08 15:30 +08", "2026-10-08 11:30 +08", 0},
        /* Lunch break only: 0. */
        {CAL, "2026-10-08 12:00 +08", "2026-10-08 14:00 +08", 0},
        /* 12-28..01-10: Mon-Thu 28 h, Jan 1 off, Jan 4-8 35 h = 63 h. */
        {CAL, "2026-12-28 00:00 +08", "2027-01-11 00:00 +08", 63 * HOUR},
        /* ALT, Friday 16:00 to Saturday 10-10 11:00: 1 h + 2 h. */
        {ALT, "2026-10-09 16:00 +08", "2026-10-10 11:00 +08", 3 * HOUR},
        /* PLAIN, 2000-01-03 (Mon) to 2000-01-03 + 5218 weeks (2100-01-04):
         * 5218 x 35 h, counted by whole weeks. */
        {PLAIN, "2000-01-03 00:00 +08", "2100-01-04 00:00 +08",
         5218LL * 35 * HOUR},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t got = deadline_office_time(&rules[rows[i].rules],
                                           at(rows[i].from), at(rows[i].to));

        if (got != rows[i].expect) {
            fail_msg("row %zu: %s .. %s: got %lld, want %lld", i, rows[i].from,
                     rows[i].to, (long long)got, (long long)rows[i].expect);
        }
    }
}

/* Fixed-seed LCG (Knuth's MMIX constants). */
static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Office time by walking minute-aligned periods day by day, through the
 * public rules and deadline_is_workday() only. */
static int64_t
office_by_days(const struct deadline_rules *r, int64_t from, int64_t to)
{
    int64_t sum = 0;

    for (int64_t day = (from + 8 * HOUR) / DAY; day * DAY - 8 * HOUR < to;
         day++) {
        int wd = (int)((day + 3) % 7);
        int src = r->n_periods[wd] ? wd : 0;

        if (!deadline_is_workday(r, day)) {
            continue;
        }
        for (int k = 0; k < r->n_periods[src]; k++) {
            int64_t a = day * DAY - 8 * HOUR + r->week[src][k].start_min * MIN;
            int64_t b = day * DAY - 8 * HOUR + r->week[src][k].end_min * MIN;

            a = a > from ? a : from;
            b = b < to ? b : to;
            sum += b > a ? b - a : 0;
        }
    }
    return sum;
}

static void test_office_time_agrees_with_a_day_by_day_count(void **state)
{
    uint64_t seed = 42;
    int64_t base = at("2026-01-01 00:00 +08");

    (void)state;
    for (int i = 0; i < 2000; i++) {
        int ri = (int)(lcg_next(&seed) % N_RULES);
        int64_t from = base + (int64_t)(lcg_next(&seed) % (700 * 1440)) * MIN +
                       (int64_t)(lcg_next(&seed) % 60) * SEC;
        int64_t to = from + (int64_t)(lcg_next(&seed) % (60 * 1440)) * MIN;

        assert_int_equal(deadline_office_time(&rules[ri], from, to),
                         office_by_days(&rules[ri], from, to));
    }
}

/* --- resume --- */

struct resume_row {
    Cityops__V1__TimeUnit unit;
    const char *deadline;
    const char *paused;
    const char *resumed;
    const char *expect;
};

static void test_resume_moves_the_deadline_by_the_stopped_time(void **state)
{
    static const struct resume_row rows[] = {
        /* Elapsed: + 3.5 h of pause. */
        {EH, "2026-10-12 12:00 +08", "2026-10-12 10:00 +08",
         "2026-10-12 13:30 +08", "2026-10-12 15:30 +08"},
        /* Elapsed over the holidays: pause 09-30 18:00..10-08 09:00 =
         * 7 d 15 h; 10-03 16:00 + 7 d = 10-10 16:00, + 15 h. */
        {CD, "2026-10-03 16:00 +08", "2026-09-30 18:00 +08",
         "2026-10-08 09:00 +08", "2026-10-11 07:00 +08"},
        /* Elapsed, deadline already passed: still + 9 h of pause. */
        {EH, "2026-10-08 15:30 +08", "2026-10-09 10:00 +08",
         "2026-10-09 19:00 +08", "2026-10-09 00:30 +08"},
        /* Work hours: left 11:00-12:00 + 14:00-15:30 = 2.5 h; from Friday
         * 16:00: 1.5 h to 17:30, Monday 08:30 + 1 h. */
        {WH, "2026-10-15 15:30 +08", "2026-10-15 11:00 +08",
         "2026-10-16 16:00 +08", "2026-10-19 09:30 +08"},
        /* Pause spanning the holidays: left Tue 16:00-17:30 1.5 h + Wed
         * 08:30-12:00 3.5 h + 14:00-17:00 3 h = 8 h; resumed on holiday
         * 10-01, counts from Thu 10-08 08:30: 7 h, Friday 08:30 + 1 h. */
        {WH, "2026-09-30 17:00 +08", "2026-09-29 16:00 +08",
         "2026-10-01 10:00 +08", "2026-10-09 09:30 +08"},
        /* A zero-length pause inside office hours changes nothing. */
        {WH, "2026-10-15 15:30 +08", "2026-10-15 11:00 +08",
         "2026-10-15 11:00 +08", "2026-10-15 15:30 +08"},
        /* Work days: left 09-30 10:00-12:00 2 h + 3.5 h, 10-08 7 h, 10-09
         * 08:30-10:00 1.5 h = 14 h; from 10-08 14:00: 3.5 h, 10-09 7 h,
         * Saturday 10-10 (Monday's hours) 08:30 + 3.5 h = 12:00. */
        {WD, "2026-10-09 10:00 +08", "2026-09-30 10:00 +08",
         "2026-10-08 14:00 +08", "2026-10-10 12:00 +08"},
        /* Deadline passed before the pause: nothing left; resumed Friday
         * 19:00, the first office instant is Saturday 10-10 08:30
         * (adjusted working day). */
        {WH, "2026-10-08 15:30 +08", "2026-10-09 10:00 +08",
         "2026-10-09 19:00 +08", "2026-10-10 08:30 +08"},
        /* Same, resumed inside office hours: the resume instant itself. */
        {WD, "2026-10-08 15:30 +08", "2026-10-09 10:00 +08",
         "2026-10-09 11:00 +08", "2026-10-09 11:00 +08"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t got = -1;
        int rv =
            deadline_resume(&rules[CAL], rows[i].unit, at(rows[i].deadline),
                            at(rows[i].paused), at(rows[i].resumed), &got);

        if (rv != 0 || got != at(rows[i].expect)) {
            fail_msg("row %zu: rv %d, got %lld, want %s", i, rv, (long long)got,
                     rows[i].expect);
        }
    }
}

/* --- invalid configuration and arguments --- */

struct bad_hours {
    const char *why;
    uint32_t weekday[3];
    const char *spec[3];
    size_t n;
    const char *errpart;
};

static void test_bad_office_hours_are_refused_with_a_reason(void **state)
{
    static const struct bad_hours rows[] = {
        {"overlap", {1}, {"08:30-12:00 11:00-17:30"}, 1, "overlap"},
        {"unsorted", {1}, {"14:00-17:30 08:30-12:00"}, 1, "sorted"},
        {"empty period", {1}, {"08:30-08:30"}, 1, "start < end"},
        {"past midnight", {1}, {"20:00-24:01"}, 1, "1440"},
        {"too many",
         {1},
         {"01:00-02:00 03:00-04:00 05:00-06:00 07:00-08:00 09:00-10:00"},
         1,
         "at most 4"},
        {"weekday 0", {0}, {"08:30-12:00"}, 1, "weekday 0"},
        {"weekday 8", {1, 8}, {"08:30-12:00", "08:30-12:00"}, 2, "weekday 8"},
        {"twice",
         {1, 2, 2},
         {"08:30-12:00", "08:30-12:00", "09:00-10:00"},
         3,
         "Tuesday office hours are listed twice"},
        {"no Monday", {2}, {"08:30-12:00"}, 1, "Monday has no"},
    };
    struct deadline_rules r;

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        Cityops__V1__WeekdayHours h[3];
        const Cityops__V1__WeekdayHours *hp[3];
        char err[256];

        n_period_msgs = 0;
        for (size_t k = 0; k < rows[i].n; k++) {
            hours_init(&h[k], rows[i].weekday[k], rows[i].spec[k]);
            hp[k] = &h[k];
        }
        assert_int_equal(build(&r, hp, rows[i].n, 0, err), DEADLINE_INVALID);
        if (strstr(err, rows[i].errpart) == NULL) {
            fail_msg("%s: \"%s\" lacks \"%s\"", rows[i].why, err,
                     rows[i].errpart);
        }
    }
    /* Touching periods and a full day are fine. */
    n_period_msgs = 0;
    {
        Cityops__V1__WeekdayHours h;
        const Cityops__V1__WeekdayHours *hp = &h;
        char err[256];

        hours_init(&h, 1, "00:00-12:00 12:00-24:00");
        assert_int_equal(build(&r, &hp, 1, 0, err), 0);
        assert_int_equal(r.n_periods[0], 2);
        assert_int_equal(r.n_periods[1], 0);
    }
}

static void test_bad_calendars_are_refused_with_a_reason(void **state)
{
    static const char *const bad_dates[] = {
        "2026-02-29", /* 2026 is not a leap year */
        "2026-13-01", "2026-00-10", "2026-04-31", "2026-1-01", "2026-10-01x",
        "26-10-01",   "2026/10/01", "1969-12-31", "",
    };
    struct deadline_rules r;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
        cal_set(0, "2026-10-01", 0);
        cal_set(1, bad_dates[i], 0);
        assert_int_equal(build(&r, NULL, 0, 2, err), DEADLINE_INVALID);
        if (strstr(err, "calendar date 2") == NULL) {
            fail_msg("%s: \"%s\"", bad_dates[i], err);
        }
    }
    cal_msgs[1].date = NULL;
    assert_int_equal(build(&r, NULL, 0, 2, err), DEADLINE_INVALID);

    /* A leap day parses. */
    cal_set(0, "2028-02-29", 0);
    assert_int_equal(build(&r, NULL, 0, 1, err), 0);

    /* Duplicate date, even with the same flag, and out of order. */
    cal_set(0, "2026-10-02", 0);
    cal_set(1, "2026-10-01", 0);
    cal_set(2, "2026-10-02", 0);
    assert_int_equal(build(&r, NULL, 0, 3, err), DEADLINE_INVALID);
    assert_string_equal(err, "calendar date 2026-10-02 is listed twice");

    /* Too many dates. */
    for (size_t i = 0; i <= DEADLINE_MAX_DAYS; i++) {
        char d[32];

        snprintf(d, sizeof(d), "%04zu-01-01", 2000 + i);
        cal_set(i, d, 0);
    }
    assert_int_equal(build(&r, NULL, 0, DEADLINE_MAX_DAYS + 1, err),
                     DEADLINE_INVALID);
    assert_non_null(strstr(err, "at most 4096"));
    cal_national();
}

static void test_the_calendar_is_sorted_whatever_the_input_order(void **state)
{
    struct deadline_rules r;
    char err[256];

    (void)state;
    /* The national-day dates reversed give the same rules as CAL. */
    for (size_t i = 0; i < N_NATIONAL; i++) {
        size_t j = N_NATIONAL - 1 - i;

        cal_set(i, national_day[j].date, national_day[j].workday);
    }
    assert_int_equal(build(&r, NULL, 0, N_NATIONAL, err), 0);
    assert_int_equal(r.n_days, N_NATIONAL);
    for (size_t i = 1; i < r.n_days; i++) {
        assert_true(r.days[i - 1] < r.days[i]);
    }
    assert_memory_equal(r.days, rules[CAL].days, N_NATIONAL * sizeof(int32_t));
    assert_memory_equal(r.workday, rules[CAL].workday, N_NATIONAL);
    /* 2026-09-27 = 20454 + 269. */
    assert_int_equal(r.days[0], 20723);
    assert_int_equal(r.workday[0], 1);
    cal_national();
}

static void
test_invalid_arguments_are_refused_and_leave_the_output(void **state)
{
    const struct deadline_rules *r = &rules[CAL];
    int64_t t = at("2026-10-12 10:00 +08");
    int64_t out = 7;

    (void)state;
    assert_int_equal(deadline_compute(r, t, WH, 0, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, WD, 0, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, EH, 0, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, CD, 0, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, U(UNSPECIFIED), 1, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, (Cityops__V1__TimeUnit)5, 1, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, -1, EH, 1, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, DEADLINE_MAX_US, EH, 1, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, EH, UINT32_MAX, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, CD, UINT32_MAX, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_compute(r, t, WH, UINT32_MAX, &out),
                     DEADLINE_INVALID);
    /* 3000 working days need about 4200 days, past the 3650-day search. */
    assert_int_equal(deadline_compute(r, t, WD, 3000, &out), DEADLINE_INVALID);
    assert_int_equal(out, 7);

    assert_int_equal(deadline_resume(r, WH, t, t + HOUR, t, &out),
                     DEADLINE_INVALID); /* resumed before paused */
    assert_int_equal(deadline_resume(r, U(UNSPECIFIED), t, t, t, &out),
                     DEADLINE_INVALID);
    assert_int_equal(deadline_resume(r, EH, t, -1, t, &out), DEADLINE_INVALID);
    assert_int_equal(
        deadline_resume(r, EH, DEADLINE_MAX_US - 1, t, t + 1, &out),
        DEADLINE_INVALID); /* moved past the range */
    assert_int_equal(out, 7);

    assert_int_equal(deadline_office_time(r, -1, t), DEADLINE_INVALID);
    assert_int_equal(deadline_office_time(r, t, DEADLINE_MAX_US),
                     DEADLINE_INVALID);

    /* Just inside the range: 2000 working days fit in 3650 days. */
    assert_int_equal(deadline_compute(r, t, WD, 2000, &out), 0);
    assert_true(out > t + 2000 * DAY);
}

static void test_a_calendar_without_working_days_gives_up(void **state)
{
    struct deadline_rules r;
    char err[256];
    int64_t out = 7;
    int64_t t = at("2026-01-01 10:00 +08");

    (void)state;
    /* 4096 consecutive holidays from 2026-01-01 (day 20454). */
    for (size_t i = 0; i < DEADLINE_MAX_DAYS; i++) {
        char d[32];

        date_of(20454 + (int64_t)i, d);
        cal_set(i, d, 0);
    }
    assert_int_equal(build(&r, NULL, 0, DEADLINE_MAX_DAYS, err), 0);
    assert_int_equal(deadline_is_workday(&r, 20454 + 4095), 0);
    assert_int_equal(deadline_is_workday(&r, 20454 + 4096), 1);
    assert_int_equal(deadline_compute(&r, t, WH, 1, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_compute(&r, t, WD, 1, &out), DEADLINE_INVALID);
    assert_int_equal(deadline_resume(&r, WH, t + HOUR, t, t, &out),
                     DEADLINE_INVALID);
    assert_int_equal(out, 7);
    /* Elapsed units do not care. */
    assert_int_equal(deadline_compute(&r, t, EH, 1, &out), 0);
    assert_int_equal(out, t + HOUR);
    assert_int_equal(deadline_office_time(&r, t, t + 365 * DAY), 0);
    cal_national();
}

/* --- determinism --- */

#define N_RANDOM 10000

struct random_case {
    int rules;
    int64_t start;
    Cityops__V1__TimeUnit unit;
    uint32_t amount;
};

static void random_cases(struct random_case *c, size_t n)
{
    uint64_t seed = 20261001;
    int64_t base = at("2026-01-01 00:00 +08");

    for (size_t i = 0; i < n; i++) {
        c[i].rules = (int)(lcg_next(&seed) % N_RULES);
        c[i].start = base + (int64_t)(lcg_next(&seed) % (730 * 1440)) * MIN +
                     (int64_t)(lcg_next(&seed) % 60000000);
        c[i].unit = (Cityops__V1__TimeUnit)(1 + lcg_next(&seed) % 4);
        c[i].amount = (uint32_t)(1 + lcg_next(&seed) % 100);
    }
}

static void
run_cases(const struct random_case *c, size_t n, int64_t *out, int *rv)
{
    for (size_t i = 0; i < n; i++) {
        rv[i] = deadline_compute(&rules[c[i].rules], c[i].start, c[i].unit,
                                 c[i].amount, &out[i]);
    }
}

static void
test_random_cases_compute_the_same_twice_and_hold_invariants(void **state)
{
    struct random_case *c = calloc(N_RANDOM, sizeof(*c));
    int64_t *a = calloc(N_RANDOM, sizeof(*a));
    int64_t *b = calloc(N_RANDOM, sizeof(*b));
    int *ra = calloc(N_RANDOM, sizeof(*ra));
    int *rb = calloc(N_RANDOM, sizeof(*rb));

    (void)state;
    assert_non_null(c);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(ra);
    assert_non_null(rb);
    random_cases(c, N_RANDOM);
    run_cases(c, N_RANDOM, a, ra);
    run_cases(c, N_RANDOM, b, rb);
    assert_memory_equal(ra, rb, N_RANDOM * sizeof(*ra));
    assert_memory_equal(a, b, N_RANDOM * sizeof(*a));
    for (size_t i = 0; i < N_RANDOM; i++) {
        const struct deadline_rules *r = &rules[c[i].rules];
        int64_t span = a[i] - c[i].start;

        assert_int_equal(ra[i], 0);
        assert_true(a[i] > c[i].start);
        switch (c[i].unit) {
        case EH:
            assert_int_equal(span, c[i].amount * HOUR);
            break;
        case CD:
            assert_int_equal(span, c[i].amount * DAY);
            break;
        case WH:
            /* Exactly amount hours of office time in between. */
            assert_int_equal(deadline_office_time(r, c[i].start, a[i]),
                             c[i].amount * HOUR);
            break;
        default:
            /* Lands on a working day, with at least amount - 1 whole
             * working days of office time in between. */
            assert_int_equal(deadline_is_workday(r, (a[i] + 8 * HOUR) / DAY),
                             1);
            assert_true(deadline_office_time(r, c[i].start, a[i]) >=
                        (int64_t)(c[i].amount - 1) * 3 * HOUR);
            break;
        }
    }
    free(rb);
    free(ra);
    free(b);
    free(a);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_time_helper_matches_known_epoch_values),
        cmocka_unit_test(
            test_work_hours_count_only_office_time_on_working_days),
        cmocka_unit_test(test_work_days_keep_the_office_time_position),
        cmocka_unit_test(
            test_emergency_hours_and_calendar_days_ignore_holidays),
        cmocka_unit_test(
            test_a_config_change_gives_new_deadlines_from_the_same_start),
        cmocka_unit_test(test_is_workday_follows_the_calendar_in_local_days),
        cmocka_unit_test(test_office_time_sums_periods_of_working_days),
        cmocka_unit_test(test_office_time_agrees_with_a_day_by_day_count),
        cmocka_unit_test(test_resume_moves_the_deadline_by_the_stopped_time),
        cmocka_unit_test(test_bad_office_hours_are_refused_with_a_reason),
        cmocka_unit_test(test_bad_calendars_are_refused_with_a_reason),
        cmocka_unit_test(test_the_calendar_is_sorted_whatever_the_input_order),
        cmocka_unit_test(
            test_invalid_arguments_are_refused_and_leave_the_output),
        cmocka_unit_test(test_a_calendar_without_working_days_gives_up),
        cmocka_unit_test(
            test_random_cases_compute_the_same_twice_and_hold_invariants),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
