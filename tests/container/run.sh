#!/usr/bin/env bash
# Container test: build the image, check its size and user, do an MQTT
# round trip against one container, then (once the cluster is in the
# binary) form a three-node cluster on a user-defined Docker network, route
# a message across it, stop one node gracefully, kill another, and check the
# last one still serves.
#
#   bash tests/container/run.sh            # from the repository root
#
# Env: TERN_IMAGE (default tern:test), SKIP_BUILD=1 (use an existing image),
#      MAX_IMAGE_MB (default 30).
# Needs docker, curl, python3, mosquitto_pub/mosquitto_sub. Everything it
# starts carries the label tern.container-test and is removed on exit,
# also on failure or interruption. Containers talk only among themselves
# and to the host through ports published on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${TERN_IMAGE:-tern:test}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-30}
RUN_ID="tern-ct-$$"
LABEL="tern.container-test=$RUN_ID"
NETWORK="$RUN_ID-net"
PASSED=0
FAILED=0
SKIPPED=0

log() { echo "container-test: $*" >&2; }
ok() { PASSED=$((PASSED + 1)); log "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL: $*"; exit 1; }

cleanup() {
    local ids
    ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
}
summary() {
    local rc=$?
    cleanup
    echo "container: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    exit "$rc"
}
trap summary EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- helpers ---------------------------------------------------------------------

host_port() { # container, container port -> published 127.0.0.1 port
    docker port "$1" "$2/tcp" | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -1
}

wait_http() { # url, seconds
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.3
    done
}

dump_logs() {
    local c
    for c in "$@"; do
        log "--- logs of $c"
        docker logs --tail 40 "$c" 2>&1 | sed 's/^/    /' >&2 || true
    done
}

# Subscribe on (sub_port), publish on (pub_port) until the subscriber has the
# message or the deadline passes: routes across a cluster take a moment.
# Credentials for the MQTT clients: the image requires them (set below for
# the single container; the cluster opts into anonymous access).
CRED=()

round_trip() { # pub_port sub_port topic payload seconds
    local pub=$1 sub=$2 topic=$3 payload=$4 secs=$5 out pid deadline
    out=$(mktemp)
    mosquitto_sub "${CRED[@]}" -h 127.0.0.1 -p "$sub" -t "$topic" -q 1 -C 1 -W "$secs" -i "sub-$RUN_ID-$RANDOM" >"$out" 2>/dev/null &
    pid=$!
    deadline=$((SECONDS + secs))
    sleep 0.3
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        mosquitto_pub "${CRED[@]}" -h 127.0.0.1 -p "$pub" -t "$topic" -q 1 -m "$payload" -i "pub-$RUN_ID-$RANDOM" 2>/dev/null || true
        sleep 0.5
    done
    wait "$pid" || true
    if [ "$(cat "$out")" = "$payload" ]; then rm -f "$out"; return 0; fi
    log "expected '$payload' on $topic, got '$(cat "$out")'"
    rm -f "$out"; return 1
}

# --- image -----------------------------------------------------------------------

cleanup
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "making the local base images if missing"
    bash docker/make-base-images.sh
    # Plain builds: BuildKit may be unavailable (no buildx plugin).
    if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi
    log "docker build -t $IMAGE ."
    start=$SECONDS
    docker build --force-rm -q -t "$IMAGE" . >/dev/null || fail "docker build"
    ok "image built in $((SECONDS - start)) s"
fi

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
size_mb=$(python3 -c "print(f'{$size/1e6:.1f}')")
log "image $IMAGE: $size bytes ($size_mb MB)"
[ "$size" -lt $((MAX_IMAGE_MB * 1000 * 1000)) ] || fail "image is $size_mb MB, over $MAX_IMAGE_MB MB"
ok "image size $size_mb MB < $MAX_IMAGE_MB MB"

