/* Unit tests of federation in the store (store.h "federation"): two
 * stores play a parent tier ("cn-45") and a child tier ("cn-45-02"); the
 * test carries outbox rows from one to the other as the node's sender
 * would, in FedEnvelopes applied by fed_inbound commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <openssl/evp.h>

#include "storage/store.h"

#define PARENT "cn-45"
#define CHILD "cn-45-02"
#define CHILD2 "cn-45-03"
#define T0 1760000000000000LL
#define HOUR 3600000000LL

#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x

struct tier {
    char dir[64];
    struct store *s;
    uint64_t index;
};

struct fx {
    struct tier p; /* the parent, PARENT */
    struct tier c; /* the child, CHILD */
    int64_t time;
    Cityops__V1__CommandResult *res; /* the last result */
    const char *reply_stream;        /* for inbound commands, if set */
};

static void tier_open(struct tier *t)
{
    strcpy(t->dir, "/tmp/cityops-fed-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    assert_int_equal(store_open(t->dir, NULL, &t->s), 0);
    t->index = 0;
}

static void tier_remove(struct tier *t)
{
    static const char *const files[] = {"data.mdb", "lock.mdb",
                                        "cityops.lock"};
    char path[128];

    store_close(t->s);
    t->s = NULL;
    for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++) {
        snprintf(path, sizeof(path), "%s/%s", t->dir, files[i]);
        unlink(path);
    }
    rmdir(t->dir);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    tier_open(&f->p);
    tier_open(&f->c);
    f->time = T0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    if (f->res != NULL) {
        cityops__v1__command_result__free_unpacked(f->res, NULL);
    }
    tier_remove(&f->p);
    tier_remove(&f->c);
    free(f);
    return 0;
}

/* Apply @n commands in one entry at @t; keep the last result in f->res
 * and return its code. */
static int apply_n(struct fx *f,
                   struct tier *t,
                   Cityops__V1__Command **cmds,
                   size_t n)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    uint8_t *buf;
    size_t len;

    for (size_t i = 0; i < n; i++) {
        cmds[i]->time = ++f->time;
    }
    batch.n_commands = n;
    batch.commands = cmds;
    buf = malloc(cityops__v1__command_batch__get_packed_size(&batch) + 1);
    assert_non_null(buf);
    len = cityops__v1__command_batch__pack(&batch, buf);
    assert_int_equal(store_apply_batch(t->s, ++t->index, buf, len, &res), 0);
    free(buf);
    assert_int_equal(res.n, n);
    if (f->res != NULL) {
        cityops__v1__command_result__free_unpacked(f->res, NULL);
    }
    f->res = res.results[n - 1];
    res.results[n - 1] = NULL;
    store_results_free(&res);
    return f->res->code;
}

static int apply(struct fx *f, struct tier *t, Cityops__V1__Command *cmd)
{
    return apply_n(f, t, &cmd, 1);
}

static void cmd_init(Cityops__V1__Command *cmd, Cityops__V1__Role role)
{
    cityops__v1__command__init(cmd);
    cmd->actor_id = "tester";
    cmd->role = role;
}

/* --- commands --- */

static int assign_to(struct fx *f,
                     Cityops__V1__Role role,
                     const char *origin,
                     const char *title,
                     int64_t deadline,
                     const char *const *children,
                     size_t n)
{
    Cityops__V1__Command cmd;
    Cityops__V1__FedAssignTask a = CITYOPS__V1__FED_ASSIGN_TASK__INIT;
    Cityops__V1__KeyTask t = CITYOPS__V1__KEY_TASK__INIT;

    cmd_init(&cmd, role);
    t.title = (char *)title;
    t.detail = "check every manhole cover on the ring road";
    t.deadline = deadline;
    t.origin_tier = (char *)origin;
    t.n_child_tiers = n;
    t.child_tiers = (char **)children;
    a.task = &t;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK;
    cmd.fed_assign_task = &a;
    return apply(f, &f->p, &cmd);
}

/* A task from the parent to CHILD, due in a day. */
static int assign(struct fx *f)
{
    static const char *const kids[] = {CHILD};

    return assign_to(f, R(SHIFT_LEADER), PARENT, "manhole covers",
                     f->time + 24 * HOUR, kids, 1);
}

static int feedback(struct fx *f,
                    Cityops__V1__Role role,
                    const char *task_id,
                    const char *tier,
                    const char *status)
{
    Cityops__V1__Command cmd;
    Cityops__V1__FedFeedback ff = CITYOPS__V1__FED_FEEDBACK__INIT;
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;

    cmd_init(&cmd, role);
    fb.task_id = (char *)task_id;
    fb.tier_id = (char *)tier;
    fb.status = (char *)status;
    fb.note = "crews out";
    ff.feedback = &fb;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_FEEDBACK;
    cmd.fed_feedback = &ff;
    return apply(f, &f->c, &cmd);
}

static int inbound_rows(struct fx *f,
                        struct tier *to,
                        Cityops__V1__Role role,
                        const char *origin,
                        Cityops__V1__OutboxMessage **rows,
                        size_t n)
{
    Cityops__V1__Command cmd;
    Cityops__V1__FedInbound in = CITYOPS__V1__FED_INBOUND__INIT;
    Cityops__V1__FedEnvelope *envs = calloc(n + 1, sizeof(*envs));
    Cityops__V1__FedEnvelope **ptrs = calloc(n + 1, sizeof(*ptrs));
    int code;

    assert_non_null(envs);
    assert_non_null(ptrs);
    for (size_t i = 0; i < n; i++) {
        cityops__v1__fed_envelope__init(&envs[i]);
        envs[i].origin = (char *)origin;
        envs[i].message = rows[i];
        ptrs[i] = &envs[i];
    }
    cmd_init(&cmd, role);
    in.n_envelopes = n;
    in.envelopes = ptrs;
    if (f->reply_stream != NULL) {
        in.reply_stream = (char *)f->reply_stream;
    }
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_INBOUND;
    cmd.fed_inbound = &in;
    code = apply(f, to, &cmd);
    free(ptrs);
    free(envs);
    return code;
}

/* The outbox rows of @from's @link with seq in @seqs (in that order). */
static size_t rows_pick(struct tier *from,
                        const char *link,
                        const uint64_t *seqs,
                        size_t n,
                        Cityops__V1__OutboxMessage **out)
{
    for (size_t i = 0; i < n; i++) {
        Cityops__V1__OutboxMessage **rows = NULL;
        size_t got = 0;

        assert_int_equal(
            store_outbox_list(from->s, link, seqs[i] - 1, 1, &rows, &got), 0);
        assert_int_equal(got, 1);
        assert_int_equal(rows[0]->seq, seqs[i]);
        out[i] = rows[0];
        free(rows);
    }
    return n;
}

static void rows_free(Cityops__V1__OutboxMessage **rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cityops__v1__outbox_message__free_unpacked(rows[i], NULL);
    }
}

/* Deliver rows @seqs of @from's outbox link @link to @to as @origin. */
static int deliver(struct fx *f,
                   struct tier *from,
                   const char *link,
                   struct tier *to,
                   const char *origin,
                   const uint64_t *seqs,
                   size_t n)
{
    Cityops__V1__OutboxMessage *rows[64];
    int code;

    assert_true(n <= 64);
    rows_pick(from, link, seqs, n, rows);
    code = inbound_rows(f, to, R(SYSTEM), origin, rows, n);
    rows_free(rows, n);
    return code;
}

static int ack(struct fx *f,
               struct tier *t,
               Cityops__V1__Role role,
               const char *link,
               uint64_t through)
{
    Cityops__V1__Command cmd;
    Cityops__V1__FedOutboxAck a = CITYOPS__V1__FED_OUTBOX_ACK__INIT;

    cmd_init(&cmd, role);
    a.link = (char *)link;
    a.through = through;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK;
    cmd.fed_outbox_ack = &a;
    return apply(f, t, &cmd);
}

static int link_set(struct fx *f,
                    Cityops__V1__Role role,
                    const char *tier,
                    Cityops__V1__LinkKind kind,
                    const char *const *eps,
                    size_t n,
                    int remove)
{
    Cityops__V1__Command cmd;
    Cityops__V1__FedLinkSet ls = CITYOPS__V1__FED_LINK_SET__INIT;
    Cityops__V1__FedLink l = CITYOPS__V1__FED_LINK__INIT;

    cmd_init(&cmd, role);
    l.tier_id = (char *)tier;
    l.kind = kind;
    l.n_endpoints = n;
    l.endpoints = (char **)eps;
    ls.link = &l;
    ls.remove = remove;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_LINK_SET;
    cmd.fed_link_set = &ls;
    return apply(f, &f->p, &cmd);
}

/* A hand-made outbox row (what another tier's sender would carry). */
static Cityops__V1__OutboxMessage *row_new(uint64_t seq,
                                           const char *kind,
                                           const ProtobufCMessage *payload)
{
    Cityops__V1__OutboxMessage *m = calloc(1, sizeof(*m));
    Cityops__V1__OutboxMessage *copy;
    uint8_t *buf;
    size_t len;

    assert_non_null(m);
    cityops__v1__outbox_message__init(m);
    m->link = "parent";
    m->seq = seq;
    m->kind = (char *)kind;
    m->created_at = T0;
    if (payload != NULL) {
        m->payload.len = protobuf_c_message_get_packed_size(payload);
        m->payload.data = malloc(m->payload.len + 1);
        assert_non_null(m->payload.data);
        protobuf_c_message_pack(payload, m->payload.data);
    }
    /* Round trip, so that the caller frees it like any unpacked row. */
    buf = malloc(cityops__v1__outbox_message__get_packed_size(m) + 1);
    assert_non_null(buf);
    len = cityops__v1__outbox_message__pack(m, buf);
    copy = cityops__v1__outbox_message__unpack(NULL, len, buf);
    assert_non_null(copy);
    free(buf);
    free(m->payload.data);
    free(m);
    return copy;
}

