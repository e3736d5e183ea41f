/* The floor's publisher: `rate` events/s for `duration` s to sse.events, persistent,
 * confirms pipelined (at most `window` messages unconfirmed), round-robin over
 * `users` users named <prefix><6 digits>. batch=0: one event per message,
 * routing key user.<id>; batch=K: `batch` messages of at most K items, sent when
 * full or when the oldest has waited `linger` µs (default 5,000).
 * Each event's "t" is the wall clock (µs) at which it was due, so a publisher
 * that falls behind shows up in the latency. Prints one JSON line. */
#include "common.h"

#include <amqp_framing.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int64_t confirmed, nacked;

/* Read what the broker sent (confirms) for at most timeout_us. We wait in ppoll()
 * ourselves: librabbitmq 0.11's amqp_simple_wait_frame_noblock() returns at once
 * whatever its timeout, and the publisher spun a whole core at 1,000 msgs/s,
 * leaving the stack under test one core of this 2-core machine. */
static void drain(amqp_connection_state_t conn, int64_t timeout_us) {
    for (;;) {
        if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn)) {
            struct pollfd p = {.fd = amqp_get_sockfd(conn), .events = POLLIN};
            struct timespec ts = {timeout_us / 1000000, (timeout_us % 1000000) * 1000};
            int ready = ppoll(&p, 1, &ts, NULL);
            if (ready < 0 && errno != EINTR) die("confirms", strerror(errno));
            if (ready <= 0) return;
        }
        amqp_frame_t frame;
        struct timeval tv = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) return; /* a partial frame: the rest comes later */
        if (rc != AMQP_STATUS_OK) die("confirms", amqp_error_string2(rc));
        timeout_us = 0; /* then only what is already there */
        if (frame.frame_type != AMQP_FRAME_METHOD) continue;
        amqp_method_number_t id = frame.payload.method.id;
        if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
            uint64_t tag;
            if (id == AMQP_BASIC_ACK_METHOD) {
                tag = ((amqp_basic_ack_t *)frame.payload.method.decoded)->delivery_tag;
            } else {
                tag = ((amqp_basic_nack_t *)frame.payload.method.decoded)->delivery_tag;
                nacked++;
            }
            /* RabbitMQ confirms in publish order: the highest tag is the count */
            if ((int64_t)tag > confirmed) confirmed = (int64_t)tag;
        } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
            die("publish", "broker closed the channel");
        }
    }
}

static int item(char *out, size_t cap, int batched, const char *user, int64_t t, int64_t n,
                const char *pad, const char *run) {
    if (batched)
        return snprintf(out, cap,
                        "{\"user\":\"%s\",\"event\":\"bench\",\"data\":{\"t\":%lld,\"n\":%lld,"
                        "\"p\":\"%s\"},\"id\":\"%s-%lld\"}",
                        user, (long long)t, (long long)n, pad, run, (long long)n);
    return snprintf(out, cap,
                    "{\"event\":\"bench\",\"data\":{\"t\":%lld,\"n\":%lld,\"p\":\"%s\"},"
                    "\"id\":\"%s-%lld\"}",
                    (long long)t, (long long)n, pad, run, (long long)n);
}

int main(int argc, char **argv) {
    double rate = atof(arg(argc, argv, "rate", "1000"));
    double duration = atof(arg(argc, argv, "duration", "5"));
    int users = atoi(arg(argc, argv, "users", "1000"));
    int batch = atoi(arg(argc, argv, "batch", "0"));
    int64_t window = atoll(arg(argc, argv, "window", "1000"));
    int64_t linger = atoll(arg(argc, argv, "linger", "5000")); /* µs, batch>0 only */
    const char *prefix = arg(argc, argv, "prefix", "floor");
    const char *run = arg(argc, argv, "run", "f");
    const char *exchange = arg(argc, argv, "exchange", "sse.events");
    int padn = atoi(arg(argc, argv, "pad", "64"));
    if (rate <= 0 || duration <= 0 || users <= 0 || batch < 0 || window <= 0 || padn > 1000)
        die("arguments", "rate, duration, users > 0; batch >= 0; pad <= 1000");
    char pad[1001];
    memset(pad, 'x', padn);
    pad[padn] = 0;

    amqp_connection_state_t conn = floor_connect(argc, argv);
    amqp_confirm_select(conn, 1);
    check_rpc(conn, "confirm.select");

    amqp_basic_properties_t props;
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2;

    int per = batch > 0 ? batch : 1;
    size_t cap = (size_t)per * (300 + padn) + 16;
    char *body = malloc(cap);
    char user[160], rkey[200];
    int64_t total = (int64_t)(rate * duration), sent = 0, messages = 0;
    int64_t t0 = mono_us(), w0 = wall_us();
    double c0 = cpu_s();
    while (sent < total) {
        int64_t due = (int64_t)(rate * (mono_us() - t0) / 1e6);
        if (due > total) due = total;
        /* a batch goes once it is full, or once its oldest event has waited
         * `linger` µs (as ssehub.Publisher's coalescing would), or is the last */
        while (messages - confirmed < window && sent < due) {
            int64_t ready = due - sent;
            int64_t oldest = t0 + (int64_t)(sent * 1e6 / rate);
            if (ready < per && ready < total - sent && mono_us() - oldest < linger) break;
            int k = per < ready ? per : (int)ready;
            size_t len = 0;
            if (batch) body[len++] = '[';
            for (int j = 0; j < k; j++) {
                int64_t n = sent + j;
                snprintf(user, sizeof user, "%s%06d", prefix, (int)(n % users));
                int64_t t = w0 + (int64_t)(n * 1e6 / rate);
                if (j) body[len++] = ',';
                len += item(body + len, cap - len, batch > 0, user, t, n, pad, run);
            }
            if (batch) body[len++] = ']';
            if (batch) {
                snprintf(rkey, sizeof rkey, "batch");
            } else {
                snprintf(rkey, sizeof rkey, "user.%s", user);
            }
            amqp_bytes_t b = {len, body};
            int rc = amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange),
                                        amqp_cstring_bytes(rkey), 0, 0, &props, b);
            if (rc != AMQP_STATUS_OK) die("publish", amqp_error_string2(rc));
            messages++;
            sent += k;
        }
        /* read confirms until the next message is due: ticks of 1 to 5 ms, so
         * at high rates a tick's messages go out back to back */
        int64_t next = t0 + (int64_t)((sent + per) * 1e6 / rate) - mono_us(); /* full */
        if (batch) {
            int64_t lingered = t0 + (int64_t)(sent * 1e6 / rate) + linger - mono_us();
            if (lingered < next) next = lingered;
        }
        if (messages - confirmed >= window || next > 5000) next = 5000;
        drain(conn, next < 1000 ? 1000 : next);
    }
    int64_t deadline = mono_us() + 60 * 1000000LL;
    while (confirmed < messages && mono_us() < deadline) drain(conn, 100000);
    double elapsed = (mono_us() - t0) / 1e6;
    double cpu = cpu_s() - c0;
    floor_close(conn);
    printf("{\"sent\":%lld,\"messages\":%lld,\"confirmed\":%lld,\"nacked\":%lld,"
           "\"elapsed\":%.4f,\"cpu_s\":%.4f,\"rate\":%.1f}\n",
           (long long)sent, (long long)messages, (long long)confirmed, (long long)nacked, elapsed,
           cpu, rate);
    return confirmed == messages && nacked == 0 ? 0 : 1;
}