user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
[ "$user" = "10000:10000" ] || fail "image USER is '$user', want 10000:10000"
entry=$(docker image inspect -f '{{json .Config.Entrypoint}}' "$IMAGE")
[ "$entry" = '["/usr/local/bin/tern"]' ] || fail "entrypoint is $entry"
for p in 1883 8883 8888 44053; do
    docker image inspect -f '{{json .Config.ExposedPorts}}' "$IMAGE" | grep -q "\"$p/tcp\"" || fail "port $p not exposed"
done
ok "USER 10000:10000, entrypoint tern, ports 1883 8883 8888 44053 exposed"

docker run --rm --label "$LABEL" "$IMAGE" --version | grep -q '^tern ' || fail "tern --version"
docker run --rm --label "$LABEL" "$IMAGE" --print-default-config >/dev/null || fail "--print-default-config"
if docker run --rm --label "$LABEL" --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
    fail "the runtime image has a shell"
fi
ok "tern --version and --print-default-config run; no shell in the image"

# --- one container with the defaults ---------------------------------------------

# The image requires credentials: a password file made by the image's own
# `tern passwd`, mounted as the chart mounts its Secret.
auth_dir=$(mktemp -d)
chmod 777 "$auth_dir"
mqtt_pass=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
docker run --rm --label "$LABEL" -v "$auth_dir:/auth" "$IMAGE" passwd -c -b /auth/passwd alice "$mqtt_pass" \
    || fail "tern passwd in the image"
chmod 755 "$auth_dir" && chmod 644 "$auth_dir/passwd"
single="$RUN_ID-single"
docker run -d --name "$single" --label "$LABEL" -p 127.0.0.1::1883 -p 127.0.0.1::8888 \
    -v "$auth_dir:/etc/tern/auth:ro" -e TERN_AUTH__PASSWORD_FILE=/etc/tern/auth/passwd "$IMAGE" >/dev/null
mqtt=$(host_port "$single" 1883); admin=$(host_port "$single" 8888)
wait_http "http://127.0.0.1:$admin/health" 30 || { dump_logs "$single"; fail "/health did not answer"; }
if mosquitto_pub -h 127.0.0.1 -p "$mqtt" -t ct/anon -m x -q 1 -i "anon-$RUN_ID" 2>/dev/null; then
    dump_logs "$single"; fail "the image accepted an anonymous client"
fi
if mosquitto_pub -u alice -P wrong -h 127.0.0.1 -p "$mqtt" -t ct/anon -m x -q 1 -i "wrong-$RUN_ID" 2>/dev/null; then
    dump_logs "$single"; fail "the image accepted a wrong password"
fi
ok "the image refuses anonymous clients and wrong passwords by default"
CRED=(-u alice -P "$mqtt_pass")
pid=$(docker inspect -f '{{.State.Pid}}' "$single")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 10000 ] || fail "tern runs as uid $uid"
ok "single container healthy, tern runs as uid 10000"
round_trip "$mqtt" "$mqtt" "ct/single" "hello from $RUN_ID" 15 || { dump_logs "$single"; fail "MQTT round trip"; }
ok "MQTT round trip through 127.0.0.1:$mqtt (mosquitto_pub -> mosquitto_sub)"
kept="kept across a restart $RUN_ID"
mosquitto_pub "${CRED[@]}" -h 127.0.0.1 -p "$mqtt" -t ct/kept -m "$kept" -r -q 1 -i "kept-$RUN_ID" \
    || { dump_logs "$single"; fail "retained publish"; }
