/* The floor's consumer: a durable queue `queue` bound to sse.events with `bind`,
 * prefetch `prefetch`, acked every `ack_every` messages (multiple). Every
 * "t": (µs wall clock) in a body is one event: its latency is now − t. Prints
 * "ready" once consuming, then one JSON line when `expect` events arrived or
 * none came for `idle` seconds. */
#include "common.h"

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *queue = arg(argc, argv, "queue", "bench.floor");
    const char *bind = arg(argc, argv, "bind", "#");
    const char *exchange = arg(argc, argv, "exchange", "sse.events");
    int64_t expect = atoll(arg(argc, argv, "expect", "0"));
    double idle = atof(arg(argc, argv, "idle", "10"));
    int prefetch = atoi(arg(argc, argv, "prefetch", "2000"));
    int ack_every = atoi(arg(argc, argv, "ack_every", "500"));
    if (ack_every <= 0 || prefetch < 0) die("arguments", "ack_every > 0, prefetch >= 0");

    amqp_connection_state_t conn = floor_connect(argc, argv);
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    check_rpc(conn, "queue.declare");
    amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(bind), amqp_empty_table);
    check_rpc(conn, "queue.bind");
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    check_rpc(conn, "basic.qos");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    check_rpc(conn, "basic.consume");
    printf("ready\n");
    fflush(stdout);

    size_t cap = 1 << 16, n = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    int64_t messages = 0, unacked = 0, last_tag = 0, first_us = 0, last_us = 0;
    int64_t last_seen = mono_us();
    double c0 = cpu_s();
    while (expect <= 0 || (int64_t)n < expect) {
        amqp_envelope_t env;
        struct timeval tv = {0, 100000};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
            if (unacked) { /* a quiet moment: settle what is pending */
                amqp_basic_ack(conn, 1, (uint64_t)last_tag, 1);
                unacked = 0;
            }
            if ((mono_us() - last_seen) / 1e6 > idle) break;
            continue;
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) die("consume", "connection lost");
        int64_t now = wall_us();
        last_seen = mono_us();
        if (!first_us) first_us = now;
        last_us = now;
        const char *p = env.message.body.bytes, *end = p + env.message.body.len;
        while ((p = memmem(p, end - p, "\"t\":", 4)) != NULL) {
            p += 4;
            if (n == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
            lat[n++] = now - strtoll(p, NULL, 10);
        }
        messages++;
        last_tag = (int64_t)env.delivery_tag;
        if (++unacked >= ack_every) {
            amqp_basic_ack(conn, 1, (uint64_t)last_tag, 1);
            unacked = 0;
        }
        amqp_destroy_envelope(&env);
    }
    if (unacked) amqp_basic_ack(conn, 1, (uint64_t)last_tag, 1);
    double cpu = cpu_s() - c0;
    floor_close(conn);
    qsort(lat, n, sizeof *lat, cmp);
#define Q(q) (n ? lat[(size_t)((q) * n) < n ? (size_t)((q) * n) : n - 1] : 0)
    printf("{\"received\":%zu,\"messages\":%lld,\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld,"
           "\"first_us\":%lld,\"last_us\":%lld,\"cpu_s\":%.4f}\n",
           n, (long long)messages, (long long)Q(0.5), (long long)Q(0.99),
           (long long)(n ? lat[n - 1] : 0), (long long)first_us, (long long)last_us, cpu);
    return 0;
}
