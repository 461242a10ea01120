/* POST /v1/chat/completions: OpenAI's chat completions API. */
#ifndef PS_SERVER_OPENAI_CHAT_H
#define PS_SERVER_OPENAI_CHAT_H

#include "http.h"

int openai_chat_handle(http_req *rq);

#endif