docker stop -t 20 "$single" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$single")
[ "$code" = 0 ] || { dump_logs "$single"; fail "tern exited $code on SIGTERM"; }
ok "docker stop: SIGTERM drains, exit code 0"
# Durable by default: the data directory is on the image's volume, which
# the same container keeps across a stop and start.
docker start "$single" >/dev/null
mqtt=$(host_port "$single" 1883); admin=$(host_port "$single" 8888)
wait_http "http://127.0.0.1:$admin/health" 30 || { dump_logs "$single"; fail "/health after docker start"; }
got=$(mosquitto_sub "${CRED[@]}" -h 127.0.0.1 -p "$mqtt" -t ct/kept -C 1 -W 10 -i "kept-sub-$RUN_ID" 2>/dev/null || true)
[ "$got" = "$kept" ] || { dump_logs "$single"; fail "retained message after a restart: got '$got'"; }
ok "a retained message survives docker stop and start (TERN_STORAGE__DIR=/var/lib/tern, a VOLUME)"
docker stop -t 20 "$single" >/dev/null
docker rm -v "$single" >/dev/null
rm -rf "$auth_dir"
CRED=()

# --- three containers, one cluster ------------------------------------------------

if ! docker run --rm --label "$LABEL" "$IMAGE" --print-default-config | grep -q '^\[cluster\]'; then
    SKIPPED=$((SKIPPED + 1))
    echo "SKIPPED: cluster not available (no [cluster] section in tern --print-default-config)"
    exit 0
fi

docker network create --label "$LABEL" "$NETWORK" >/dev/null
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The admin API answers the host (not loopback inside the container) only
# with a key: one management key in a mounted key file, as the chart does.
api_key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_dir=$(mktemp -d)
printf '%s mgmt,metrics\n' "$api_key" >"$key_dir/api-keys"
chmod 755 "$key_dir" && chmod 644 "$key_dir/api-keys"
nodes=(tern1 tern2 tern3)
for n in "${nodes[@]}"; do
    peers=$(for m in "${nodes[@]}"; do [ "$m" = "$n" ] || printf '%s:44053,' "$m"; done)
    docker run -d --name "$RUN_ID-$n" --hostname "$n" --network "$NETWORK" --network-alias "$n" \
        --label "$LABEL" -p 127.0.0.1::1883 -p 127.0.0.1::8888 \
        -e TERN_NODE__NAME="$n" \
        -e TERN_CLUSTER__ENABLED=true \
        -e TERN_CLUSTER__BIND=0.0.0.0:44053 \
        -e TERN_CLUSTER__PEERS="${peers%,}" \
        -e TERN_CLUSTER__SECRET="$secret" \
        -e TERN_AUTH__ALLOW_ANONYMOUS=true \
        -v "$key_dir:/etc/tern/admin:ro" \
        -e TERN_ADMIN__API_KEYS_FILE=/etc/tern/admin/api-keys \
        -e TERN_ADMIN_API_KEY_FILE=/etc/tern/admin/api-keys \
        "$IMAGE" >/dev/null
done
declare -A MQTT ADMIN
for n in "${nodes[@]}"; do
    MQTT[$n]=$(host_port "$RUN_ID-$n" 1883)
    ADMIN[$n]=$(host_port "$RUN_ID-$n" 8888)
done

show() { curl -fsS --max-time 2 -H "Authorization: Bearer $api_key" "http://127.0.0.1:${ADMIN[$1]}/api/v1/cluster/show"; }
peers_up() { # node -> number of peers in state up
    show "$1" 2>/dev/null | python3 -c 'import json,sys; print(sum(p.get("state") == "up" for p in json.load(sys.stdin).get("peers", [])))' 2>/dev/null || echo 0
}

