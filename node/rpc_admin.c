/* The Admin service: the city's rules. Apply is a write (one `config`
 * command = one new version, role ADMIN, checked by apply); Get and History
 * are reads like any other (STALE or after a barrier). */
#include <stdio.h>
#include <stdlib.h>

#include "cityops/v1/admin.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

enum { ADMIN_GET = NODE_READ_ADMIN, ADMIN_HISTORY };

static int apply_reply(struct node_write *w,
                       const Cityops__V1__CommandResult *result)
{
    Cityops__V1__ConfigReply reply = CITYOPS__V1__CONFIG_REPLY__INIT;

    reply.version = result->version;
    reply.applied_index = result->index;
    reply.changed = (uint32_t)w->cmd.config->n_changes;
    clog(CLOG_INFO, "admin", "configuration version %llu (%zu changes) by %s",
         (unsigned long long)result->version, w->cmd.config->n_changes,
         w->cmd.actor_id);
    rpc_call_reply(w->call, &reply.base);
    return 0;
}

static void apply_handle(struct rpc_call *call,
                         const ProtobufCMessage *msg,
                         void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__ConfigBatch *req = (const Cityops__V1__ConfigBatch *)msg;

    /* the role goes with the command: apply refuses anything but ADMIN */
    node_write_submit(h->n, call, req->ctx, "ctx.actor_id is required",
                      CITYOPS__V1__COMMAND__OP_CONFIG, (ProtobufCMessage *)msg,
                      sizeof(struct node_write), apply_reply);
}

void node_admin_read(struct node *n, struct rpc_call *call, int kind)
{
    char msg[300];
    int rv;

    if (kind == ADMIN_GET) {
        Cityops__V1__ConfigSnapshot *snap = NULL;
        rv = store_config_get(n->store, &snap);
        if (rv == 0) {
            rpc_call_reply(call, &snap->base);
            cityops__v1__config_snapshot__free_unpacked(snap, NULL);
            return;
        }
    } else {
        const Cityops__V1__ConfigHistoryRequest *req =
            (const Cityops__V1__ConfigHistoryRequest *)rpc_call_request(call);
        Cityops__V1__ConfigHistoryResponse *r = NULL;
        rv = store_config_history(n->store, req->max, &r);
        if (rv == 0) {
            rpc_call_reply(call, &r->base);
            cityops__v1__config_history_response__free_unpacked(r, NULL);
            return;
        }
    }
    snprintf(msg, sizeof msg, "configuration: %s", store_errmsg(n->store));
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

void node_admin_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Admin/Apply",
                    &cityops__v1__config_batch__descriptor,
                    &cityops__v1__config_reply__descriptor, apply_handle, 0);
    node_method_add(n, "/cityops.v1.Admin/Get",
                    &cityops__v1__config_get_request__descriptor,
                    &cityops__v1__config_snapshot__descriptor,
                    node_read_handle, ADMIN_GET);
    node_method_add(n, "/cityops.v1.Admin/History",
                    &cityops__v1__config_history_request__descriptor,
                    &cityops__v1__config_history_response__descriptor,
                    node_read_handle, ADMIN_HISTORY);
}
