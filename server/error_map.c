/* ps_status -> HTTP status + OpenAI error type, in one table (STYLE.md 4). */
#include "error_map.h"

http_error_kind http_error_for(ps_status s) {
    switch (s) {
    case PS_OK: return (http_error_kind){200, NULL, NULL};
    case PS_EINVAL: return (http_error_kind){400, "invalid_request_error", NULL};
    case PS_EFORMAT: return (http_error_kind){400, "invalid_request_error", "invalid_format"};
    case PS_ENOTFOUND: return (http_error_kind){404, "invalid_request_error", "model_not_found"};
    case PS_ETOOLARGE: return (http_error_kind){413, "invalid_request_error", "context_length_exceeded"};
    case PS_EBUSY: return (http_error_kind){429, "rate_limit_error", "server_busy"};
    case PS_ENOTSUP: return (http_error_kind){501, "not_implemented_error", "not_implemented"};
    case PS_ECANCELED: return (http_error_kind){499, "invalid_request_error", "cancelled"};
    case PS_ESHUTDOWN: return (http_error_kind){503, "server_error", "shutting_down"};
    case PS_EDEVICE: return (http_error_kind){503, "server_error", "device_error"};
    case PS_ENOMEM: return (http_error_kind){503, "server_error", "out_of_memory"};
    case PS_EIO: return (http_error_kind){500, "server_error", "io_error"};
    case PS_EEXIST: return (http_error_kind){409, "invalid_request_error", "already_exists"};
    }
    return (http_error_kind){500, "server_error", NULL};
}
