/* The proposal queue: a mutex-protected FIFO of work items from any thread to
 * the loop thread.
 *
 * Pushers wake the loop with uv_async_send() while still holding the mutex,
 * and cons_queue_shut() marks the queue closed under the same mutex before the
 * loop closes its async handle, so no thread can signal a closed handle. */
#include <assert.h>
#include <stddef.h>

#include "consensus/cons_internal.h"

int cons_queue_init(struct cons_queue *q)
{
    if (pthread_mutex_init(&q->mutex, NULL) != 0) {
        return CONS_NOMEM;
    }
    q->head = NULL;
    q->tail = NULL;
    q->closed = 0;
    return 0;
}

void cons_queue_close(struct cons_queue *q)
{
    assert(q->head == NULL);
    pthread_mutex_destroy(&q->mutex);
}

int cons_queue_push(struct cons_queue *q,
                    struct cons_work *w,
                    int (*notify)(void *),
                    void *notify_arg)
{
    int rv = 0;

    w->next = NULL;
    pthread_mutex_lock(&q->mutex);
    if (q->closed) {
        rv = CONS_SHUTDOWN;
        goto out_unlock;
    }
    if (q->tail == NULL) {
        q->head = w;
    } else {
        q->tail->next = w;
    }
    q->tail = w;
    notify(notify_arg);
out_unlock:
    pthread_mutex_unlock(&q->mutex);
    return rv;
}

struct cons_work *cons_queue_take(struct cons_queue *q)
{
    struct cons_work *list;

    pthread_mutex_lock(&q->mutex);
    list = q->head;
    q->head = NULL;
    q->tail = NULL;
    pthread_mutex_unlock(&q->mutex);
    return list;
}

void cons_queue_shut(struct cons_queue *q,
                     int (*notify)(void *),
                     void *notify_arg)
{
    pthread_mutex_lock(&q->mutex);
    q->closed = 1;
    notify(notify_arg);
    pthread_mutex_unlock(&q->mutex);
}

int cons_queue_is_shut(struct cons_queue *q)
{
    int closed;

    pthread_mutex_lock(&q->mutex);
    closed = q->closed;
    pthread_mutex_unlock(&q->mutex);
    return closed;
}
