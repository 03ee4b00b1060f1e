/* The reader thread: reads that follow a Raft barrier (LINEARIZABLE, or a
 * min_index not applied yet) are handed here by the barrier's callback. The
 * callback runs on the Raft loop thread, which must not scan the store (a
 * long List or a state digest would stall heartbeats and cost the
 * leadership); the completion-queue thread must not either, since it serves
 * every call. One thread, a FIFO of jobs; stop() runs what is queued, then
 * joins. */
#include <pthread.h>
#include <stdlib.h>

#include "proto/clog.h"
#include "node_internal.h"

struct reader_job {
    void (*fn)(void *arg);
    void *arg;
    struct reader_job *next;
};

struct node_reader {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct reader_job *head;
    struct reader_job *tail;
    int stop;
};

static void *reader_thread(void *arg)
{
    struct node_reader *r = arg;
    struct reader_job *job;

    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (r->head == NULL && !r->stop) {
            pthread_cond_wait(&r->cond, &r->lock);
        }
        job = r->head;
        if (job == NULL) {
            break; /* stopping and drained */
        }
        r->head = job->next;
        if (r->head == NULL) {
            r->tail = NULL;
        }
        pthread_mutex_unlock(&r->lock);
        job->fn(job->arg);
        free(job);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int node_reader_start(struct node *n)
{
    struct node_reader *r = calloc(1, sizeof *r);

    if (r == NULL) {
        return NODE_NOMEM;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, reader_thread, r) != 0) {
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        free(r);
        return NODE_START;
    }
    n->reader = r;
    return 0;
}

void node_reader_stop(struct node *n)
{
    struct node_reader *r = n->reader;

    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
    n->reader = NULL;
}

void node_reader_post(struct node *n, void (*fn)(void *arg), void *arg)
{
    struct node_reader *r = n->reader;
    struct reader_job *job = malloc(sizeof *job);

    if (job == NULL || r == NULL) {
        /* No memory for the job: run it here rather than lose the call. */
        free(job);
        clog(CLOG_WARN, "node", "reader queue unavailable; reading inline");
        fn(arg);
        return;
    }
    job->fn = fn;
    job->arg = arg;
    job->next = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->tail != NULL) {
        r->tail->next = job;
    } else {
        r->head = job;
    }
    r->tail = job;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}
