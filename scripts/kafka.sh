#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1
# for local tests and CI. No Docker: the broker jars come from Maven Central via mvn, once.
#
# Usage: scripts/kafka.sh start|stop|status|logs [-f]
#   start   fetch jars if needed, format fresh storage, start, wait until clients are served;
#           prints "127.0.0.1:PORT" as the last stdout line (also when already running).
#   stop    SIGTERM, wait KAFKA_STOP_TIMEOUT s (default 30), then SIGKILL.
#   status  prints "running pid N 127.0.0.1:PORT" (exit 0) or "not running" (exit 1).
#   logs    tail of the broker log (KAFKA_LOG_LINES, default 200); "logs -f" follows it.
#   topics  ARGS...  runs kafka-topics (TopicCommand) against the broker, e.g.
#           scripts/kafka.sh topics --create --topic t --partitions 3 ; topics --list
#
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (default: a free port, kept across restarts),
#      KAFKA_KEEP_DATA=1 (start on existing data instead of wiping it), KAFKA_VERSION,
#      KAFKA_HEAP_OPTS (-Xms128m -Xmx512m), KAFKA_JVM_OPTS (extra JVM flags, after ours; the
#      broker runs C1-only, -XX:TieredStopAtLevel=1, which starts ~30% faster on 2 cores),
#      KAFKA_EXTRA_CONFIG (extra server.properties lines), KAFKA_START_TIMEOUT (90),
#      NOTIFIER_CACHE (~/.cache/notifier), JAVA (java binary), PYTHON (python3).
# Files: jars in $NOTIFIER_CACHE/kafka-<version>/libs; per port, $NOTIFIER_CACHE/kafka-run/<port>/
#        holds server.properties, data/, kafka.pid and kafka.log.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
PYTHON="${PYTHON:-python3}"
ADDR="127.0.0.1:$KAFKA_PORT"

case "$KAFKA_PORT" in ''|*[!0-9]*) die "KAFKA_PORT must be a number, got '$KAFKA_PORT'";; esac

CONF_DIR="$HERE/kafka"
KAFKA_HOME="$NOTIFIER_CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
RUN_BASE="$NOTIFIER_CACHE/kafka-run"
RUN_DIR="$RUN_BASE/$KAFKA_PORT"
DATA_DIR="$RUN_DIR/data"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$RUN_DIR/kafka.log"
PROPS="$RUN_DIR/server.properties"

java_bin() {
    if [ -n "${JAVA:-}" ]; then echo "$JAVA"
    elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"
    else command -v java || die "java (JDK 17+) not found; run scripts/install-tools.sh"
    fi
}

# --- jars ---------------------------------------------------------------------------------------
fetch_libs() {
    # Idempotent: a libs dir is used only once it carries the .complete marker, which records
    # the hash of the pom it was fetched with (a changed pom refetches).
    local want
    want="$(sha256sum "$CONF_DIR/pom.xml" | cut -d' ' -f1)"
    [ "$(cat "$LIBS/.complete" 2>/dev/null)" = "$want" ] && return 0
    have mvn || die "mvn not found; run scripts/install-tools.sh"
    mkdir -p "$KAFKA_HOME"
    exec 8>"$KAFKA_HOME/.fetch.lock"
    flock -w 600 8 || die "timed out waiting for another fetch of Kafka $KAFKA_VERSION"
    if [ "$(cat "$LIBS/.complete" 2>/dev/null)" != "$want" ]; then
        msg "fetching Apache Kafka $KAFKA_VERSION jars with mvn into $LIBS (once)"
        local tmp="$KAFKA_HOME/libs.tmp.$$"
        rm -rf "$tmp"
        # (sed strips the colour resets mvn -q prints even in batch mode)
        if ! mvn -B -q --no-transfer-progress -Dstyle.color=never -f "$CONF_DIR/pom.xml" \
                dependency:copy-dependencies -Dkafka.version="$KAFKA_VERSION" \
                -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
                | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
            rm -rf "$tmp"
            die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
        fi
        [ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
        echo "$want" >"$tmp/.complete"
        rm -rf "$LIBS"
        mv "$tmp" "$LIBS"
    fi
    flock -u 8
    exec 8>&-
}

# --- process state ------------------------------------------------------------------------------
broker_pid() {
    # Prints the pid of our broker on this port if it is alive, else nothing (returns 1).
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    case "$pid" in ''|*[!0-9]*) return 1;; esac
    alive "$pid" || return 1
    # Guard against pid reuse: it must be a java kafka.Kafka with our properties file.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $PROPS" || return 1
    echo "$pid"
}