static Cityops__V1__OutboxMessage *
feedback_row(uint64_t seq, const char *task, const char *tier, const char *st)
{
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;

    fb.task_id = (char *)task;
    fb.tier_id = (char *)tier;
    fb.status = (char *)st;
    fb.at = T0;
    return row_new(seq, "task_feedback", &fb.base);
}

/* --- reads --- */

/* The packed FedTasksResponse of @t at @now (for "unchanged" checks). */
static size_t tasks_bytes(struct tier *t, int64_t now, uint8_t **out)
{
    Cityops__V1__FedTasksResponse *r = NULL;
    size_t len;

    assert_int_equal(store_fed_tasks(t->s, now, &r), 0);
    *out = malloc(cityops__v1__fed_tasks_response__get_packed_size(r) + 1);
    assert_non_null(*out);
    len = cityops__v1__fed_tasks_response__pack(r, *out);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    return len;
}

static const Cityops__V1__FedTaskView *
task_find(const Cityops__V1__FedTasksResponse *r, const char *id)
{
    for (size_t i = 0; i < r->n_tasks; i++) {
        if (strcmp(r->tasks[i]->task->task_id, id) == 0) {
            return r->tasks[i];
        }
    }
    fail_msg("no task %s", id);
    return NULL;
}

static uint64_t inbox(struct tier *t, const char *origin)
{
    uint64_t seq = 99;

    assert_int_equal(store_fed_inbox_through(t->s, origin, &seq), 0);
    return seq;
}

static uint64_t outbox_last(struct tier *t, const char *link)
{
    uint64_t last = 99;

    assert_int_equal(store_fed_outbox_state(t->s, link, NULL, &last, NULL),
                     0);
    return last;
}

/* --- tests --- */

static void test_assign_writes_one_outbox_row_per_child_in_seq_order(
    void **state)
{
    static const char *const kids[] = {CHILD, CHILD2};
    struct fx *f = *state;
    Cityops__V1__OutboxMessage **rows = NULL;
    Cityops__V1__FedTasksResponse *r = NULL;
    Cityops__V1__KeyTask *t;
    size_t n = 0;

    for (int i = 1; i <= 3; i++) {
        assert_int_equal(assign_to(f, R(ADMIN), PARENT, "flood drains",
                                   f->time + HOUR, kids, 2),
                         RC(OK));
    }
    assert_string_equal(f->res->ref, PARENT "/3");
    for (size_t k = 0; k < 2; k++) {
        assert_int_equal(store_outbox_list(f->p.s, kids[k], 0, 10, &rows, &n),
                         0);
        assert_int_equal(n, 3);
        for (size_t i = 0; i < n; i++) {
            char id[32];

            assert_int_equal(rows[i]->seq, i + 1);
            assert_string_equal(rows[i]->link, kids[k]);
            assert_string_equal(rows[i]->kind, "key_task");
            t = cityops__v1__key_task__unpack(NULL, rows[i]->payload.len,
                                              rows[i]->payload.data);
            assert_non_null(t);
            snprintf(id, sizeof(id), PARENT "/%zu", i + 1);
            assert_string_equal(t->task_id, id);
            assert_string_equal(t->origin_tier, PARENT);
            assert_int_equal(t->n_child_tiers, 2);
            cityops__v1__key_task__free_unpacked(t, NULL);
            cityops__v1__outbox_message__free_unpacked(rows[i], NULL);
        }
        free(rows);
    }
    assert_int_equal(store_fed_tasks(f->p.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 3);
    assert_int_equal(task_find(r, PARENT "/2")->n_feedback, 0);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
}

static void test_inbound_applies_in_order_and_a_redelivery_changes_nothing(
    void **state)
{
    static const uint64_t seqs[] = {1, 2};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r = NULL;
    uint8_t *before;
    uint8_t *after;
    size_t nb;
    size_t na;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, seqs, 2),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 2, duplicates 0");
    assert_int_equal(f->res->version, 2);
    assert_int_equal(inbox(&f->c, PARENT), 2);
    assert_int_equal(store_fed_tasks(f->c.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 2);
    assert_string_equal(task_find(r, PARENT "/1")->task->origin_tier, PARENT);
    assert_int_equal(task_find(r, PARENT "/2")->task->deadline,
                     T0 + 1 + 24 * HOUR);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);

    /* The child's own feedback changes a received task: do it, then
     * redeliver and check the task rows did not go back. */
    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", CHILD,
                              "accepted"),
                     RC(OK));
    nb = tasks_bytes(&f->c, f->time, &before);
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, seqs, 2),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 0, duplicates 2");
    assert_int_equal(f->res->version, 2);
    na = tasks_bytes(&f->c, f->time, &after);
    assert_int_equal(na, nb);
    assert_memory_equal(before, after, nb);
    assert_int_equal(inbox(&f->c, PARENT), 2);
    free(before);
    free(after);
}

static void test_a_gap_stops_the_run_and_a_resend_from_the_gap_applies(
    void **state)
{
    static const uint64_t first[] = {1, 3};
    static const uint64_t resend[] = {2, 3};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r = NULL;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(assign(f), RC(OK));
    }
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, first, 2),
                     RC(OK));
    assert_string_equal(f->res->message,
                        "applied 1, duplicates 0, stopped at gap 3");
    assert_int_equal(f->res->version, 1);
    assert_int_equal(inbox(&f->c, PARENT), 1);
    assert_int_equal(store_fed_tasks(f->c.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 1);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);

    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, resend, 2),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 2, duplicates 0");
    assert_int_equal(f->res->version, 3);
    assert_int_equal(store_fed_tasks(f->c.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 3);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
}

static void test_feedback_reaches_the_origin_latest_per_child(void **state)
{
    static const uint64_t one[] = {1};
    static const uint64_t both[] = {1, 2};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r = NULL;
    const Cityops__V1__FedTaskView *v;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(OK));
    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", CHILD,
                              "in_progress"),
                     RC(OK));
    assert_string_equal(f->res->ref, PARENT "/1");
    assert_int_equal(store_fed_tasks(f->c.s, f->time + 48 * HOUR, &r), 0);
    assert_true(task_find(r, PARENT "/1")->overdue); /* not done yet */
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    assert_int_equal(feedback(f, R(ADMIN), PARENT "/1", CHILD, "done"),
                     RC(OK));
    /* Up to the parent on the one upward stream, beside checkpoints. */
    assert_int_equal(outbox_last(&f->c, "parent"), 2);
    assert_int_equal(outbox_last(&f->c, PARENT), 0);
    assert_int_equal(deliver(f, &f->c, "parent", &f->p, CHILD, both, 2),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 2, duplicates 0");
    assert_int_equal(store_fed_tasks(f->p.s, f->time, &r), 0);
    v = task_find(r, PARENT "/1");
    assert_int_equal(v->n_feedback, 1);
    assert_string_equal(v->feedback[0]->tier_id, CHILD);
    assert_string_equal(v->feedback[0]->status, "done");
    assert_string_equal(v->feedback[0]->note, "crews out");
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    /* The child keeps its own latest feedback too. */
    assert_int_equal(store_fed_tasks(f->c.s, f->time + 48 * HOUR, &r), 0);
    v = task_find(r, PARENT "/1");
    assert_int_equal(v->n_feedback, 1);
    assert_string_equal(v->feedback[0]->status, "done");
    assert_false(v->overdue);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
}

static void test_feedback_needs_a_task_received_here_for_this_tier(
    void **state)
{
    static const uint64_t one[] = {1};
    struct fx *f = *state;

    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", CHILD, "done"),
                     RC(NOT_FOUND));
    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(OK));
    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", CHILD2,
                              "done"),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", CHILD,
                              "finished"),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(feedback(f, R(SHIFT_LEADER), PARENT "/1", "", "done"),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(outbox_last(&f->c, PARENT), 0);
}

static void test_feedback_on_a_task_assigned_here_is_refused(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command cmd;
    Cityops__V1__FedFeedback ff = CITYOPS__V1__FED_FEEDBACK__INIT;
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;

    assert_int_equal(assign(f), RC(OK));
    cmd_init(&cmd, R(ADMIN));
    fb.task_id = PARENT "/1";
    fb.tier_id = CHILD;
    fb.status = "done";
    ff.feedback = &fb;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_FEEDBACK;
    cmd.fed_feedback = &ff;
    assert_int_equal(apply(f, &f->p, &cmd), RC(FAILED_PRECONDITION));
}

static void test_overdue_until_every_child_is_done_or_rejected(void **state)
{
    static const char *const kids[] = {CHILD, CHILD2};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r = NULL;
    Cityops__V1__OutboxMessage *rows[2];
    int64_t deadline = f->time + HOUR;

    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "bridges", deadline, kids,
                               2),
                     RC(OK));
    rows[0] = feedback_row(1, PARENT "/1", CHILD, "done");
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD, rows, 1),
                     RC(OK));
    rows_free(rows, 1);
    assert_int_equal(store_fed_tasks(f->p.s, deadline - 1, &r), 0);
    assert_false(task_find(r, PARENT "/1")->overdue);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    assert_int_equal(store_fed_tasks(f->p.s, deadline + 1, &r), 0);
    assert_true(task_find(r, PARENT "/1")->overdue); /* CHILD2 is silent */
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);

    rows[0] = feedback_row(1, PARENT "/1", CHILD2, "in_progress");
    rows[1] = feedback_row(2, PARENT "/1", CHILD2, "rejected");
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD2, rows, 1),
                     RC(OK));
    assert_int_equal(store_fed_tasks(f->p.s, deadline + 1, &r), 0);
    assert_true(task_find(r, PARENT "/1")->overdue); /* in progress only */
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD2, rows, 2),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 1");
    assert_int_equal(store_fed_tasks(f->p.s, deadline + 1, &r), 0);
    assert_false(task_find(r, PARENT "/1")->overdue);
    assert_int_equal(task_find(r, PARENT "/1")->n_feedback, 2);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    rows_free(rows, 2);
}

