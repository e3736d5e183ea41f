/* What the floor's publisher and consumer share: arguments, the connection, clocks. */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* key=value arguments: arg(argc, argv, "rate", "1000") */
static const char *arg(int argc, char **argv, const char *key, const char *dflt) {
    size_t n = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    return dflt;
}

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "floor: %s: %s\n", what, detail);
    exit(2);
}

static void check_rpc(amqp_connection_state_t conn, const char *what) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) die(what, amqp_error_string2(r.library_error));
    die(what, "server error");
}

/* host, port, vhost, user, pass from the arguments; channel 1 open. */
static amqp_connection_state_t floor_connect(int argc, char **argv) {
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock) die("socket", "cannot create");
    const char *host = arg(argc, argv, "host", "127.0.0.1");
    int port = atoi(arg(argc, argv, "port", "5672"));
    if (amqp_socket_open(sock, host, port) != AMQP_STATUS_OK) die("connect", host);
    amqp_rpc_reply_t r = amqp_login(conn, arg(argc, argv, "vhost", "/"), 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, arg(argc, argv, "user", "guest"),
                                    arg(argc, argv, "pass", "guest"));
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die("login", "refused");
    amqp_channel_open(conn, 1);
    check_rpc(conn, "channel.open");
    return conn;
}

static void floor_close(amqp_connection_state_t conn) {
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

#endif
