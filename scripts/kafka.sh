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
#      KAFKA_EXTRA_CONFIG (extra server.properties lines; a key given there overrides the
#      template's, e.g. listeners= to add SSL/SASL listeners), KAFKA_FORMAT_ARGS (extra
#      StorageTool format arguments, e.g. --add-scram 'SCRAM-SHA-512=[name=u,password=p]';
#      never printed), KAFKA_START_TIMEOUT (90),
#      KAFKA_START_ATTEMPTS (3: a start that loses a port or data-dir-lock race is retried),
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

port_bindable() {
    # True if a listener could bind 127.0.0.1:$1 the way Java does (SO_REUSEADDR, so sockets in
    # TIME_WAIT do not count). False while anything listens on it, and also while it is the local
    # port of a live connection, which port_open cannot see but which makes the broker exit.
    "$PYTHON" - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

wait_port_bindable() {
    # wait_port_bindable PORT SECONDS : true once PORT is bindable, false if it is not in time.
    local until=$((SECONDS + $2))
    until port_bindable "$1"; do
        [ "$SECONDS" -lt "$until" ] || return 1
        sleep 0.5
    done
}

wait_previous_gone() {
    # A broker killed just before this start may still be exiting: its pid is present, its
    # cmdline already empty (so broker_pid no longer names it) while the kernel is still closing
    # its sockets and its lock on the data dir. Wait (bounded) until it is gone, then drop the
    # stale pid file, so that nothing below can mistake the old pid for the new broker.
    local old cmd until=$((SECONDS + KAFKA_STOP_TIMEOUT))
    old="$(cat "$PID_FILE" 2>/dev/null || true)"
    case "$old" in ''|*[!0-9]*) rm -f "$PID_FILE"; return 0;; esac
    while alive "$old"; do
        cmd="$(tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null || true)"
        case "$cmd" in ''|*"kafka.Kafka $PROPS"*) ;; *) break;; esac  # pid reused: not ours
        [ "$SECONDS" -lt "$until" ] || die "previous broker pid $old still exiting after ${KAFKA_STOP_TIMEOUT}s"
        sleep 0.1
    done
    rm -f "$PID_FILE"
}

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

MARK_LINE=0  # lines in the log before the current attempt's start marker

attempt_output() {
    # The broker's own output (stdout and stderr) since this attempt's start marker line.
    tail -n +"$((MARK_LINE + 1))" "$LOG_FILE" 2>/dev/null || true
}

attempt_tail() {
    printf -- '----- broker output of this attempt (%s, last 60 lines) -----\n' "$LOG_FILE" >&2
    if [ -n "$(attempt_output | head -c 1)" ]; then
        attempt_output | tail -n 60 >&2
    else
        printf '(none: the JVM printed nothing)\n' >&2
    fi
    printf -- '-----\n' >&2
}

attempt_error() {
    # The line of this attempt's output that best says why the JVM stopped, if any: the deepest
    # cause of the first exception (Kafka prints "Caused by:" chains), else the first error line.
    local out
    out="$(attempt_output)"
    { grep -m1 -oE '(Failed to acquire lock|Socket server failed to bind to) [^()]*' <<<"$out" \
        || grep -m1 -E 'Exception: |Error: |ERROR |FATAL ' <<<"$out"; } | cut -c1-300 || true
}