static void test_feedback_from_a_tier_not_assigned_is_noted_not_applied(
    void **state)
{
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r = NULL;
    Cityops__V1__OutboxMessage *rows[2];

    assert_int_equal(assign(f), RC(OK)); /* to CHILD only */
    rows[0] = feedback_row(1, PARENT "/1", CHILD2, "done");
    rows[1] = feedback_row(2, PARENT "/9", CHILD2, "done");
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD2, rows, 2),
                     RC(OK));
    rows_free(rows, 2);
    assert_non_null(strstr(f->res->message, "applied 2, duplicates 0; seq 1:"));
    assert_non_null(strstr(f->res->message, "seq 2: task_feedback on an "
                                            "unknown task"));
    assert_int_equal(inbox(&f->p, CHILD2), 2);
    assert_int_equal(store_fed_tasks(f->p.s, f->time, &r), 0);
    assert_int_equal(task_find(r, PARENT "/1")->n_feedback, 0);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
}

static void test_ack_never_moves_backwards(void **state)
{
    struct fx *f = *state;
    uint64_t acked = 0;
    uint64_t last = 0;
    int64_t oldest = 0;
    int64_t third;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(assign(f), RC(OK));
    }
    third = f->time;
    assert_int_equal(
        store_fed_outbox_state(f->p.s, CHILD, &acked, &last, &oldest), 0);
    assert_int_equal(acked, 0);
    assert_int_equal(last, 3);
    assert_int_equal(oldest, third - 2);
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 2), RC(OK));
    assert_int_equal(f->res->version, 2);
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 1), RC(OK));
    assert_int_equal(f->res->version, 2);
    assert_int_equal(
        store_fed_outbox_state(f->p.s, CHILD, &acked, &last, &oldest), 0);
    assert_int_equal(acked, 2);
    assert_int_equal(oldest, third);
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 4),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 3), RC(OK));
    assert_int_equal(
        store_fed_outbox_state(f->p.s, CHILD, &acked, &last, &oldest), 0);
    assert_int_equal(acked, 3);
    assert_int_equal(last, 3);
    assert_int_equal(oldest, 0);
    /* Rows within the newest STORE_FED_OUTBOX_KEEP stay. */
    assert_int_equal(outbox_last(&f->p, CHILD), 3);
}

static void test_ack_trims_acked_rows_beyond_the_newest_kept(void **state)
{
    static const char *const kids[] = {CHILD};
    struct fx *f = *state;
    const size_t n = STORE_FED_OUTBOX_KEEP + 3;
    Cityops__V1__Command *cmds = calloc(n, sizeof(*cmds));
    Cityops__V1__Command **ptrs = calloc(n, sizeof(*ptrs));
    Cityops__V1__FedAssignTask a = CITYOPS__V1__FED_ASSIGN_TASK__INIT;
    Cityops__V1__KeyTask t = CITYOPS__V1__KEY_TASK__INIT;
    Cityops__V1__OutboxMessage **rows = NULL;
    size_t got = 0;

    assert_non_null(cmds);
    assert_non_null(ptrs);
    t.title = "street lights";
    t.deadline = f->time + 365 * 24 * HOUR;
    t.origin_tier = PARENT;
    t.n_child_tiers = 1;
    t.child_tiers = (char **)kids;
    a.task = &t;
    for (size_t i = 0; i < n; i++) {
        cmd_init(&cmds[i], R(ADMIN));
        cmds[i].op_case = CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK;
        cmds[i].fed_assign_task = &a;
        ptrs[i] = &cmds[i];
    }
    assert_int_equal(apply_n(f, &f->p, ptrs, n), RC(OK));
    free(ptrs);
    free(cmds);
    /* Rows 1..3 are older than the newest kept, but only acked ones go. */
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 2), RC(OK));
    assert_int_equal(store_outbox_list(f->p.s, CHILD, 0, 1, &rows, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(rows[0]->seq, 3);
    cityops__v1__outbox_message__free_unpacked(rows[0], NULL);
    free(rows);
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, n), RC(OK));
    assert_int_equal(store_outbox_list(f->p.s, CHILD, 0, 1, &rows, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(rows[0]->seq, 4);
    cityops__v1__outbox_message__free_unpacked(rows[0], NULL);
    free(rows);
    /* The next row still follows the last one. */
    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(outbox_last(&f->p, CHILD), n + 1);
}

/* --- witnessing the child's audit checkpoints --- */

static EVP_PKEY *ed25519_new(uint8_t pub[32])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    EVP_PKEY *pkey = NULL;
    size_t len = 32;

    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
    assert_int_equal(EVP_PKEY_keygen(ctx, &pkey), 1);
    EVP_PKEY_CTX_free(ctx);
    assert_int_equal(EVP_PKEY_get_raw_public_key(pkey, pub, &len), 1);
    return pkey;
}

/* An audit_checkpoint row of a head of @size signed with @key. */
static Cityops__V1__OutboxMessage *
checkpoint_row(uint64_t seq, uint64_t size, EVP_PKEY *key, int corrupt)
{
    Cityops__V1__Checkpoint cp = CITYOPS__V1__CHECKPOINT__INIT;
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    uint8_t root[32];
    uint8_t sig[64];
    uint8_t pub[32];
    size_t len = 64;
    size_t plen = 32;
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    memset(root, (int)size, sizeof(root));
    cp.tree_size = size;
    cp.root_hash.len = 32;
    cp.root_hash.data = root;
    cp.time = T0 + (int64_t)size;
    store_checkpoint_message(&cp, msg);
    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, msg, sizeof(msg)), 1);
    EVP_MD_CTX_free(md);
    assert_int_equal(EVP_PKEY_get_raw_public_key(key, pub, &plen), 1);
    sig[0] ^= (uint8_t)corrupt;
    cp.signature.len = 64;
    cp.signature.data = sig;
    cp.public_key.len = 32;
    cp.public_key.data = pub;
    return row_new(seq, "audit_checkpoint", &cp.base);
}

static void test_witness_refuses_a_head_that_does_not_grow_the_tree(
    void **state)
{
    struct fx *f = *state;
    Cityops__V1__OutboxMessage *rows[5];
    Cityops__V1__CheckpointList *l = NULL;
    uint8_t pub[32];
    EVP_PKEY *key = ed25519_new(pub);

    rows[0] = checkpoint_row(1, 5, key, 0);
    rows[1] = checkpoint_row(2, 3, key, 0);
    rows[2] = checkpoint_row(3, 5, key, 0);
    rows[3] = checkpoint_row(4, 9, key, 1); /* bad signature */
    rows[4] = checkpoint_row(5, 8, key, 0);
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD, rows, 5),
                     RC(OK));
    assert_string_equal(f->res->message,
                        "applied 5, duplicates 0"
                        "; seq 2: tree size 3 is not above 5"
                        "; seq 3: tree size 5 is not above 5"
                        "; seq 4: checkpoint signature does not verify");
    assert_int_equal(f->res->version, 5);
    assert_int_equal(store_fed_witness_list(f->p.s, CHILD, &l), 0);
    assert_int_equal(l->n_checkpoints, 2);
    assert_int_equal(l->checkpoints[0]->tree_size, 5);
    assert_int_equal(l->checkpoints[1]->tree_size, 8);
    assert_memory_equal(l->checkpoints[1]->public_key.data, pub, 32);
    cityops__v1__checkpoint_list__free_unpacked(l, NULL);
    assert_int_equal(store_fed_witness_list(f->p.s, CHILD2, &l), 0);
    assert_int_equal(l->n_checkpoints, 0);
    cityops__v1__checkpoint_list__free_unpacked(l, NULL);
    rows_free(rows, 5);
    EVP_PKEY_free(key);
}

