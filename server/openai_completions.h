/* POST /v1/completions: OpenAI's legacy completions API (raw prompt). */
#ifndef PS_SERVER_OPENAI_COMPLETIONS_H
#define PS_SERVER_OPENAI_COMPLETIONS_H

#include "http.h"

int openai_completions_handle(http_req *rq);

#endif
