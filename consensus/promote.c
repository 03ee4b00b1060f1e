/* Standby auto-promotion: which standby replaces a lost voter.
 *
 * A pure function of what the leader sees (roles, zones, reachability,
 * match indexes) so it can be tested without a cluster. The cons loop calls
 * it from its timer, leader only, when no change is in flight, and carries
 * out a SWAP as two changes: promote, then (once committed) demote.
 *
 * Rules, in order:
 * - the lost voter is the voter unreachable longest, if that is at least
 *   auto_promote_ms; none: NONE (never promote without a lost voter);
 * - candidates are reachable standbys whose match index is within slack of
 *   the commit index (a lagging standby would stall the new quorum);
 * - with one_voter_per_zone, a candidate whose zone already has a reachable
 *   voter is dropped if any candidate from a zone without one exists ("" is
 *   no zone and never conflicts);
 * - then the lost voter's zone first, then the highest match index, then
 *   the lowest id (deterministic).
 */
#include <stdio.h>
#include <string.h>

#include "consensus/cons_internal.h"

static int zone_has_voter(const struct cons_promote_member *m,
                          size_t n,
                          const char *zone)
{
    size_t i;

    if (zone[0] == '\0') {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (m[i].role == CONS_VOTER && m[i].reachable &&
            strcmp(m[i].zone, zone) == 0) {
            return 1;
        }
    }
    return 0;
}

/* 1 if @a is a better candidate than @b to replace @lost. */
static int better(const struct cons_promote_member *a,
                  const struct cons_promote_member *b,
                  const struct cons_promote_member *lost)
{
    int a_same = lost->zone[0] != '\0' && strcmp(a->zone, lost->zone) == 0;
    int b_same = lost->zone[0] != '\0' && strcmp(b->zone, lost->zone) == 0;

    if (a_same != b_same) {
        return a_same;
    }
    if (a->match_index != b->match_index) {
        return a->match_index > b->match_index;
    }
    return a->id < b->id;
}

static const struct cons_promote_member *
find_lost(const struct cons_promote_member *m, size_t n, unsigned after_ms)
{
    const struct cons_promote_member *lost = NULL;
    size_t i;

    for (i = 0; i < n; i++) {
        if (m[i].role != CONS_VOTER || m[i].reachable ||
            m[i].unreachable_ms < (int64_t)after_ms) {
            continue;
        }
        if (lost == NULL || m[i].unreachable_ms > lost->unreachable_ms) {
            lost = &m[i];
        }
    }
    return lost;
}

static int is_candidate(const struct cons_promote_member *m,
                        uint64_t commit_index,
                        uint64_t slack)
{
    return m->role == CONS_STANDBY && m->reachable &&
           m->match_index + slack >= commit_index;
}

void cons_promote_decide(const struct cons_promote_member *members,
                         size_t n,
                         uint64_t commit_index,
                         const struct cons_promote_settings *settings,
                         struct cons_promote_decision *out)
{
    const struct cons_promote_member *lost;
    const struct cons_promote_member *best = NULL;
    int need_free_zone = 0;
    size_t i;

    memset(out, 0, sizeof *out);
    if (settings->auto_promote_ms == 0) {
        return;
    }
    lost = find_lost(members, n, settings->auto_promote_ms);
    if (lost == NULL) {
        return;
    }
    if (settings->one_voter_per_zone) {
        for (i = 0; i < n; i++) {
            if (is_candidate(&members[i], commit_index, settings->slack) &&
                !zone_has_voter(members, n, members[i].zone)) {
                need_free_zone = 1;
            }
        }
    }
    for (i = 0; i < n; i++) {
        const struct cons_promote_member *m = &members[i];
        if (!is_candidate(m, commit_index, settings->slack)) {
            continue;
        }
        if (need_free_zone && zone_has_voter(members, n, m->zone)) {
            continue;
        }
        if (best == NULL || better(m, best, lost)) {
            best = m;
        }
    }
    out->demote_id = lost->id;
    if (best == NULL) {
        out->kind = CONS_PROMOTE_NOCANDIDATE;
        snprintf(out->detail, sizeof out->detail,
                 "voter %llu (zone \"%s\") unreachable for %lld ms, but no "
                 "reachable caught-up standby to promote",
                 (unsigned long long)lost->id, lost->zone,
                 (long long)lost->unreachable_ms);
        return;
    }
    out->kind = CONS_PROMOTE_SWAP;
    out->promote_id = best->id;
    snprintf(out->detail, sizeof out->detail,
             "voter %llu (zone \"%s\") unreachable for %lld ms: promoting "
             "standby %llu (zone \"%s\", match %llu of %llu), then demoting "
             "%llu to standby",
             (unsigned long long)lost->id, lost->zone,
             (long long)lost->unreachable_ms, (unsigned long long)best->id,
             best->zone, (unsigned long long)best->match_index,
             (unsigned long long)commit_index, (unsigned long long)lost->id);
}