static void test_the_childs_signed_checkpoint_is_witnessed_by_the_parent(
    void **state)
{
    static const uint64_t one[] = {1};
    struct fx *f = *state;
    Cityops__V1__Command cmd;
    Cityops__V1__CheckpointRequest cr = CITYOPS__V1__CHECKPOINT_REQUEST__INIT;
    Cityops__V1__CheckpointSignature cs =
        CITYOPS__V1__CHECKPOINT_SIGNATURE__INIT;
    Cityops__V1__Checkpoint *cp = NULL;
    Cityops__V1__CheckpointList *l = NULL;
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    uint8_t pub[32];
    uint8_t sig[64];
    size_t len = 64;
    EVP_PKEY *key = ed25519_new(pub);
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    assert_int_equal(feedback(f, R(ADMIN), "x/1", CHILD, "done"),
                     RC(NOT_FOUND)); /* something in the trail */
    cmd_init(&cmd, R(SYSTEM));
    cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT;
    cmd.checkpoint = &cr;
    assert_int_equal(apply(f, &f->c, &cmd), RC(OK));
    assert_int_equal(store_checkpoint_get(f->c.s, 0, &cp), 0);
    store_checkpoint_message(cp, msg);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, msg, sizeof(msg)), 1);
    cs.tree_size = cp->tree_size;
    cs.signature.len = 64;
    cs.signature.data = sig;
    cs.public_key.len = 32;
    cs.public_key.data = pub;
    cmd_init(&cmd, R(SYSTEM));
    cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT_SIGNATURE;
    cmd.checkpoint_signature = &cs;
    assert_int_equal(apply(f, &f->c, &cmd), RC(OK));
    assert_int_equal(deliver(f, &f->c, "parent", &f->p, CHILD, one, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    assert_int_equal(store_fed_witness_list(f->p.s, CHILD, &l), 0);
    assert_int_equal(l->n_checkpoints, 1);
    assert_int_equal(l->checkpoints[0]->tree_size, cp->tree_size);
    cityops__v1__checkpoint_list__free_unpacked(l, NULL);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
}

static void test_unknown_kinds_and_bad_payloads_advance_the_inbox(
    void **state)
{
    struct fx *f = *state;
    Cityops__V1__OutboxMessage *rows[3];
    Cityops__V1__KeyTask t = CITYOPS__V1__KEY_TASK__INIT;
    Cityops__V1__FedTasksResponse *r = NULL;

    t.task_id = "cn-46/1"; /* not the origin's */
    t.title = "x";
    t.origin_tier = PARENT;
    rows[0] = row_new(1, "stats", NULL);
    rows[1] = row_new(2, "key_task", &t.base);
    rows[2] = row_new(3, "key_task", NULL);
    rows[2]->payload.len = 3;
    rows[2]->payload.data = (uint8_t *)strdup("\xff\xff\xff");
    assert_int_equal(inbound_rows(f, &f->c, R(SYSTEM), PARENT, rows, 3),
                     RC(OK));
    assert_string_equal(f->res->message,
                        "applied 3, duplicates 0"
                        "; seq 1: unknown kind \"stats\""
                        "; seq 2: key_task is not the origin's"
                        "; seq 3: key_task does not decode");
    assert_int_equal(inbox(&f->c, PARENT), 3);
    assert_int_equal(store_fed_tasks(f->c.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 0);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    rows_free(rows, 3);
}

/* Everything fed keeps, packed, for "nothing changed" checks. */
struct fed_state {
    uint8_t *tasks;
    size_t tasks_len;
    uint64_t last[3];
    uint64_t acked;
    uint64_t inbox;
    size_t links;
};

static void state_take(struct fx *f, struct fed_state *st)
{
    static const char *const links[] = {CHILD, CHILD2, "parent"};
    Cityops__V1__FedLink **l = NULL;

    st->tasks_len = tasks_bytes(&f->p, f->time, &st->tasks);
    for (size_t i = 0; i < 3; i++) {
        st->last[i] = outbox_last(&f->p, links[i]);
    }
    assert_int_equal(
        store_fed_outbox_state(f->p.s, CHILD, &st->acked, NULL, NULL), 0);
    st->inbox = inbox(&f->p, CHILD);
    assert_int_equal(store_fed_links(f->p.s, &l, &st->links), 0);
    for (size_t i = 0; i < st->links; i++) {
        cityops__v1__fed_link__free_unpacked(l[i], NULL);
    }
    free(l);
}

static void state_equal(struct fed_state *a, struct fed_state *b)
{
    assert_int_equal(a->tasks_len, b->tasks_len);
    assert_memory_equal(a->tasks, b->tasks, a->tasks_len);
    assert_memory_equal(a->last, b->last, sizeof(a->last));
    assert_int_equal(a->acked, b->acked);
    assert_int_equal(a->inbox, b->inbox);
    assert_int_equal(a->links, b->links);
    free(a->tasks);
    free(b->tasks);
}

static void test_bad_input_is_refused_and_changes_nothing(void **state)
{
    static const char *const one[] = {CHILD};
    static const char *const dup[] = {CHILD, CHILD};
    static const char *const self[] = {PARENT};
    static const char *const badtier[] = {"cn 45"};
    static const char *const eps[] = {"10.0.0.1:7443"};
    static const char *const noport[] = {"10.0.0.1"};
    static const char *const bigport[] = {"10.0.0.1:70000"};
    static const char *const nine[] = {"a:1", "a:2", "a:3", "a:4", "a:5",
                                       "a:6", "a:7", "a:8", "a:9"};
    const char *many[33];
    char title[202 * 3];
    char long_tier[66];
    struct fx *f = *state;
    struct fed_state before;
    struct fed_state after;
    Cityops__V1__OutboxMessage *rows[2];
    int64_t later = f->time + HOUR;

    for (size_t i = 0; i < 33; i++) {
        many[i] = i % 2 ? CHILD : CHILD2;
    }
    memset(long_tier, 'a', 65);
    long_tier[65] = '\0';
    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 1), RC(OK));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, eps, 1, 0), RC(OK));
    state_take(f, &before);

    assert_int_equal(assign_to(f, R(ADMIN), "", "t", later, one, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), "parent", "t", later, one, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "", later, one, 1),
                     RC(INVALID_ARGUMENT));
    /* 201 characters of three bytes each: too long; 200 would do. */
    title[0] = '\0';
    for (int i = 0; i < 201; i++) {
        strcat(title, "\xe4\xba\x95");
    }
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, title, later, one, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", f->time, one, 1),
                     RC(INVALID_ARGUMENT)); /* not after the command */
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", later, one, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", later, many, 33),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", later, dup, 2),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", later, self, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "t", later, badtier, 1),
                     RC(INVALID_ARGUMENT));

    assert_int_equal(link_set(f, R(ADMIN), "", 2, eps, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), long_tier, 2, eps, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), "a/b", 2, eps, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 0, eps, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, eps, 0, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, nine, 9, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, noport, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, bigport, 1, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(link_set(f, R(ADMIN), CHILD2, 2, eps, 1, 1),
                     RC(NOT_FOUND));

    assert_int_equal(ack(f, &f->p, R(SYSTEM), "a b", 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 2),
                     RC(FAILED_PRECONDITION));

    rows[0] = feedback_row(1, PARENT "/1", CHILD, "done");
    rows[1] = feedback_row(0, PARENT "/1", CHILD, "done");
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD, rows, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), "", rows, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(inbound_rows(f, &f->p, R(SYSTEM), CHILD, rows, 2),
                     RC(INVALID_ARGUMENT)); /* seq 0 */
    rows_free(rows, 2);

    state_take(f, &after);
    state_equal(&before, &after);
    /* The task counter did not move either. */
    assert_int_equal(assign(f), RC(OK));
    assert_string_equal(f->res->ref, PARENT "/2");
}

static void test_every_command_checks_its_role(void **state)
{
    static const char *const eps[] = {"city.example:7443"};
    static const char *const kids[] = {CHILD};
    struct fx *f = *state;
    struct fed_state before;
    struct fed_state after;
    Cityops__V1__OutboxMessage *rows[1];

    assert_int_equal(assign(f), RC(OK));
    state_take(f, &before);
    assert_int_equal(assign_to(f, R(DISPATCHER), PARENT, "t",
                               f->time + HOUR, kids, 1),
                     RC(PERMISSION_DENIED));
    assert_int_equal(assign_to(f, R(SYSTEM), PARENT, "t", f->time + HOUR,
                               kids, 1),
                     RC(PERMISSION_DENIED));
    assert_int_equal(link_set(f, R(SHIFT_LEADER), CHILD, 2, eps, 1, 0),
                     RC(PERMISSION_DENIED));
    assert_int_equal(ack(f, &f->p, R(ADMIN), CHILD, 1),
                     RC(PERMISSION_DENIED));
    rows[0] = feedback_row(1, PARENT "/1", CHILD, "done");
    assert_int_equal(inbound_rows(f, &f->p, R(ADMIN), CHILD, rows, 1),
                     RC(PERMISSION_DENIED));
    rows_free(rows, 1);
    state_take(f, &after);
    state_equal(&before, &after);

    static const uint64_t one[] = {1};
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(OK));
    assert_int_equal(feedback(f, R(INSPECTOR), PARENT "/1", CHILD, "done"),
                     RC(PERMISSION_DENIED));
    assert_int_equal(feedback(f, R(SYSTEM), PARENT "/1", CHILD, "done"),
                     RC(PERMISSION_DENIED));
    assert_int_equal(outbox_last(&f->c, PARENT), 0);
}

static void test_links_are_added_replaced_listed_and_removed(void **state)
{
    static const char *const a[] = {"10.0.0.1:7443", "[::1]:7443"};
    static const char *const b[] = {"county.example:9000"};
    struct fx *f = *state;
    Cityops__V1__FedLink **l = NULL;
    size_t n = 0;

    assert_int_equal(link_set(f, R(ADMIN), CHILD2,
                              CITYOPS__V1__LINK_KIND__LINK_KIND_CHILD, a, 2, 0),
                     RC(OK));
    assert_int_equal(link_set(f, R(ADMIN), CHILD,
                              CITYOPS__V1__LINK_KIND__LINK_KIND_PEER, a, 1, 0),
                     RC(OK));
    assert_int_equal(link_set(f, R(ADMIN), CHILD,
                              CITYOPS__V1__LINK_KIND__LINK_KIND_CHILD, b, 1, 0),
                     RC(OK));
    assert_int_equal(store_fed_links(f->p.s, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0]->tier_id, CHILD);
    assert_int_equal(l[0]->kind, CITYOPS__V1__LINK_KIND__LINK_KIND_CHILD);
    assert_int_equal(l[0]->n_endpoints, 1);
    assert_string_equal(l[0]->endpoints[0], "county.example:9000");
    assert_string_equal(l[1]->tier_id, CHILD2);
    assert_int_equal(l[1]->n_endpoints, 2);
    for (size_t i = 0; i < n; i++) {
        cityops__v1__fed_link__free_unpacked(l[i], NULL);
    }
    free(l);
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 0, NULL, 0, 1), RC(OK));
    assert_int_equal(store_fed_links(f->p.s, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(l[0]->tier_id, CHILD2);
    cityops__v1__fed_link__free_unpacked(l[0], NULL);
    free(l);
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 0, NULL, 0, 1),
                     RC(NOT_FOUND));
}

static int audit_has(struct tier *t, const char *target, const char *op)
{
    Cityops__V1__AuditListRequest req = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__AuditListResponse *r = NULL;
    int found = 0;

    req.target = (char *)target;
    assert_int_equal(store_audit_list(t->s, &req, &r), 0);
    for (size_t i = 0; i < r->n_records; i++) {
        found |= strcmp(r->records[i]->operation, op) == 0 &&
                 r->records[i]->after_sha256.len == 32;
    }
    cityops__v1__audit_list_response__free_unpacked(r, NULL);
    return found;
}

static void test_audit_names_the_federation_targets(void **state)
{
    static const uint64_t one[] = {1};
    static const char *const eps[] = {"10.0.0.1:7443"};
    struct fx *f = *state;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(OK));
    assert_int_equal(feedback(f, R(ADMIN), PARENT "/1", CHILD, "done"),
                     RC(OK));
    assert_int_equal(ack(f, &f->p, R(SYSTEM), CHILD, 1), RC(OK));
    assert_int_equal(link_set(f, R(ADMIN), CHILD, 2, eps, 1, 0), RC(OK));
    assert_true(audit_has(&f->p, "fed/task/" PARENT "/1", "fed_assign_task"));
    assert_true(audit_has(&f->c, "fed/inbox/" PARENT, "fed_inbound"));
    assert_true(audit_has(&f->c, "fed/task/" PARENT "/1", "fed_feedback"));
    assert_true(audit_has(&f->p, "fed/outbox/" CHILD, "fed_outbox_ack"));
    assert_true(audit_has(&f->p, "fed/link/" CHILD, "fed_link_set"));
}

