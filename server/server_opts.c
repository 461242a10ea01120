/* Defaults for server_opts: flags override them (cli.c). Kept apart from
 * server.c so flag parsing links without the engine. */
#include "server.h"

server_opts server_opts_default(void) {
    server_opts o = {0};
    o.host = "127.0.0.1";
    o.port = 8080;
    o.http_threads = 32;
    o.max_body = 4u << 20;       /* a ctx-length prompt as text or ids is well under this */
    o.clip_max_body = 32u << 20; /* a large photo, base64-encoded */
    o.default_max_tokens = 512;  /* long enough to be useful, short enough on a CPU */
    o.shutdown_grace_s = 10;
    o.max_upload = (size_t)2 << 30; /* a 7B LoRA at r=64 in F32 is ~640 MB */
    return o;
}
