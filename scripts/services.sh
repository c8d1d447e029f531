#!/usr/bin/env bash
# Throwaway database servers for cdcfast's integration tests.
#
#   scripts/services.sh start|stop|status|env [DIR]
#
# Runs PostgreSQL 15, TimescaleDB (a second PostgreSQL 15 instance with the extension preloaded) and
# ClickHouse on loopback ports, with all data, configs, logs and pid files inside DIR
# (default: ${CDCFAST_SERVICES_DIR:-/tmp/cdcfast-services}). Nothing is registered with the system's
# service manager and the system's own clusters/configs are not touched, so deleting DIR after `stop`
# removes every trace except the installed Debian packages (and the self-built TimescaleDB extension).
#
# Targets a Debian bookworm machine where we are root: missing packages are installed with apt-get.
#
# Environment:
#   CDCFAST_SERVICES          services to act on (default "postgres timescaledb clickhouse")
#   CDCFAST_SERVICES_DIR      default DIR
#   CDCFAST_PG_PORT           PostgreSQL port (default 55432)
#   CDCFAST_TS_PORT           TimescaleDB port (default 55433)
#   CDCFAST_CH_PORT           ClickHouse native TCP port (default 59000)
#   CDCFAST_CH_HTTP_PORT      ClickHouse HTTP port (default 58123)
#   CDCFAST_SERVICES_TIMEOUT  seconds to wait for each server to accept connections (default 60)
set -euo pipefail

readonly ALL_SERVICES="postgres timescaledb clickhouse"
readonly PG_VERSION=15
readonly PG_BIN=/usr/lib/postgresql/${PG_VERSION}/bin
readonly PG_SHARE=/usr/share/postgresql/${PG_VERSION}
readonly PG_LIB=/usr/lib/postgresql/${PG_VERSION}/lib
readonly PG_DB=cdcfast
readonly DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Debian bookworm has no timescaledb package; trixie's source package builds against PG 15 unchanged.
readonly TS_SOURCE_SUITE=trixie

PG_PORT=${CDCFAST_PG_PORT:-55432}
TS_PORT=${CDCFAST_TS_PORT:-55433}
CH_PORT=${CDCFAST_CH_PORT:-59000}
CH_HTTP_PORT=${CDCFAST_CH_HTTP_PORT:-58123}
TIMEOUT=${CDCFAST_SERVICES_TIMEOUT:-60}
SERVICES=${CDCFAST_SERVICES:-$ALL_SERVICES}

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: scripts/services.sh start|stop|status|env [DIR]
  start   install what is missing, start the servers, wait until they accept connections
  stop    stop the servers (data stays in DIR)
  status  print each server's state (exit status 1 if any selected server is down)
  env     print `export CDCFAST_*_DSN=...` lines for the selected servers
EOF
    exit 2
}

selected() {
    # Word-splitting the user's list is the point here.
    local svc
    for svc in $SERVICES; do
        [[ $svc == "$1" ]] && return 0
    done
    return 1
}

validate_services() {
    local svc
    for svc in $SERVICES; do
        case $svc in
        postgres | timescaledb | clickhouse) ;;
        *) die "unknown service '$svc' in CDCFAST_SERVICES (known: $ALL_SERVICES)" ;;
        esac
    done
}

require_root() {
    # apt-get, runuser and chown to the service users all need root.
    [[ $(id -u) -eq 0 ]] || die "'$1' must run as root (it installs packages and switches to service users)"
}

# ---------------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------------

APT_UPDATED=0

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

apt_update_once() {
    # A fresh machine may have empty package lists; one update per invocation is enough.
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update (log: $DIR/apt.log)"
        apt-get update >>"$DIR/apt.log" 2>&1 || {
            tail -n 20 "$DIR/apt.log" >&2
            die "apt-get update failed (log: $DIR/apt.log)"
        }
        APT_UPDATED=1
    fi
}

apt_install() {
    # Arguments are package specs ("name" or "name=version"); only missing ones are installed so a warm
    # start never touches apt.
    local spec missing=()
    for spec in "$@"; do
        pkg_installed "${spec%%=*}" || missing+=("$spec")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    apt_update_once
    log "apt-get install ${missing[*]} (log: $DIR/apt.log)"
    # No recommends: they pull in e.g. sysstat and docs we don't need. The system's policy-rc.d (if any)
    # decides whether package scripts start the system-wide servers; we never use those.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
        >>"$DIR/apt.log" 2>&1 || {
        tail -n 20 "$DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (log: $DIR/apt.log)"
    }
}