/* --- second part: forward, to-case, hand-over, pub/sub, supervision --- */

#define GRAND "cn-45-02-01"

/* Apply @msg, the request of oneof case @op, at @t as @role. */
static int apply_op(struct fx *f,
                    struct tier *t,
                    Cityops__V1__Role role,
                    Cityops__V1__Command__OpCase op,
                    void *msg)
{
    Cityops__V1__Command cmd;

    cmd_init(&cmd, role);
    cmd.op_case = op;
    cmd.report = msg; /* the oneof's members share one pointer */
    return apply(f, t, &cmd);
}

/* A link that accepts only @kinds (@nk of them) from CHILD. */
static int link_kinds(struct fx *f, const char *const *kinds, size_t nk)
{
    static const char *const eps[] = {"10.0.0.2:7443"};
    Cityops__V1__FedLinkSet ls = CITYOPS__V1__FED_LINK_SET__INIT;
    Cityops__V1__FedLink l = CITYOPS__V1__FED_LINK__INIT;

    l.tier_id = CHILD;
    l.kind = CITYOPS__V1__LINK_KIND__LINK_KIND_CHILD;
    l.n_endpoints = 1;
    l.endpoints = (char **)eps;
    l.n_allowed_kinds = nk;
    l.allowed_kinds = (char **)kinds;
    ls.link = &l;
    return apply_op(f, &f->p, R(ADMIN), CITYOPS__V1__COMMAND__OP_FED_LINK_SET,
                    &ls);
}

