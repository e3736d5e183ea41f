#!/usr/bin/env bash
# The compose `rabbitmq` service's entrypoint: renders definitions.json (the
# broker users of ssehub's roles, their permissions, the vhosts) with the
# passwords from the environment, then starts RabbitMQ as the image does.
# RabbitMQ imports the file at every boot (ssehub.conf: load_definitions), so
# a changed password takes effect at the next restart; on a new node no
# `guest` user is created (the definitions replace the default user).
#
# Passwords: 16 or more of A-Z a-z 0-9 . _ ~ - (they go into amqp:// URLs
# as they are); deploy/compose-env writes random ones to .env.
set -euo pipefail

# (the two paths are variables for tests/test_deploy_local.py)
template=${DEFINITIONS_TEMPLATE:-/etc/rabbitmq/ssehub/definitions.json}
out=${DEFINITIONS_OUT:-/tmp/ssehub-definitions.json}
json=$(<"$template")
for name in RABBITMQ_ADMIN_PASSWORD RABBITMQ_DISPATCHER_PASSWORD RABBITMQ_EDGE_PASSWORD \
    RABBITMQ_PUBLISHER_PASSWORD RABBITMQ_SANDBOX_PASSWORD; do
    value=${!name:-}
    if [[ ! $value =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
        echo "rabbitmq: $name must be 16 or more of A-Z a-z 0-9 . _ ~ - (deploy/compose-env writes one)" >&2
        exit 1
    fi
    json=${json//"\${$name}"/$value}
done
if [[ $json == *'${'* ]]; then
    echo "rabbitmq: $template names a password this entrypoint does not set" >&2
    exit 1
fi
(umask 077 && printf '%s\n' "$json" >"$out")
# The image's entrypoint steps down from root to the rabbitmq user.
if [ "$(id -u)" = 0 ]; then chown rabbitmq:rabbitmq "$out"; fi
exec docker-entrypoint.sh "$@"