alive() {
    # True if pid $1 still runs. A zombie whose threads are all gone (sockets released, only
    # waiting to be reaped by init) counts as dead; a zombie leader with live threads does not.
    kill -0 "$1" 2>/dev/null || return 1
    local state threads
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)"
    threads="$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)"
    [ "$state" != Z ] || [ "${threads:-1}" -gt 1 ]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

client_ready() {
    # True once the broker answers a metadata request listing itself.
    if have kcat; then
        kcat -L -b "$ADDR" -m 3 2>/dev/null | grep -q "broker 1 at $ADDR"
    elif "$PYTHON" -c 'import aiokafka' 2>/dev/null; then
        "$PYTHON" - "$ADDR" <<'PY' >/dev/null 2>&1
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient

async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()

asyncio.run(asyncio.wait_for(main(), 10))
PY
    else
        grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null && port_open "$KAFKA_PORT"
    fi
}

log_tail() {
    printf -- '----- last lines of %s -----\n' "$LOG_FILE" >&2
    tail -n "${1:-60}" "$LOG_FILE" >&2 2>/dev/null || true
    printf -- '-----\n' >&2
}

random_cluster_id() {
    # Same shape as Kafka's Uuid.randomUuid(): url-safe base64 of 16 random bytes, no padding,
    # never starting with '-'.
    "$PYTHON" -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s); break'
}

render_props() {
    local cport="$1"
    sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
        "$CONF_DIR/server.properties.template" >"$PROPS.tmp"
    if [ -n "${KAFKA_EXTRA_CONFIG:-}" ]; then
        printf '\n# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$PROPS.tmp"
    fi
    mv "$PROPS.tmp" "$PROPS"
}

# --- commands -------------------------------------------------------------------------------------
take_lock() {
    # Serialise start/stop per port (fd 9 is closed for the broker itself).
    mkdir -p "$RUN_BASE"
    exec 9>"$RUN_BASE/.$KAFKA_PORT.lock"
    flock -w 300 9 || die "timed out waiting for another kafka.sh on port $KAFKA_PORT"
}