static void test_a_link_keeps_its_allowed_kinds(void **state)
{
    static const char *const ok[] = {"task_feedback", "audit_checkpoint"};
    static const char *const bad[] = {"task feedback"};
    struct fx *f = *state;
    Cityops__V1__FedLink **l = NULL;
    size_t n = 0;

    assert_int_equal(link_kinds(f, bad, 1), RC(INVALID_ARGUMENT));
    assert_int_equal(store_fed_links(f->p.s, &l, &n), 0);
    assert_int_equal(n, 0);
    free(l);
    assert_int_equal(link_kinds(f, ok, 2), RC(OK));
    assert_int_equal(store_fed_links(f->p.s, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(l[0]->n_allowed_kinds, 2);
    assert_string_equal(l[0]->allowed_kinds[0], "task_feedback");
    assert_string_equal(l[0]->allowed_kinds[1], "audit_checkpoint");
    cityops__v1__fed_link__free_unpacked(l[0], NULL);
    free(l);
    /* replaced without a list: every kind again */
    assert_int_equal(link_kinds(f, NULL, 0), RC(OK));
    assert_int_equal(store_fed_links(f->p.s, &l, &n), 0);
    assert_int_equal(l[0]->n_allowed_kinds, 0);
    cityops__v1__fed_link__free_unpacked(l[0], NULL);
    free(l);
}

/* Deliver rows @seqs of @from's @link to @to as @origin, with the link
 * back @reply (what the receiving node puts into reply_stream). */
static int deliver_via(struct fx *f,
                       struct tier *from,
                       const char *link,
                       struct tier *to,
                       const char *origin,
                       const char *reply,
                       const uint64_t *seqs,
                       size_t n)
{
    int code;

    f->reply_stream = reply;
    code = deliver(f, from, link, to, origin, seqs, n);
    f->reply_stream = NULL;
    return code;
}

static int feedback_at(struct fx *f,
                       struct tier *t,
                       const char *task_id,
                       const char *tier,
                       const char *status)
{
    Cityops__V1__FedFeedback ff = CITYOPS__V1__FED_FEEDBACK__INIT;
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;

    fb.task_id = (char *)task_id;
    fb.tier_id = (char *)tier;
    fb.status = (char *)status;
    ff.feedback = &fb;
    return apply_op(f, t, R(SHIFT_LEADER),
                    CITYOPS__V1__COMMAND__OP_FED_FEEDBACK, &ff);
}

static int forward(struct fx *f,
                   struct tier *t,
                   Cityops__V1__Role role,
                   const char *task_id,
                   const char *self,
                   const char *const *children,
                   size_t n)
{
    Cityops__V1__FedForwardTask fw = CITYOPS__V1__FED_FORWARD_TASK__INIT;

    fw.task_id = (char *)task_id;
    fw.origin_tier = (char *)self;
    fw.n_child_tiers = n;
    fw.child_tiers = (char **)children;
    return apply_op(f, t, role,
                    CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK, &fw);
}

static int to_case(struct fx *f,
                   struct tier *t,
                   Cityops__V1__Role role,
                   const char *task_id,
                   Cityops__V1__CategoryType type)
{
    Cityops__V1__FedTaskToCase tc = CITYOPS__V1__FED_TASK_TO_CASE__INIT;

    tc.task_id = (char *)task_id;
    tc.category_type = type;
    tc.major_code = "01";
    tc.minor_code = "02";
    tc.grid_code = "g-7";
    return apply_op(f, t, role,
                    CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE, &tc);
}

static int report(struct fx *f, struct tier *t)
{
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;

    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r.major_code = "03";
    r.minor_code = "04";
    r.description = "garbage piled across the county boundary";
    loc.lon = 108.3;
    loc.lat = 22.8;
    loc.grid_code = "g-9";
    r.location = &loc;
    return apply_op(f, t, R(INSPECTOR),
                    CITYOPS__V1__COMMAND__OP_REPORT, &r);
}

static int hand_over(struct fx *f,
                     Cityops__V1__Role role,
                     uint64_t case_id,
                     const char *peer)
{
    Cityops__V1__FedHandover h = CITYOPS__V1__FED_HANDOVER__INIT;

    h.case_id = case_id;
    h.peer_tier = (char *)peer;
    h.reason = "the site is in the neighbour's grid";
    h.origin_tier = PARENT;
    return apply_op(f, &f->p, role,
                    CITYOPS__V1__COMMAND__OP_FED_HANDOVER, &h);
}

static int subscribe_to(struct fx *f,
                        Cityops__V1__Role role,
                        const char *topic,
                        const char *stream,
                        int unsubscribe)
{
    Cityops__V1__FedSubscribe sb = CITYOPS__V1__FED_SUBSCRIBE__INIT;

    sb.publisher_tier = PARENT;
    sb.topic = (char *)topic;
    sb.unsubscribe = unsubscribe;
    sb.origin_tier = CHILD;
    sb.stream = (char *)stream;
    return apply_op(f, &f->c, role,
                    CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE, &sb);
}

static int publish_at(struct fx *f,
                      struct tier *t,
                      Cityops__V1__Role role,
                      const char *self,
                      const char *topic,
                      const char *key,
                      const char *payload)
{
    Cityops__V1__FedPublish p = CITYOPS__V1__FED_PUBLISH__INIT;

    p.topic = (char *)topic;
    p.key = (char *)key;
    p.payload.data = (uint8_t *)payload;
    p.payload.len = strlen(payload);
    p.payload_type = "text/plain";
    p.origin_tier = (char *)self;
    return apply_op(f, t, role,
                    CITYOPS__V1__COMMAND__OP_FED_PUBLISH, &p);
}

static int tick(struct fx *f, struct tier *t)
{
    Cityops__V1__Tick tk = CITYOPS__V1__TICK__INIT;

    return apply_op(f, t, R(SYSTEM),
                    CITYOPS__V1__COMMAND__OP_TICK, &tk);
}

static Cityops__V1__FedTasksResponse *tasks(struct fx *f, struct tier *t)
{
    Cityops__V1__FedTasksResponse *r = NULL;

    assert_int_equal(store_fed_tasks(t->s, f->time, &r), 0);
    return r;
}

static Cityops__V1__Case *case_get(struct tier *t, uint64_t id)
{
    Cityops__V1__Case *c = NULL;

    assert_int_equal(store_case_get(t->s, id, &c, NULL), 0);
    return c;
}

/* The kind of @t's outbox row @seq of @link. */
static void row_kind_is(struct tier *t,
                        const char *link,
                        uint64_t seq,
                        const char *kind)
{
    Cityops__V1__OutboxMessage *row;

    rows_pick(t, link, &seq, 1, &row);
    assert_string_equal(row->kind, kind);
    rows_free(&row, 1);
}

static Cityops__V1__FedReceivedResponse *received(struct tier *t,
                                                  const char *topic)
{
    Cityops__V1__FedReceivedResponse *r = NULL;

    assert_int_equal(store_fed_received(t->s, topic, NULL, &r), 0);
    return r;
}

static void
test_forward_sends_the_task_on_and_the_grandchilds_feedback_comes_back(
    void **state)
{
    static const uint64_t one[] = {1};
    static const char *const grand[] = {GRAND};
    static const char *const back[] = {PARENT};
    struct fx *f = *state;
    struct tier g;
    Cityops__V1__FedTasksResponse *r;
    Cityops__V1__OutboxMessage *row;
    Cityops__V1__KeyTask *t;
    const Cityops__V1__FedTaskView *v;

    tier_open(&g);
    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, "parent",
                                 one, 1),
                     RC(OK));
    assert_int_equal(forward(f, &f->c, R(SHIFT_LEADER), PARENT "/1", CHILD,
                             grand, 1),
                     RC(OK));
    assert_string_equal(f->res->ref, PARENT "/1");
    rows_pick(&f->c, GRAND, one, 1, &row);
    assert_string_equal(row->kind, "key_task");
    t = cityops__v1__key_task__unpack(NULL, row->payload.len,
                                      row->payload.data);
    assert_non_null(t);
    assert_string_equal(t->task_id, PARENT "/1");
    assert_string_equal(t->origin_tier, CHILD);
    assert_int_equal(t->n_child_tiers, 1);
    assert_string_equal(t->child_tiers[0], GRAND);
    cityops__v1__key_task__free_unpacked(t, NULL);
    rows_free(&row, 1);

    /* the same again, back up, or on a task assigned here: refused */
    assert_int_equal(forward(f, &f->c, R(ADMIN), PARENT "/1", CHILD, grand, 1),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(forward(f, &f->c, R(ADMIN), PARENT "/1", CHILD, back, 1),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(forward(f, &f->p, R(ADMIN), PARENT "/1", PARENT, grand, 1),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(forward(f, &f->c, R(ADMIN), PARENT "/9", CHILD, grand, 1),
                     RC(NOT_FOUND));
    assert_int_equal(outbox_last(&f->c, GRAND), 1);

    /* a task id of another tier is taken only from the parent */
    assert_int_equal(deliver_via(f, &f->c, GRAND, &g, CHILD, CHILD, one, 1),
                     RC(OK));
    assert_non_null(strstr(f->res->message, "key_task is not the origin's"));
    tier_remove(&g);
    tier_open(&g);
    assert_int_equal(deliver_via(f, &f->c, GRAND, &g, CHILD, "parent", one, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    assert_int_equal(feedback_at(f, &g, PARENT "/1", GRAND, "done"), RC(OK));
    assert_int_equal(deliver_via(f, &g, "parent", &f->c, GRAND, GRAND, one, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");

    r = tasks(f, &f->c);
    v = task_find(r, PARENT "/1");
    assert_int_equal(v->n_forwarded_to, 1);
    assert_string_equal(v->forwarded_to[0], GRAND);
    assert_int_equal(v->n_feedback, 1);
    assert_string_equal(v->feedback[0]->tier_id, GRAND);
    assert_string_equal(v->feedback[0]->status, "done");
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    assert_true(audit_has(&f->c, "fed/task/" PARENT "/1", "fed_forward_task"));
    tier_remove(&g);
}

static void test_a_received_task_becomes_a_case_once(void **state)
{
    static const uint64_t one[] = {1};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r;
    Cityops__V1__Case *c;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1), RC(OK));
    assert_int_equal(to_case(f, &f->c, R(DISPATCHER), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT),
                     RC(PERMISSION_DENIED));
    assert_int_equal(to_case(f, &f->c, R(SHIFT_LEADER), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_UNSPECIFIED),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(store_case_count(f->c.s), 0);
    assert_int_equal(to_case(f, &f->p, R(SHIFT_LEADER), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(to_case(f, &f->c, R(SHIFT_LEADER), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT),
                     RC(OK));
    assert_string_equal(f->res->message, "case 1");
    c = case_get(&f->c, 1);
    assert_int_equal(c->source,
                     CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_UPPER_TIER);
    assert_int_equal(c->state, CITYOPS__V1__CASE_STATE__CASE_STATE_REPORTED);
    assert_string_equal(c->remote_ref, PARENT "/1");
    assert_string_equal(c->description,
                        "manhole covers\ncheck every manhole cover on the "
                        "ring road");
    assert_string_equal(c->location->grid_code, "g-7");
    cityops__v1__case__free_unpacked(c, NULL);
    r = tasks(f, &f->c);
    assert_int_equal(task_find(r, PARENT "/1")->case_id, 1);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);

    assert_int_equal(to_case(f, &f->c, R(ADMIN), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(store_case_count(f->c.s), 1);
}

static int escalate_at(struct fx *f,
                       struct tier *t,
                       Cityops__V1__Role role,
                       uint64_t case_id,
                       const char *self)
{
    Cityops__V1__FedEscalate e = CITYOPS__V1__FED_ESCALATE__INIT;

    e.case_id = case_id;
    e.reason = "beyond the county's means";
    e.origin_tier = (char *)self;
    return apply_op(f, t, role, CITYOPS__V1__COMMAND__OP_FED_ESCALATE, &e);
}

static int answer(struct fx *f,
                  struct tier *t,
                  Cityops__V1__Role role,
                  const char *id,
                  const char *decline_reason)
{
    Cityops__V1__FedHandoverAnswer a = CITYOPS__V1__FED_HANDOVER_ANSWER__INIT;

    a.id = (char *)id;
    a.decline = decline_reason != NULL;
    if (decline_reason != NULL) {
        a.reason = (char *)decline_reason;
    }
    return apply_op(f, t, role, CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER,
                    &a);
}

/* How many hand-overs @t has pending: received here, sent from here. */
static void pending_are(struct tier *t, size_t in, size_t out)
{
    Cityops__V1__FedIncomingResponse *r = NULL;

    assert_int_equal(store_fed_handovers(t->s, &r), 0);
    assert_int_equal(r->n_incoming, in);
    assert_int_equal(r->n_outgoing, out);
    cityops__v1__fed_incoming_response__free_unpacked(r, NULL);
}

/* The last event of case @id at @t: its type, and its reason in @reason. */
static Cityops__V1__CaseEventType last_event(struct tier *t,
                                             uint64_t id,
                                             char *reason,
                                             size_t size)
{
    Cityops__V1__HistoryResponse *h = NULL;
    Cityops__V1__CaseEventType type;

    assert_int_equal(store_case_history(t->s, id, &h), 0);
    type = h->events[h->n_events - 1]->type;
    snprintf(reason, size, "%s", h->events[h->n_events - 1]->reason);
    cityops__v1__history_response__free_unpacked(h, NULL);
    return type;
}

static void case_state_is(struct tier *t,
                          uint64_t id,
                          Cityops__V1__CaseState state,
                          const char *remote_ref)
{
    Cityops__V1__Case *c = case_get(t, id);

    assert_int_equal(c->state, state);
    assert_string_equal(c->remote_ref, remote_ref);
    cityops__v1__case__free_unpacked(c, NULL);
}

#define ST(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define EV(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x

static void test_handover_waits_for_the_peer_to_accept_it(void **state)
{
    static const uint64_t one[] = {1};
    struct fx *f = *state;
    Cityops__V1__Case *c;
    char why[1024];

    assert_int_equal(report(f, &f->p), RC(OK));
    assert_int_equal(hand_over(f, R(ADMIN), 1, CHILD), RC(PERMISSION_DENIED));
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, PARENT),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 7, CHILD), RC(NOT_FOUND));
    assert_int_equal(outbox_last(&f->p, CHILD), 0);
    pending_are(&f->p, 0, 0);
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, CHILD), RC(OK));
    /* open until the peer answers */
    case_state_is(&f->p, 1, ST(REPORTED), "");
    assert_int_equal(last_event(&f->p, 1, why, sizeof why), EV(COMMENT));
    assert_string_equal(why, "hand-over asked of " CHILD
                             ": the site is in the neighbour's grid");
    row_kind_is(&f->p, CHILD, 1, "case_handover");
    assert_true(audit_has(&f->p, "case/1", "fed_handover"));
    pending_are(&f->p, 0, 1);

    /* one pending hand-over per case */
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, CHILD2),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(escalate_at(f, &f->p, R(SHIFT_LEADER), 1, PARENT),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(outbox_last(&f->p, CHILD2), 0);
    assert_int_equal(outbox_last(&f->p, "parent"), 0);

    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, PARENT, one,
                                 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    assert_int_equal(store_case_count(f->c.s), 0);
    pending_are(&f->c, 1, 0);

    assert_int_equal(answer(f, &f->c, R(ADMIN), PARENT "/1", NULL),
                     RC(PERMISSION_DENIED));
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), PARENT "/9", NULL),
                     RC(NOT_FOUND));
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), "nope", NULL),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), PARENT "/1", ""),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(outbox_last(&f->c, PARENT), 0);
    pending_are(&f->c, 1, 0);
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), PARENT "/1", NULL),
                     RC(OK));
    assert_string_equal(f->res->message, "case 1");
    c = case_get(&f->c, 1);
    assert_int_equal(c->source,
                     CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PEER_TRANSFER);
    assert_string_equal(c->remote_ref, PARENT "/1");
    assert_string_equal(c->description,
                        "garbage piled across the county boundary");
    assert_string_equal(c->location->grid_code, "g-9");
    cityops__v1__case__free_unpacked(c, NULL);
    row_kind_is(&f->c, PARENT, 1, "handover_ack");
    pending_are(&f->c, 0, 0);
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), PARENT "/1", NULL),
                     RC(NOT_FOUND));

    assert_int_equal(deliver_via(f, &f->c, PARENT, &f->p, CHILD, CHILD, one,
                                 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    case_state_is(&f->p, 1, ST(TRANSFERRED_OUT), CHILD "/1");
    assert_int_equal(last_event(&f->p, 1, why, sizeof why),
                     EV(TRANSFER_OUT));
    pending_are(&f->p, 0, 0);
    /* a terminal case is not handed over again */
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, CHILD2),
                     RC(FAILED_PRECONDITION));
}

