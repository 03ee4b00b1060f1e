/* Authorization by the staff records of the configuration: who may send a
 * case command, beyond the role table of the state machine.
 *
 * Once any staff record exists, a human actor (every role but PUBLIC and
 * SYSTEM) must be an enabled staff member holding the role the command
 * claims; a DEPARTMENT member acts only on cases dispatched to its own
 * department. Before the first staff record (a new installation) the role
 * table alone applies, so that the administrator can load the staff list.
 * A refusal is PERMISSION_DENIED with the reason, and like every refused
 * command it is in the audit trail.
 */
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

#define EVT(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x

static const char *str0(const char *s)
{
    return s != NULL ? s : "";
}

/* Commands a department acts on for the case it holds. */
static int department_bound(Cityops__V1__CaseEventType t)
{
    return t == EVT(ACKNOWLEDGE) || t == EVT(RETURN) ||
           t == EVT(REPORT_DISPOSAL) || t == EVT(EXTENSION_REQUEST);
}

int case_authorize(struct store *s,
                   MDB_txn *txn,
                   const Cityops__V1__Command *cmd,
                   const Cityops__V1__Case *c,
                   Cityops__V1__CaseEventType type,
                   char *why,
                   size_t len)
{
    const Cityops__V1__Staff *st = NULL;
    const char *actor = str0(cmd->actor_id);
    int has_role = 0;
    int rv;

    if (cmd->role == CITYOPS__V1__ROLE__ROLE_PUBLIC ||
        cmd->role == CITYOPS__V1__ROLE__ROLE_SYSTEM ||
        !config_staff_any(s, txn)) {
        return 0;
    }
    rv = config_staff_peek(s, txn, actor, &st);
    if (rv == STORE_NOTFOUND) {
        snprintf(why, len, "actor %s is not in the staff list", actor);
        return 1;
    }
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < st->n_roles; i++) {
        has_role |= st->roles[i] == cmd->role;
    }
    if (st->disabled) {
        snprintf(why, len, "staff %s is disabled", actor);
        rv = 1;
    } else if (!has_role) {
        snprintf(why, len, "staff %s does not hold the role it claims",
                 actor);
        rv = 1;
    } else if (cmd->role == CITYOPS__V1__ROLE__ROLE_DEPARTMENT && c != NULL &&
               department_bound(type) && str0(st->department_id)[0] != '\0' &&
               strcmp(st->department_id, str0(c->department_id)) != 0) {
        snprintf(why, len,
                 "staff %s acts for department %s; case %llu is with %s",
                 actor, st->department_id, (unsigned long long)c->case_id,
                 str0(c->department_id)[0] ? c->department_id : "no one");
        rv = 1;
    }
    return rv;
}
