/* One logger: one line per event on stderr, level checked before formatting.
 * Prefix with the subsystem and, inside a request, its id:
 *   PS_LOG_INFO("engine", "req=%llu finished tokens=%d ms=%.1f", id, n, ms);
 * Never log an API key, and never a prompt's text above debug. */
#ifndef PS_BASE_LOG_H
#define PS_BASE_LOG_H

typedef enum { PS_LOG_LEVEL_ERROR = 0, PS_LOG_LEVEL_WARN, PS_LOG_LEVEL_INFO, PS_LOG_LEVEL_DEBUG } ps_log_level;

extern ps_log_level ps_log_threshold;

/* Parses "error"|"warn"|"info"|"debug"; returns -1 when unknown. */
int ps_log_parse_level(const char *s);

void ps_log_write(ps_log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define PS_LOG_AT(lvl, subsys, ...)                                    \
    do {                                                               \
        if ((lvl) <= ps_log_threshold) ps_log_write(lvl, subsys, __VA_ARGS__); \
    } while (0)
#define PS_LOG_ERROR(s, ...) PS_LOG_AT(PS_LOG_LEVEL_ERROR, s, __VA_ARGS__)
#define PS_LOG_WARN(s, ...) PS_LOG_AT(PS_LOG_LEVEL_WARN, s, __VA_ARGS__)
#define PS_LOG_INFO(s, ...) PS_LOG_AT(PS_LOG_LEVEL_INFO, s, __VA_ARGS__)
#define PS_LOG_DEBUG(s, ...) PS_LOG_AT(PS_LOG_LEVEL_DEBUG, s, __VA_ARGS__)

#endif