static void test_a_declined_handover_leaves_the_case_open(void **state)
{
    static const uint64_t one[] = {1};
    static const uint64_t two[] = {2};
    struct fx *f = *state;
    char why[1024];

    assert_int_equal(report(f, &f->p), RC(OK));
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, CHILD), RC(OK));
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, PARENT, one,
                                 1),
                     RC(OK));
    assert_int_equal(answer(f, &f->c, R(SHIFT_LEADER), PARENT "/1",
                            "not in our grid"),
                     RC(OK));
    assert_string_equal(f->res->message, "declined");
    assert_int_equal(store_case_count(f->c.s), 0);
    row_kind_is(&f->c, PARENT, 1, "handover_ack");
    pending_are(&f->c, 0, 0);
    assert_int_equal(deliver_via(f, &f->c, PARENT, &f->p, CHILD, CHILD, one,
                                 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    case_state_is(&f->p, 1, ST(REPORTED), "");
    assert_int_equal(last_event(&f->p, 1, why, sizeof why), EV(COMMENT));
    assert_string_equal(why, "hand-over declined by " CHILD
                             ": not in our grid");
    pending_are(&f->p, 0, 0);
    /* a redelivered answer changes nothing */
    assert_int_equal(deliver_via(f, &f->c, PARENT, &f->p, CHILD, CHILD, one,
                                 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 0, duplicates 1");
    /* it may be handed over again */
    assert_int_equal(hand_over(f, R(SHIFT_LEADER), 1, CHILD), RC(OK));
    row_kind_is(&f->p, CHILD, 2, "case_handover");
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, PARENT, two,
                                 1),
                     RC(OK));
    pending_are(&f->c, 1, 0);
}

static void test_escalation_up_is_accepted_or_declined_by_the_parent(
    void **state)
{
    static const uint64_t one[] = {1};
    static const uint64_t two[] = {2};
    struct fx *f = *state;
    Cityops__V1__Case *c;
    char why[1024];

    assert_int_equal(report(f, &f->c), RC(OK));
    assert_int_equal(report(f, &f->c), RC(OK));
    assert_int_equal(escalate_at(f, &f->c, R(ADMIN), 1, CHILD),
                     RC(PERMISSION_DENIED));
    assert_int_equal(escalate_at(f, &f->c, R(SHIFT_LEADER), 0, CHILD),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(outbox_last(&f->c, "parent"), 0);
    assert_int_equal(escalate_at(f, &f->c, R(SHIFT_LEADER), 1, CHILD), RC(OK));
    assert_int_equal(escalate_at(f, &f->c, R(SHIFT_LEADER), 1, CHILD),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(escalate_at(f, &f->c, R(SHIFT_LEADER), 2, CHILD), RC(OK));
    row_kind_is(&f->c, "parent", 1, "case_escalation");
    case_state_is(&f->c, 1, ST(REPORTED), "");
    pending_are(&f->c, 0, 2);

    static const uint64_t both[] = {1, 2};
    assert_int_equal(deliver_via(f, &f->c, "parent", &f->p, CHILD, CHILD,
                                 both, 2),
                     RC(OK));
    pending_are(&f->p, 2, 0);
    assert_int_equal(answer(f, &f->p, R(SHIFT_LEADER), CHILD "/1", NULL),
                     RC(OK));
    c = case_get(&f->p, 1);
    assert_int_equal(c->source,
                     CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_LOWER_TIER);
    assert_string_equal(c->remote_ref, CHILD "/1");
    cityops__v1__case__free_unpacked(c, NULL);
    row_kind_is(&f->p, CHILD, 1, "escalation_ack");
    assert_int_equal(answer(f, &f->p, R(SHIFT_LEADER), CHILD "/2",
                            "handle it locally"),
                     RC(OK));
    row_kind_is(&f->p, CHILD, 2, "escalation_ack");
    pending_are(&f->p, 0, 0);

    /* an escalation answer counts only from the parent's link */
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, PARENT, one,
                                 1),
                     RC(OK));
    assert_non_null(strstr(f->res->message, "no hand-over of that case"));
    case_state_is(&f->c, 1, ST(REPORTED), "");
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, "parent",
                                 two, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    case_state_is(&f->c, 2, ST(REPORTED), "");
    assert_int_equal(last_event(&f->c, 2, why, sizeof why), EV(COMMENT));
    assert_string_equal(why, "escalation declined by " PARENT
                             ": handle it locally");
    pending_are(&f->c, 0, 1);
}

static int close_task(struct fx *f,
                      struct tier *t,
                      Cityops__V1__Role role,
                      const char *task_id,
                      int reopen)
{
    Cityops__V1__FedTaskClose tc = CITYOPS__V1__FED_TASK_CLOSE__INIT;

    tc.task_id = (char *)task_id;
    tc.reopen = reopen;
    return apply_op(f, t, role, CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE, &tc);
}

static int task_closed(struct fx *f, struct tier *t, const char *id)
{
    Cityops__V1__FedTasksResponse *r = tasks(f, t);
    int closed = task_find(r, id)->closed;

    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    return closed;
}

static void test_the_assigning_tier_closes_and_reopens_a_task(void **state)
{
    static const uint64_t one[] = {1};
    static const uint64_t two[] = {2};
    static const uint64_t three[] = {3};
    static const char *const grand[] = {GRAND};
    struct fx *f = *state;
    struct fed_state before;
    struct fed_state after;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(OK));
    assert_int_equal(forward(f, &f->c, R(ADMIN), PARENT "/1", CHILD, grand,
                             1),
                     RC(OK));

    state_take(f, &before);
    assert_int_equal(close_task(f, &f->p, R(INSPECTOR), PARENT "/1", 0),
                     RC(PERMISSION_DENIED));
    assert_int_equal(close_task(f, &f->p, R(ADMIN), "", 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(close_task(f, &f->p, R(ADMIN), PARENT "/9", 0),
                     RC(NOT_FOUND));
    assert_int_equal(close_task(f, &f->p, R(ADMIN), PARENT "/1", 1),
                     RC(FAILED_PRECONDITION));
    state_take(f, &after);
    state_equal(&before, &after);
    assert_int_equal(close_task(f, &f->c, R(ADMIN), PARENT "/1", 0),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(outbox_last(&f->p, CHILD), 1);
    assert_int_equal(outbox_last(&f->c, GRAND), 1);

    assert_int_equal(close_task(f, &f->p, R(SHIFT_LEADER), PARENT "/1", 0),
                     RC(OK));
    assert_string_equal(f->res->ref, PARENT "/1");
    assert_true(task_closed(f, &f->p, PARENT "/1"));
    row_kind_is(&f->p, CHILD, 2, "task_close");
    assert_int_equal(close_task(f, &f->p, R(SHIFT_LEADER), PARENT "/1", 0),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(outbox_last(&f->p, CHILD), 2);

    /* the child marks its copy closed, tells the tier it forwarded to,
     * and refuses feedback on it */
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, two, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    assert_true(task_closed(f, &f->c, PARENT "/1"));
    row_kind_is(&f->c, GRAND, 2, "task_close");
    assert_int_equal(feedback_at(f, &f->c, PARENT "/1", CHILD, "done"),
                     RC(FAILED_PRECONDITION));
    assert_int_equal(outbox_last(&f->c, "parent"), 0);

    assert_int_equal(close_task(f, &f->p, R(ADMIN), PARENT "/1", 1), RC(OK));
    assert_false(task_closed(f, &f->p, PARENT "/1"));
    row_kind_is(&f->p, CHILD, 3, "task_reopen");
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, three, 1),
                     RC(OK));
    assert_false(task_closed(f, &f->c, PARENT "/1"));
    row_kind_is(&f->c, GRAND, 3, "task_reopen");
    assert_int_equal(feedback_at(f, &f->c, PARENT "/1", CHILD, "done"),
                     RC(OK));
}

static void test_publications_reach_subscribers_latest_per_key(void **state)
{
    static const uint64_t one[] = {1};
    static const uint64_t two[] = {2};
    struct fx *f = *state;
    Cityops__V1__FedReceivedResponse *r;

    assert_int_equal(subscribe_to(f, R(SHIFT_LEADER), "alarms", "parent", 0),
                     RC(PERMISSION_DENIED));
    assert_int_equal(subscribe_to(f, R(ADMIN), "alarms", CHILD2, 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(subscribe_to(f, R(ADMIN), "red alarms", "parent", 0),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(outbox_last(&f->c, "parent"), 0);
    assert_int_equal(subscribe_to(f, R(ADMIN), "alarms", "parent", 0),
                     RC(OK));
    row_kind_is(&f->c, "parent", 1, "subscribe");
    assert_int_equal(deliver_via(f, &f->c, "parent", &f->p, CHILD, CHILD, one,
                                 1),
                     RC(OK));
    r = received(&f->p, NULL);
    assert_int_equal(r->n_subscriptions, 1);
    assert_string_equal(r->subscriptions[0], CHILD " alarms");
    cityops__v1__fed_received_response__free_unpacked(r, NULL);

    assert_int_equal(publish_at(f, &f->p, R(SHIFT_LEADER), PARENT, "alarms",
                                "k1", "x"),
                     RC(PERMISSION_DENIED));
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), PARENT, "alarms", "k 1",
                                "x"),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), PARENT, "alarms", "k1",
                                "first"),
                     RC(OK));
    assert_string_equal(f->res->message, "sent to 1 link");
    assert_int_equal(publish_at(f, &f->p, R(SYSTEM), PARENT, "alarms", "k1",
                                "second"),
                     RC(OK));
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), PARENT, "other", "k1",
                                "x"),
                     RC(OK));
    assert_string_equal(f->res->message, "sent to 0 links");
    assert_int_equal(outbox_last(&f->p, CHILD), 2);
    assert_int_equal(outbox_last(&f->p, "parent"), 0);
    row_kind_is(&f->p, CHILD, 1, "publication");
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, "parent", one,
                                 1),
                     RC(OK));
    assert_int_equal(deliver_via(f, &f->p, CHILD, &f->c, PARENT, "parent", two,
                                 1),
                     RC(OK));
    r = received(&f->c, "alarms");
    assert_int_equal(r->n_publications, 1);
    assert_string_equal(r->publications[0]->origin_tier, PARENT);
    assert_string_equal(r->publications[0]->key, "k1");
    assert_int_equal(r->publications[0]->payload.len, 6);
    assert_memory_equal(r->publications[0]->payload.data, "second", 6);
    cityops__v1__fed_received_response__free_unpacked(r, NULL);

    /* unsubscribed: nothing more is sent */
    assert_int_equal(subscribe_to(f, R(ADMIN), "alarms", "parent", 1),
                     RC(OK));
    assert_int_equal(deliver_via(f, &f->c, "parent", &f->p, CHILD, CHILD, two,
                                 1),
                     RC(OK));
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), PARENT, "alarms", "k2",
                                "x"),
                     RC(OK));
    assert_int_equal(outbox_last(&f->p, CHILD), 2);
    r = received(&f->p, NULL);
    assert_int_equal(r->n_subscriptions, 0);
    cityops__v1__fed_received_response__free_unpacked(r, NULL);
}

