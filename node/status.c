/* The one place where cityops error codes become gRPC statuses. */
#include "node_internal.h"

grpc_status_code node_status_from_err(int rv)
{
    switch (rv) {
    case 0:
        return GRPC_STATUS_OK;
    case CONS_NOTLEADER:
    case CONS_NOLEADER:
    case CONS_LEADERSHIPLOST:
    case CONS_SHUTDOWN:
        return GRPC_STATUS_UNAVAILABLE;
    case CONS_TOOBIG:
    case CONS_STOREFAIL:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case CONS_CANTCHANGE:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case CONS_NOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case CONS_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case CONS_TIMEOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case CONS_INVALID:
    case STORE_INVALID:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case STORE_NOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case STORE_CORRUPT:
        return GRPC_STATUS_DATA_LOSS;
    case STORE_FULL:
    case STORE_NOMEM:
    case CONS_NOMEM:
    case NODE_NOMEM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case STORE_BUSY:
        return GRPC_STATUS_UNAVAILABLE;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

grpc_status_code node_status_from_result(Cityops__V1__ResultCode code)
{
    switch (code) {
    case CITYOPS__V1__RESULT_CODE__RESULT_OK:
        return GRPC_STATUS_OK;
    case CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case CITYOPS__V1__RESULT_CODE__RESULT_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case CITYOPS__V1__RESULT_CODE__RESULT_ALREADY_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED:
        return GRPC_STATUS_PERMISSION_DENIED;
    case CITYOPS__V1__RESULT_CODE__RESULT_FAILED_PRECONDITION:
        return GRPC_STATUS_FAILED_PRECONDITION;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

const char *node_strerror(int rv)
{
    switch (rv) {
    case 0:
        return "ok";
    case NODE_NOMEM:
        return "out of memory";
    case NODE_CONFIG:
        return "invalid configuration";
    case NODE_START:
        return "a component failed to start";
    default:
        return "unknown node error";
    }
}