timescaledb_installed() {
    [[ -f $PG_SHARE/extension/timescaledb.control && -f $PG_LIB/timescaledb.so ]]
}

debian_mirror() {
    # Reuse the mirror the machine already uses (the network may only reach that one).
    local uri
    uri=$(
        {
            grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
            grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed -E 's/\[[^]]*\]//' | awk '{print $2}'
        } | grep -E '/debian/?$' | head -n 1 || true
    )
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

build_timescaledb() {
    local work=$DIR/build/timescaledb
    local apt_dir=$work/apt src_dir=$work/src build_dir=$work/build build_log=$work/build.log
    local mirror tarball tree
    mirror=$(debian_mirror)
    log "building TimescaleDB from Debian ${TS_SOURCE_SUITE}'s source package (mirror $mirror, log $build_log)"

    # The PGXS headers must match the running server exactly, hence the version pin.
    local pg_server_version
    pg_server_version=$(dpkg-query -W -f='${Version}' "postgresql-${PG_VERSION}")
    apt_install "postgresql-server-dev-${PG_VERSION}=${pg_server_version}" cmake gcc make libc6-dev

    rm -rf "$work"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" \
        "$src_dir"
    # A private sources list, lists dir and cache: the system's apt configuration and package cache
    # never see trixie, so later `apt-get install`s cannot accidentally pull trixie binaries.
    printf 'deb-src [signed-by=%s] %s %s main\n' "$DEBIAN_KEYRING" "$mirror" "$TS_SOURCE_SUITE" \
        >"$apt_dir/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        # Downloads land in a root-owned dir; skip the _apt sandbox user instead of warning about it.
        -o "APT::Sandbox::User=root"
    )
    {
        apt-get "${apt_opts[@]}" update &&
            (cd "$src_dir" && apt-get "${apt_opts[@]}" source --download-only timescaledb)
    } >>"$build_log" 2>&1 || {
        tail -n 30 "$build_log" >&2
        die "could not download the timescaledb source package (log: $build_log)"
    }

    # Unpacking the upstream tarball directly avoids needing dpkg-dev; the Debian patches only concern
    # packaging. apt-get already verified the files against the signed Sources index.
    tarball=$(find "$src_dir" -maxdepth 1 -name 'timescaledb_*.orig.tar.*' | head -n 1)
    [[ -n $tarball ]] || die "no timescaledb orig tarball in $src_dir (log: $build_log)"
    tar -xf "$tarball" -C "$src_dir"
    tree=$(find "$src_dir" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb*' | head -n 1)
    [[ -n $tree ]] || die "could not find the unpacked timescaledb tree in $src_dir"

    # APACHE_ONLY: the TSL-licensed parts (compression, continuous aggregates) are not needed for
    # hypertables. Tests, linters and downgrade scripts would need extra tools (and git) we don't have.
    {
        cmake -S "$tree" -B "$build_dir" \
            -DCMAKE_BUILD_TYPE=Release \
            -DPG_CONFIG="$PG_BIN/pg_config" \
            -DAPACHE_ONLY=ON \
            -DREGRESS_CHECKS=OFF \
            -DTAP_CHECKS=OFF \
            -DWARNINGS_AS_ERRORS=OFF \
            -DLINTER=OFF \
            -DGENERATE_DOWNGRADE_SCRIPT=OFF \
            -DUSE_OPENSSL=OFF \
            -DSEND_TELEMETRY_DEFAULT=OFF &&
            cmake --build "$build_dir" -j "$(nproc)" &&
            cmake --install "$build_dir"
    } >>"$build_log" 2>&1 || {
        tail -n 40 "$build_log" >&2
        die "building timescaledb failed (log: $build_log)"
    }
    timescaledb_installed || die "timescaledb built but $PG_SHARE/extension/timescaledb.control is missing"
    log "TimescaleDB installed"
}

install_packages() {
    local pkgs=()
    if selected postgres || selected timescaledb; then
        pkgs+=("postgresql-${PG_VERSION}" "postgresql-client-${PG_VERSION}")
    fi
    if selected clickhouse; then
        pkgs+=(clickhouse-server clickhouse-client)
    fi
    [[ ${#pkgs[@]} -gt 0 ]] && apt_install "${pkgs[@]}"
    if selected timescaledb && ! timescaledb_installed; then
        build_timescaledb
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------------
# PostgreSQL (used for both the plain and the TimescaleDB instance)
# ---------------------------------------------------------------------------------------------------

as_postgres() { runuser -u postgres -- "$@"; }

pg_base() { printf '%s/%s\n' "$DIR" "$1"; }

pg_running() {
    local data
    data=$(pg_base "$1")/data
    [[ -f $data/postmaster.pid ]] || return 1
    # pg_ctl refuses to run as root, even for `status`.
    as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
}

pg_psql() {
    # $1=port $2=database, rest: psql args. TCP only: the instances have no unix sockets.
    local port=$1 db=$2
    shift 2
    PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres \
        -d "$db" "$@"
}

check_reachable() {
    # $1=user. A DIR below e.g. /root (mode 700) is unusable for the service users; say so plainly
    # instead of letting initdb/clickhouse fail with a permission error deep in their logs.
    runuser -u "$1" -- test -x "$DIR" ||
        die "user '$1' cannot reach $DIR (a parent directory is not searchable); choose a DIR under /tmp"
}

pg_init() {
    # $1=name (directory), $2=extra postgresql.conf lines
    local name=$1 extra=$2 base data
    base=$(pg_base "$name")
    data=$base/data
    # The marker is written last, so a half-finished initdb is redone instead of trusted.
    [[ -f $base/initialized ]] && return 0
    check_reachable postgres
    log "$name: initdb in $data"
    rm -rf "$base"
    mkdir -p "$base"
    chown postgres:postgres "$base"
    chmod 700 "$base"
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        >"$base/initdb.log" 2>&1 || {
        tail -n 20 "$base/initdb.log" >&2
        die "$name: initdb failed (log: $base/initdb.log)"
    }
    # Later settings win in postgresql.conf, so appending overrides initdb's defaults. The port is not
    # here: it is passed at start time so CDCFAST_*_PORT can change without re-initialising.
    # No unix sockets: /var/run/postgresql may not exist without systemd, and socket paths under a
    # long DIR can exceed the 107-byte limit.
    as_postgres tee -a "$data/postgresql.conf" >/dev/null <<EOF

# --- cdcfast throwaway test instance (scripts/services.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
max_prepared_transactions = 64
wal_level = logical
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
timezone = 'UTC'
$extra
EOF
    # Trust on loopback only; the server listens nowhere else anyway.
    as_postgres tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# cdcfast throwaway test instance: trust everything on loopback TCP.
host all all 127.0.0.1/32 trust
EOF
    touch "$base/initialized"
}

pg_wait() {
    # $1=name $2=port $3=log
    local name=$1 port=$2 logfile=$3 deadline=$((SECONDS + TIMEOUT))
    until pg_psql "$port" postgres -tAc 'select 1' >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$logfile" >&2 || true
            die "$name did not accept connections on 127.0.0.1:$port within ${TIMEOUT}s (log: $logfile)"
        fi
        sleep 0.2
    done
}

pg_start() {
    # $1=name $2=port $3=extra postgresql.conf lines
    local name=$1 port=$2 extra=$3 base data logfile
    base=$(pg_base "$name")
    data=$base/data
    logfile=$base/postgres.log
    pg_init "$name" "$extra"
    if pg_running "$name"; then
        log "$name: already running"
    else
        log "$name: starting on 127.0.0.1:$port"
        # 9>&-: the server must not inherit our lock fd, or it would hold the lock for its lifetime.
        as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -o "-c port=$port" -w -t "$TIMEOUT" \
            start >/dev/null 2>&1 9>&- || {
            tail -n 30 "$logfile" >&2 || true
            die "$name failed to start on 127.0.0.1:$port (log: $logfile)"
        }
    fi
    pg_wait "$name" "$port" "$logfile"
    # Creating the database on every start (if missing) keeps `start` self-healing after a test drops it.
    if [[ -z $(pg_psql "$port" postgres -tAc "select 1 from pg_database where datname = '$PG_DB'") ]]; then
        pg_psql "$port" postgres -c "create database $PG_DB" >/dev/null
    fi
}

pg_stop() {
    local name=$1 data
    data=$(pg_base "$name")/data
    if ! pg_running "$name"; then
        log "$name: not running"
        return 0
    fi
    log "$name: stopping"
    # fast = roll back open transactions and shut down cleanly; immediate only if that hangs.
    as_postgres "$PG_BIN/pg_ctl" -D "$data" stop -m fast -w -t 60 >/dev/null 2>&1 ||
        as_postgres "$PG_BIN/pg_ctl" -D "$data" stop -m immediate -w -t 30 >/dev/null 2>&1 ||
        die "$name: pg_ctl stop failed (log: $(pg_base "$name")/postgres.log)"
}

pg_status() {
    local name=$1 port=$2 base state pid=-
    base=$(pg_base "$name")
    if pg_running "$name"; then
        state=running
        pid=$(head -n 1 "$base/data/postmaster.pid")
        # postmaster.pid line 4 is the port it really listens on.
        port=$(sed -n 4p "$base/data/postmaster.pid")
    elif [[ -f $base/initialized ]]; then
        state=stopped
    else
        state=absent
    fi
    printf '%-12s %-8s port=%-6s pid=%-8s log=%s\n' "$name" "$state" "$port" "$pid" "$base/postgres.log"
    [[ $state == running ]]
}

# ---------------------------------------------------------------------------------------------------
# ClickHouse
# ---------------------------------------------------------------------------------------------------

ch_base() { printf '%s/clickhouse\n' "$DIR"; }

ch_pid() {
    # Prints the server's pid if it is alive. The cmdline check guards against a recycled pid from a
    # previous boot/container.
    local pidfile pid
    pidfile=$(ch_base)/clickhouse-server.pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q clickhouse || return 1
    printf '%s\n' "$pid"
}

ch_write_config() {
    local base=$1
    # Paths are absolute so the server never falls back to /var/lib/clickhouse or /etc/clickhouse-server.
    # No interserver_http_port: without it 18.x opens no interserver listener (no replication here).
    cat >"$base/config.xml" <<EOF
<?xml version="1.0"?>
<!-- cdcfast throwaway test instance, written by scripts/services.sh; edits are overwritten. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$base/log/clickhouse-server.log</log>
        <errorlog>$base/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$CH_PORT</tcp_port>
    <http_port>$CH_HTTP_PORT</http_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <!-- Small caches: this is a test box, not a production server. -->
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$base/data/</path>
    <tmp_path>$base/tmp/</tmp_path>
    <user_files_path>$base/user_files/</user_files_path>
    <format_schema_path>$base/format_schemas/</format_schema_path>
    <users_config>$base/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF
    cat >"$base/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- cdcfast throwaway test instance: user "default", no password, loopback only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

ch_client() {
    clickhouse-client --host 127.0.0.1 --port "$CH_PORT" "$@"
}

port_in_use() {
    # bash's /dev/tcp: the connect succeeds only if something listens on the port.
    (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ch_start() {
    local base logfile pid deadline launcher=""
    base=$(ch_base)
    logfile=$base/log/clickhouse-server.log
    if pid=$(ch_pid); then
        log "clickhouse: already running (pid $pid)"
    else
        # A foreign server on our port would answer the readiness probe below and hide the fact that
        # ours failed to bind, so refuse up front.
        local port
        for port in "$CH_PORT" "$CH_HTTP_PORT"; do
            if port_in_use "$port"; then
                die "clickhouse: 127.0.0.1:$port is already in use by another process (not our server: no live pid in $base/clickhouse-server.pid); set CDCFAST_CH_PORT/CDCFAST_CH_HTTP_PORT"
            fi
        done
        check_reachable clickhouse
        log "clickhouse: starting on 127.0.0.1:$CH_PORT (http $CH_HTTP_PORT)"
        mkdir -p "$base"/{data,tmp,user_files,format_schemas,log}
        ch_write_config "$base"

        # The server refuses or misbehaves as root with data owned by someone else; run it as the
        # package's `clickhouse` user, which must own everything it writes (including the preprocessed
        # configs it drops next to config.xml).
        chown -R clickhouse:clickhouse "$base"
        # setpriv execs (no wrapper process left behind, unlike su/runuser) and setsid detaches the server
        # from our terminal/process group so a Ctrl-C in pytest doesn't kill it mid-test-run. 9>&- keeps
        # our lock fd out of the long-lived server.
        # 18.16 only writes --pid-file in --daemon mode (which also sends early errors to /dev/null), so we
        # run it in the foreground and record $! ourselves: cd, setsid (not a group leader here, so it
        # doesn't fork), setpriv and env all exec, so $! is the server's pid. The cwd is DIR so nothing
        # lands in the caller's directory.
        (
            cd "$base"
            exec setsid setpriv --reuid=clickhouse --regid=clickhouse --init-groups -- \
                env HOME="$base" clickhouse-server --config-file="$base/config.xml" \
                </dev/null >>"$base/log/stdout.log" 2>&1 9>&-
        ) &
        launcher=$!
        printf '%s\n' "$launcher" >"$base/clickhouse-server.pid"
    fi
    deadline=$((SECONDS + TIMEOUT))
    until ch_client -q 'select 1' >/dev/null 2>&1; do
        if [[ -n $launcher ]] && ! kill -0 "$launcher" 2>/dev/null && ! ch_pid >/dev/null; then
            # The process is gone: no point waiting for the timeout.
            tail -n 20 "$base/log/stdout.log" "$base/log/clickhouse-server.err.log" >&2 2>/dev/null || true
            die "clickhouse exited during startup (log: $logfile, stdout: $base/log/stdout.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$base/log/stdout.log" "$base/log/clickhouse-server.err.log" >&2 2>/dev/null || true
            die "clickhouse did not accept connections on 127.0.0.1:$CH_PORT within ${TIMEOUT}s (log: $logfile)"
        fi
        sleep 0.2
    done
}

ch_stop() {
    local pid deadline
    if ! pid=$(ch_pid); then
        log "clickhouse: not running"
        return 0
    fi
    log "clickhouse: stopping (pid $pid)"
    kill -TERM "$pid"
    # TERM makes ClickHouse finish queries and flush; give it a while before resorting to KILL.
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "clickhouse: still alive after 30s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$(ch_base)/clickhouse-server.pid"
}

ch_status() {
    local base state pid=-
    base=$(ch_base)
    if pid=$(ch_pid); then
        state=running
    elif [[ -f $base/config.xml ]]; then
        state=stopped
        pid=-
    else
        state=absent
        pid=-
    fi
    printf '%-12s %-8s port=%-6s pid=%-8s log=%s (http port %s)\n' clickhouse "$state" "$CH_PORT" "$pid" \
        "$base/log/clickhouse-server.log" "$CH_HTTP_PORT"
    [[ $state == running ]]
}

# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------

resolve_dir() {
    # Absolute, because the path ends up in server configs and is used after `cd`.
    DIR=$(realpath -m -- "$DIR")
}

lock_dir() {
    # Concurrent `start`s (e.g. pytest-xdist workers) serialise here; the later ones find the servers
    # running and return quickly.
    mkdir -p "$DIR"
    # The service users must be able to traverse DIR to reach their own subdirectories. go+x only, so
    # an existing DIR such as /tmp keeps its other bits (sticky!).
    chmod go+x "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
}

cmd_start() {
    require_root start
    resolve_dir
    lock_dir
    local t0=$SECONDS
    install_packages
    if selected postgres; then
        pg_start postgres "$PG_PORT" ""
    fi
    if selected timescaledb; then
        # Telemetry off: the test machine has no internet and shouldn't try.
        pg_start timescaledb "$TS_PORT" "shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_worker_processes = 16"
        pg_psql "$TS_PORT" "$PG_DB" -c 'create extension if not exists timescaledb' >/dev/null 2>&1 || {
            pg_psql "$TS_PORT" "$PG_DB" -c 'create extension if not exists timescaledb' >&2 || true
            die "timescaledb: CREATE EXTENSION failed (log: $(pg_base timescaledb)/postgres.log)"
        }
    fi
    if selected clickhouse; then
        ch_start
    fi
    log "ready in $((SECONDS - t0))s: $SERVICES (DIR $DIR)"
}

cmd_stop() {
    require_root stop
    resolve_dir
    [[ -d $DIR ]] || {
        log "nothing to stop: $DIR does not exist"
        return 0
    }
    lock_dir
    if selected clickhouse; then ch_stop; fi
    if selected timescaledb; then pg_stop timescaledb; fi
    if selected postgres; then pg_stop postgres; fi
}

cmd_status() {
    resolve_dir
    local rc=0
    if selected postgres; then pg_status postgres "$PG_PORT" || rc=1; fi
    if selected timescaledb; then pg_status timescaledb "$TS_PORT" || rc=1; fi
    if selected clickhouse; then ch_status || rc=1; fi
    return "$rc"
}

cmd_env() {
    if selected postgres; then
        printf 'export CDCFAST_PG_DSN=postgresql://postgres@127.0.0.1:%s/%s\n' "$PG_PORT" "$PG_DB"
    fi
    if selected timescaledb; then
        printf 'export CDCFAST_TS_DSN=postgresql://postgres@127.0.0.1:%s/%s\n' "$TS_PORT" "$PG_DB"
    fi
    if selected clickhouse; then
        printf 'export CDCFAST_CH_DSN=clickhouse://default@127.0.0.1:%s/default\n' "$CH_PORT"
        printf 'export CDCFAST_CH_HTTP_URL=http://127.0.0.1:%s/\n' "$CH_HTTP_PORT"
    fi
}

main() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local cmd=$1
    DIR=${2:-${CDCFAST_SERVICES_DIR:-/tmp/cdcfast-services}}
    validate_services
    case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
    esac
}

main "$@"