static void test_stats_always_go_to_the_parent_once(void **state)
{
    static const uint64_t one[] = {1};
    struct fx *f = *state;
    Cityops__V1__FedReceivedResponse *r;

    assert_int_equal(publish_at(f, &f->c, R(SYSTEM), CHILD, "stats", "2025-10",
                                "report"),
                     RC(OK));
    assert_string_equal(f->res->message, "sent to 1 link");
    row_kind_is(&f->c, "parent", 1, "publication");
    assert_int_equal(deliver_via(f, &f->c, "parent", &f->p, CHILD, CHILD, one,
                                 1),
                     RC(OK));
    r = received(&f->p, "stats");
    assert_int_equal(r->n_publications, 1);
    assert_string_equal(r->publications[0]->origin_tier, CHILD);
    assert_string_equal(r->publications[0]->key, "2025-10");
    assert_string_equal(r->publications[0]->payload_type, "text/plain");
    cityops__v1__fed_received_response__free_unpacked(r, NULL);

    /* the parent subscribed as well: still one row up */
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), PARENT, "stats", "x",
                                "y"),
                     RC(OK));
    {
        Cityops__V1__FedSubscribe sb = CITYOPS__V1__FED_SUBSCRIBE__INIT;
        Cityops__V1__OutboxMessage *row;

        sb.publisher_tier = CHILD;
        sb.topic = "stats";
        sb.origin_tier = PARENT;
        row = row_new(1, "subscribe", &sb.base);
        f->reply_stream = "parent";
        assert_int_equal(inbound_rows(f, &f->c, R(SYSTEM), PARENT, &row, 1),
                         RC(OK));
        f->reply_stream = NULL;
        rows_free(&row, 1);
    }
    assert_int_equal(publish_at(f, &f->c, R(SYSTEM), CHILD, "stats", "2025-11",
                                "report"),
                     RC(OK));
    assert_string_equal(f->res->message, "sent to 1 link");
    assert_int_equal(outbox_last(&f->c, "parent"), 2);
    assert_int_equal(outbox_last(&f->c, PARENT), 0);
}

static void test_a_tick_supervises_overdue_tasks_once_per_late_child(
    void **state)
{
    static const char *const both[] = {CHILD, CHILD2};
    static const char *const one_child[] = {CHILD};
    static const uint64_t one[] = {1};
    static const uint64_t first_two[] = {1, 2};
    static const uint64_t three[] = {3};
    struct fx *f = *state;
    Cityops__V1__FedTasksResponse *r;
    Cityops__V1__OutboxMessage *row;
    Cityops__V1__TaskFeedback *fb;
    int64_t due = f->time + HOUR;

    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "one", due, both, 2),
                     RC(OK));
    assert_int_equal(assign_to(f, R(ADMIN), PARENT, "two", due, one_child, 1),
                     RC(OK));
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, first_two, 2),
                     RC(OK));
    assert_int_equal(feedback(f, R(ADMIN), PARENT "/1", CHILD, "done"),
                     RC(OK));
    assert_int_equal(deliver(f, &f->c, "parent", &f->p, CHILD, one, 1),
                     RC(OK));

    assert_int_equal(tick(f, &f->p), RC(OK)); /* not due yet */
    assert_int_equal(outbox_last(&f->p, CHILD), 2);
    assert_int_equal(outbox_last(&f->p, CHILD2), 1);

    f->time = due + HOUR;
    assert_int_equal(tick(f, &f->p), RC(OK));
    assert_int_equal(outbox_last(&f->p, CHILD), 3);
    assert_int_equal(outbox_last(&f->p, CHILD2), 2);
    rows_pick(&f->p, CHILD2, (const uint64_t[]){2}, 1, &row);
    assert_string_equal(row->kind, "task_supervise");
    fb = cityops__v1__task_feedback__unpack(NULL, row->payload.len,
                                            row->payload.data);
    assert_non_null(fb);
    assert_string_equal(fb->task_id, PARENT "/1");
    assert_string_equal(fb->status, "supervise");
    assert_string_equal(fb->tier_id, CHILD2);
    cityops__v1__task_feedback__free_unpacked(fb, NULL);
    rows_free(&row, 1);
    r = tasks(f, &f->p);
    assert_true(task_find(r, PARENT "/1")->supervised);
    assert_true(task_find(r, PARENT "/2")->supervised);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);

    /* once: a later tick sends nothing more */
    assert_int_equal(tick(f, &f->p), RC(OK));
    assert_int_equal(outbox_last(&f->p, CHILD), 3);
    assert_int_equal(outbox_last(&f->p, CHILD2), 2);

    /* the child marks the task supervised */
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, three, 1),
                     RC(OK));
    assert_string_equal(f->res->message, "applied 1, duplicates 0");
    r = tasks(f, &f->c);
    assert_false(task_find(r, PARENT "/1")->supervised);
    assert_true(task_find(r, PARENT "/2")->supervised);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
}

static void test_a_refused_second_part_command_changes_nothing(void **state)
{
    static const uint64_t one[] = {1};
    static const char *const grand[] = {GRAND};
    static const char *const dup[] = {GRAND, GRAND};
    struct fx *f = *state;
    struct fed_state before;
    struct fed_state after;
    Cityops__V1__Case *c;

    assert_int_equal(assign(f), RC(OK));
    assert_int_equal(report(f, &f->p), RC(OK));
    state_take(f, &before);
    assert_int_equal(forward(f, &f->p, R(INSPECTOR), PARENT "/1", PARENT,
                             grand, 1),
                     RC(PERMISSION_DENIED));
    assert_int_equal(forward(f, &f->p, R(ADMIN), PARENT "/1", PARENT, dup, 2),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(forward(f, &f->p, R(ADMIN), "", PARENT, grand, 1),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(hand_over(f, R(DISPATCHER), 1, CHILD),
                     RC(PERMISSION_DENIED));
    assert_int_equal(publish_at(f, &f->p, R(ADMIN), "", "alarms", "k", "x"),
                     RC(INVALID_ARGUMENT));
    assert_int_equal(to_case(f, &f->p, R(ADMIN), PARENT "/1",
                             CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT),
                     RC(FAILED_PRECONDITION));
    state_take(f, &after);
    state_equal(&before, &after);
    c = case_get(&f->p, 1);
    assert_int_equal(c->state, CITYOPS__V1__CASE_STATE__CASE_STATE_REPORTED);
    assert_string_equal(c->remote_ref, "");
    cityops__v1__case__free_unpacked(c, NULL);
    assert_int_equal(store_case_count(f->p.s), 1);

    /* a bad reply_stream refuses the whole inbound */
    f->reply_stream = "no such link";
    assert_int_equal(deliver(f, &f->p, CHILD, &f->c, PARENT, one, 1),
                     RC(INVALID_ARGUMENT));
    f->reply_stream = NULL;
    assert_int_equal(inbox(&f->c, PARENT), 0);
}

/* A store of schema 4 (no federation databases) opens as the current
 * schema with them empty, and its other state unchanged. */
static void test_a_schema_4_store_gets_empty_federation_databases(
    void **state)
{
    static const char *const dbs[] = {"fed_links",   "fed_tasks",
                                      "fed_inbox",   "fed_witness",
                                      "fed_acked",   "fed_subs",
                                      "fed_received"};
    struct fx *f = *state;
    uint8_t four[8] = {0, 0, 0, 0, 0, 0, 0, 4};
    MDB_val k = {14, "schema_version"};
    MDB_val v = {8, four};
    Cityops__V1__FedTasksResponse *r = NULL;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi db;
    uint64_t schema = 0;

    store_close(f->p.s);
    f->p.s = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, f->p.dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (size_t i = 0; i < sizeof(dbs) / sizeof(*dbs); i++) {
        assert_int_equal(mdb_dbi_open(txn, dbs[i], 0, &db), 0);
        assert_int_equal(mdb_drop(txn, db, 1), 0);
    }
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &db), 0);
    assert_int_equal(mdb_put(txn, db, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(store_open(f->p.dir, NULL, &f->p.s), 0);
    assert_int_equal(store_fed_tasks(f->p.s, f->time, &r), 0);
    assert_int_equal(r->n_tasks, 0);
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    assert_int_equal(assign(f), RC(OK));
    assert_string_equal(f->res->ref, PARENT "/1");

    store_close(f->p.s);
    f->p.s = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, f->p.dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &db), 0);
    assert_int_equal(mdb_get(txn, db, &k, &v), 0);
    for (size_t i = 0; i < v.mv_size; i++) {
        schema = schema << 8 | ((uint8_t *)v.mv_data)[i];
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    assert_int_equal(schema, 7);
    assert_int_equal(store_open(f->p.dir, NULL, &f->p.s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_assign_writes_one_outbox_row_per_child_in_seq_order),
        T(test_inbound_applies_in_order_and_a_redelivery_changes_nothing),
        T(test_a_gap_stops_the_run_and_a_resend_from_the_gap_applies),
        T(test_feedback_reaches_the_origin_latest_per_child),
        T(test_feedback_needs_a_task_received_here_for_this_tier),
        T(test_feedback_on_a_task_assigned_here_is_refused),
        T(test_overdue_until_every_child_is_done_or_rejected),
        T(test_feedback_from_a_tier_not_assigned_is_noted_not_applied),
        T(test_ack_never_moves_backwards),
        T(test_ack_trims_acked_rows_beyond_the_newest_kept),
        T(test_witness_refuses_a_head_that_does_not_grow_the_tree),
        T(test_the_childs_signed_checkpoint_is_witnessed_by_the_parent),
        T(test_unknown_kinds_and_bad_payloads_advance_the_inbox),
        T(test_bad_input_is_refused_and_changes_nothing),
        T(test_every_command_checks_its_role),
        T(test_links_are_added_replaced_listed_and_removed),
        T(test_a_link_keeps_its_allowed_kinds),
        T(test_audit_names_the_federation_targets),
        T(test_a_schema_4_store_gets_empty_federation_databases),
        T(test_forward_sends_the_task_on_and_the_grandchilds_feedback_comes_back),
        T(test_a_received_task_becomes_a_case_once),
        T(test_handover_waits_for_the_peer_to_accept_it),
        T(test_a_declined_handover_leaves_the_case_open),
        T(test_escalation_up_is_accepted_or_declined_by_the_parent),
        T(test_the_assigning_tier_closes_and_reopens_a_task),
        T(test_publications_reach_subscribers_latest_per_key),
        T(test_stats_always_go_to_the_parent_once),
        T(test_a_tick_supervises_overdue_tasks_once_per_late_child),
        T(test_a_refused_second_part_command_changes_nothing),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
