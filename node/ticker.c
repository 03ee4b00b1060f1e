/* The clock tick: while this node leads, propose a Tick command every
 * [cases] tick_ms so that apply marks overdue stages with the leader's time
 * (apply never reads a clock). A tick lost to a leadership change is simply
 * the next one's work. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "cityops/v1/command.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"
#include "proto/deadline_ts.h"

struct node_ticker {
    struct node *n;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;
    int inflight;
    Cityops__V1__Command cmd;
    Cityops__V1__Tick tick;
};

static void tick_done(void *arg,
                      int rv,
                      const Cityops__V1__CommandResult *result,
                      uint64_t leader_id)
{
    struct node_ticker *t = arg;

    (void)leader_id;
    if (rv == 0 && result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        clog(CLOG_WARN, "ticker", "tick refused: %s", result->message);
    }
    pthread_mutex_lock(&t->lock);
    t->inflight = 0; /* the next tick waits for its time */
    pthread_mutex_unlock(&t->lock);
}

static void *ticker_main(void *arg)
{
    struct node_ticker *t = arg;
    struct node *n = t->n;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        struct cons_status st;
        struct timespec ts;

        cons_status_get(n->cons, &st);
        if (st.state == CONS_STATE_LEADER && !t->inflight) {
            t->inflight = 1;
            pthread_mutex_unlock(&t->lock);
            if (cons_submit(n->cons, &t->cmd, n->cfg.write_wait_ms, tick_done,
                            t) != 0) {
                pthread_mutex_lock(&t->lock);
                t->inflight = 0;
            } else {
                pthread_mutex_lock(&t->lock);
            }
        }
        deadline_ts(CLOCK_REALTIME, n->cfg.tick_ms, &ts);
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
    }
    /* a tick in flight is answered (CONS_SHUTDOWN at worst) by cons_stop */
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int node_ticker_start(struct node *n, struct node_ticker **out)
{
    struct node_ticker *t = calloc(1, sizeof *t);

    if (t == NULL) {
        return NODE_NOMEM;
    }
    t->n = n;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    cityops__v1__tick__init(&t->tick);
    cityops__v1__command__init(&t->cmd);
    t->cmd.actor_id = "cityopsd";
    t->cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    t->cmd.op_case = CITYOPS__V1__COMMAND__OP_TICK;
    t->cmd.tick = &t->tick;
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return NODE_START;
    }
    *out = t;
    return 0;
}

void node_ticker_stop(struct node_ticker *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->stopping = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
}

/* After cons_stop(): no callback can run any more. */
void node_ticker_free(struct node_ticker *t)
{
    if (t == NULL) {
        return;
    }
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