attempt_says() { attempt_output | grep -qF "$1"; }

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
    # The placeholders are substituted in KAFKA_EXTRA_CONFIG too (e.g. a listeners= override).
    {
        cat "$CONF_DIR/server.properties.template"
        if [ -n "${KAFKA_EXTRA_CONFIG:-}" ]; then
            printf '\n# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG"
        fi
    } | sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$cport|g" \
        -e "s|@DATA_DIR@|$DATA_DIR|g" >"$PROPS.tmp"
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
    wait_previous_gone
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
            if [ -n "$cport" ] && ! port_bindable "$cport"; then
                msg "previous controller port $cport is taken: using a free one"
                cport=""
            fi
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
        # KAFKA_FORMAT_ARGS is a shell-quoted word list (SCRAM credentials, at format time).
        local format_args=()
        [ -z "${KAFKA_FORMAT_ARGS:-}" ] || eval "format_args=($KAFKA_FORMAT_ARGS)"
        if ! "$java" -Xmx256m -XX:TieredStopAtLevel=1 "${jvm_common[@]}" \
                "-Dlog4j2.configurationFile=$CONF_DIR/tools-log4j2.properties" \
                kafka.tools.StorageTool format \
                -t "$cluster_id" -c "$PROPS" "${format_args[@]}" >>"$LOG_FILE" 2>&1; then
            log_tail 40
            die "formatting KRaft storage failed"
        fi
    fi

    # A start can lose a race it cannot see coming: a port that was free when checked is bound
    # by someone else before the JVM binds it, or the data dir lock of a broker that just died
    # is not released yet. Those attempts are retried (logged), bounded by KAFKA_START_ATTEMPTS
    # and the overall KAFKA_START_TIMEOUT; any other early exit fails at once.
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) attempt=1
    local max_attempts="${KAFKA_START_ATTEMPTS:-3}" launcher rc why
    while :; do
        if ! wait_port_bindable "$KAFKA_PORT" 10; then
            die "port $KAFKA_PORT cannot be bound (held by another socket) after 10s"
        fi
        MARK_LINE="$(wc -l <"$LOG_FILE" 2>/dev/null || echo 0)"
        printf '===== %s starting Kafka %s on %s (controller 127.0.0.1:%s, keep_data=%s, attempt %s)\n' \
            "$(date -u +%FT%TZ)" "$KAFKA_VERSION" "$ADDR" "$cport" "$keep" "$attempt" >>"$LOG_FILE"
        # New session so the caller's signals/process group do not hit the broker; the child
        # writes its own pid (exec keeps it) so the pid file names the java process itself. fd 9
        # (the lock) is closed for it, and its stdio goes to the log, never to the caller's pipes.
        # $! (the launcher) is what tells whether the broker is still starting: the pid file is
        # written by the child only once it runs, which on a loaded machine can take a while.
        # With -w, setsid waits for the broker should it ever have to fork to get a new session.
        # shellcheck disable=SC2086,SC2016
        setsid -w bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
            "$java" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 \
            ${KAFKA_JVM_OPTS:-} "${jvm_common[@]}" \
            "-Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties" kafka.Kafka "$PROPS" \
            </dev/null >>"$LOG_FILE" 2>&1 9>&- &
        launcher=$!

        rc=""
        while :; do
            if pid="$(broker_pid)" && client_ready; then
                break
            fi
            if ! alive "$launcher"; then
                rc=0
                wait "$launcher" || rc=$?
                break
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                attempt_tail
                cmd_stop >/dev/null 2>&1 || true
                kill -KILL "$launcher" 2>/dev/null || true
                die "broker not ready on $ADDR after ${KAFKA_START_TIMEOUT}s (log: $LOG_FILE)"
            fi
            sleep 0.3
        done
        [ -n "$rc" ] || break  # ready

        rm -f "$PID_FILE"
        why="$(attempt_error)"
        if [ "$attempt" -lt "$max_attempts" ] && [ "$SECONDS" -lt "$deadline" ]; then
            if attempt_says "failed to bind to 127.0.0.1:$cport: Address already in use" \
                    && [ -z "${KAFKA_CONTROLLER_PORT:-}" ]; then
                local was=$cport
                cport="$(free_port)"
                [ "$cport" != "$KAFKA_PORT" ] || cport="$(free_port)"
                render_props "$cport"
                msg "attempt $attempt: controller port $was was taken before the broker bound it; retrying on $cport"
                attempt=$((attempt + 1))
                continue
            fi
            if attempt_says "failed to bind to 127.0.0.1:$KAFKA_PORT: Address already in use" \
                    || attempt_says "Failed to acquire lock"; then
                msg "attempt $attempt: broker exited (status $rc): $why; retrying in 2s"
                sleep 2
                attempt=$((attempt + 1))
                continue
            fi
        fi
        attempt_tail
        die "broker process exited during startup (status $rc, attempt $attempt, after $((SECONDS - started))s): ${why:-no error line in its output} (log: $LOG_FILE)"
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