cmd_start() {
    local pid
    if pid="$(broker_pid)"; then
        msg "already running (pid $pid) on $ADDR"
        echo "$ADDR"
        return 0
    fi
    if port_open "$KAFKA_PORT"; then
        die "port $KAFKA_PORT is in use by another process (not a broker started by this script)"
    fi

    local java
    java="$(java_bin)"
    local jv
    jv="$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [ "${jv%%.*}" -ge 17 ] 2>/dev/null || die "Kafka $KAFKA_VERSION needs Java 17+, $java is '$jv'"

    fetch_libs

    local started=$SECONDS keep="${KAFKA_KEEP_DATA:-0}"
    local cport="${KAFKA_CONTROLLER_PORT:-}"
    if [ "$keep" = 1 ] && [ -f "$DATA_DIR/meta.properties" ]; then
        msg "KAFKA_KEEP_DATA=1: restarting on existing data in $DATA_DIR"
        if [ -z "$cport" ] && [ -f "$PROPS" ]; then
            cport="$(sed -n 's/^controller.quorum.voters=1@127.0.0.1://p' "$PROPS")"
            if [ -n "$cport" ] && port_open "$cport"; then cport=""; fi
        fi
    else
        [ "$keep" = 1 ] && msg "KAFKA_KEEP_DATA=1 but no formatted data in $DATA_DIR: formatting fresh"
        keep=0
        rm -rf "$RUN_DIR"
    fi
    mkdir -p "$DATA_DIR"
    [ -n "$cport" ] || cport="$(free_port)"
    [ "$cport" != "$KAFKA_PORT" ] || die "controller port equals KAFKA_PORT ($cport)"
    render_props "$cport"

    local jvm_common=(-cp "$LIBS/*" "-Dkafka.logs.dir=$RUN_DIR" -Djava.awt.headless=true)
    if [ "$keep" = 0 ]; then
        local cluster_id
        cluster_id="$(random_cluster_id)"
        msg "formatting KRaft storage (cluster id $cluster_id) in $DATA_DIR"
        if ! "$java" -Xmx256m -XX:TieredStopAtLevel=1 "${jvm_common[@]}" \
                "-Dlog4j2.configurationFile=$CONF_DIR/tools-log4j2.properties" \
                kafka.tools.StorageTool format \
                -t "$cluster_id" -c "$PROPS" >>"$LOG_FILE" 2>&1; then
            log_tail 40
            die "formatting KRaft storage failed"
        fi
    fi

    printf '===== %s starting Kafka %s on %s (controller 127.0.0.1:%s, keep_data=%s)\n' \
        "$(date -u +%FT%TZ)" "$KAFKA_VERSION" "$ADDR" "$cport" "$keep" >>"$LOG_FILE"
    # New session so the caller's signals/process group do not hit the broker; the child writes
    # its own pid (exec keeps it) so the pid file names the java process itself. fd 9 (the lock)
    # is closed for it, and its stdio goes to the log, never to the caller's pipes.
    # shellcheck disable=SC2086,SC2016
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
        "$java" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 \
        ${KAFKA_JVM_OPTS:-} "${jvm_common[@]}" \
        "-Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties" kafka.Kafka "$PROPS" \
        </dev/null >>"$LOG_FILE" 2>&1 9>&- &

    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while :; do
        if pid="$(broker_pid)" && client_ready; then
            break
        fi
        local child
        child="$(cat "$PID_FILE" 2>/dev/null || true)"
        if [ -n "$child" ] && ! alive "$child"; then
            log_tail
            rm -f "$PID_FILE"
            die "broker process exited during startup (log: $LOG_FILE)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail
            cmd_stop >/dev/null 2>&1 || true
            die "broker not ready on $ADDR after ${KAFKA_START_TIMEOUT}s (log: $LOG_FILE)"
        fi
        sleep 0.3
    done
    msg "Kafka $KAFKA_VERSION ready on $ADDR (pid $pid, $((SECONDS - started))s; log $LOG_FILE)"
    echo "$ADDR"
}

cmd_stop() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        msg "not running on $ADDR"
        return 0
    fi
    msg "stopping broker pid $pid on $ADDR"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            msg "still alive after ${KAFKA_STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            local n=0
            while alive "$pid" && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
            alive "$pid" && die "broker pid $pid survived SIGKILL"
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    msg "stopped"
}

cmd_status() {
    local pid
    if pid="$(broker_pid)"; then
        echo "running pid $pid $ADDR"
    else
        echo "not running"
        return 1
    fi
}

cmd_logs() {
    [ -f "$LOG_FILE" ] || die "no log file at $LOG_FILE"
    if [ "${1:-}" = "-f" ]; then
        exec tail -n "${KAFKA_LOG_LINES:-200}" -F "$LOG_FILE"
    fi
    tail -n "${KAFKA_LOG_LINES:-200}" "$LOG_FILE"
}

cmd_topics() {
    broker_pid >/dev/null || die "no broker running on $ADDR"
    fetch_libs
    exec "$(java_bin)" -Xmx256m -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
        "-Dlog4j2.configurationFile=$CONF_DIR/tools-log4j2.properties" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$ADDR" "$@"
}

case "${1:-}" in
    start) take_lock; cmd_start ;;
    stop) take_lock; cmd_stop ;;
    status) cmd_status ;;
    logs) shift; cmd_logs "$@" ;;
    topics) shift; cmd_topics "$@" ;;
    *) echo "usage: $0 start|stop|status|logs [-f]|topics ARGS   (env KAFKA_PORT, KAFKA_KEEP_DATA=1, ...)" >&2
       exit 2 ;;
esac