wait_http "http://127.0.0.1:${ADMIN[tern1]}/health" 30 || { dump_logs "$RUN_ID-tern1"; fail "tern1 did not start"; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $api_key" "http://127.0.0.1:${ADMIN[tern1]}/api/v1/cluster/show")
if [ "$code" = 404 ]; then
    SKIPPED=$((SKIPPED + 1))
    echo "SKIPPED: cluster not available (GET /api/v1/cluster/show answers 404)"
    exit 0
fi

deadline=$((SECONDS + 60))
for n in "${nodes[@]}"; do
    until [ "$(peers_up "$n")" -ge 2 ]; do
        if [ $SECONDS -ge $deadline ]; then
            show "$n" >&2 || true
            dump_logs "$RUN_ID-tern1" "$RUN_ID-tern2" "$RUN_ID-tern3"
            fail "$n does not see two peers up"
        fi
        sleep 0.5
    done
done
ok "three containers found each other by DNS name (static peers): every node sees 2 peers up"

# The operator's view, as `kubectl exec tern-0 -- tern admin cluster show` would give it.
table=$(docker exec "$RUN_ID-tern1" /usr/local/bin/tern admin cluster show) || fail "tern admin cluster show"
echo "$table" | sed 's/^/    /' >&2
for n in tern2 tern3; do
    echo "$table" | grep "$n" | grep -qw up || fail "tern admin cluster show does not list $n up"
done
ok "docker exec tern1 tern admin cluster show lists tern2 and tern3 up"

round_trip "${MQTT[tern1]}" "${MQTT[tern3]}" "ct/cluster" "from tern1 to tern3" 20 \
    || { dump_logs "$RUN_ID-tern1" "$RUN_ID-tern3"; fail "message not routed tern1 -> tern3"; }
ok "a message published on tern1 reached a subscriber on tern3"

# A persistent session on tern2 with queued QoS 1 messages must survive
# tern2's graceful stop: the drain hands it to tern1 or tern3, and the
# client finds it (and every queued message) by reconnecting to tern1.
QUEUED=50
qid="queued-$RUN_ID"
mosquitto_sub -h 127.0.0.1 -p "${MQTT[tern2]}" -i "$qid" -c -q 1 -t "ct/queued/#" -E 2>/dev/null \
    || { dump_logs "$RUN_ID-tern2"; fail "persistent subscription on tern2"; }
seq 1 "$QUEUED" | sed 's/^/queued-/' \
    | mosquitto_pub -h 127.0.0.1 -p "${MQTT[tern2]}" -q 1 -t ct/queued/x -l -i "qpub-$RUN_ID" 2>/dev/null \
    || { dump_logs "$RUN_ID-tern2"; fail "publishing the queued messages on tern2"; }
ok "$QUEUED QoS 1 messages queued on tern2 for an offline persistent session"

docker stop -t 30 "$RUN_ID-tern2" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$RUN_ID-tern2")
[ "$code" = 0 ] || { dump_logs "$RUN_ID-tern2"; fail "tern2 exited $code on SIGTERM"; }
ok "docker stop tern2: graceful, exit code 0"
got=$(mosquitto_sub -h 127.0.0.1 -p "${MQTT[tern1]}" -i "$qid" -c -q 1 -t "ct/queued/#" \
    -C "$QUEUED" -W 30 2>/dev/null | sort -u | grep -c '^queued-' || true)
[ "$got" = "$QUEUED" ] || { dump_logs "$RUN_ID-tern1" "$RUN_ID-tern2" "$RUN_ID-tern3"; fail "after tern2's drain the session got $got of $QUEUED queued messages"; }
ok "all $QUEUED queued messages delivered through tern1 after tern2's graceful stop"
docker kill "$RUN_ID-tern3" >/dev/null
ok "docker kill tern3"

wait_http "http://127.0.0.1:${ADMIN[tern1]}/health" 10 || fail "tern1 unhealthy after losing its peers"
deadline=$((SECONDS + 30))
until [ "$(peers_up tern1)" = 0 ]; do
    [ $SECONDS -lt $deadline ] || { show tern1 >&2 || true; fail "tern1 still lists peers up after they left"; }
    sleep 0.5
done
ok "tern1's cluster show has no peer up any more"
round_trip "${MQTT[tern1]}" "${MQTT[tern1]}" "ct/survivor" "tern1 still serves" 20 \
    || { dump_logs "$RUN_ID-tern1"; fail "tern1 does not serve after tern2 stopped and tern3 was killed"; }
ok "tern1 still serves MQTT with tern2 stopped and tern3 killed"
