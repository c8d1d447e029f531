#!/bin/bash
# Entrypoint wrapper for the official cassandra image (docker/compose.yaml): turns CDC on in
# cassandra.yaml, puts the commit log and cdc_raw on the volume shared with cdcfast, then hands over to
# the image's own entrypoint. (The image sets only a few settings from the environment, such as
# CASSANDRA_CLUSTER_NAME; CDC is not one of them.) Safe to run again on a restart.
#
#   CDC_RAW_DIRECTORY    cdc_raw_directory (default /var/lib/cassandra/cdc/cdc_raw)
#   COMMITLOG_DIRECTORY  commitlog_directory (default /var/lib/cassandra/cdc/commitlog). It must be on the
#                        same file system as cdc_raw: Cassandra hard-links each segment into cdc_raw.
#   CDC_TOTAL_SPACE      cdc_total_space (default 4096MiB); cdcfast's pipeline.yaml says the same, so that
#                        it warns before Cassandra refuses writes to CDC tables.
set -euo pipefail

conf="${CASSANDRA_CONFIG:-${CASSANDRA_CONF:-/etc/cassandra}}/cassandra.yaml"
cdc_raw="${CDC_RAW_DIRECTORY:-/var/lib/cassandra/cdc/cdc_raw}"
commitlog="${COMMITLOG_DIRECTORY:-/var/lib/cassandra/cdc/commitlog}"
total_space="${CDC_TOTAL_SPACE:-4096MiB}"

# set_key KEY VALUE: the key's line, commented out ("# key: ...") or not, becomes "KEY: VALUE"; a key
# the file does not have is appended. Rewritten in place (no mv): cassandra.yaml may be a bind mount.
set_key() {
    local key="$1" value="$2" tmp
    tmp="$(mktemp)"
    if grep -qE "^(# ?)?${key}:" "$conf"; then
        sed -E "s|^(# ?)?${key}:.*|${key}: ${value}|" "$conf" >"$tmp"
    else
        cat "$conf" >"$tmp"
        printf '%s: %s\n' "$key" "$value" >>"$tmp"
    fi
    cat "$tmp" >"$conf"
    rm -f "$tmp"
}

set_key cdc_enabled true
set_key cdc_raw_directory "$cdc_raw"
set_key commitlog_directory "$commitlog"
set_key cdc_total_space "$total_space"

mkdir -p "$cdc_raw" "$commitlog"
if [ "$(id -u)" = 0 ] && id cassandra >/dev/null 2>&1; then
    chown cassandra:cassandra "$cdc_raw" "$commitlog"
fi
# cdcfast runs in another container, in the cassandra group (gid 999): it reads segments through the
# group and deletes those every sink has, so cdc_raw is group-writable; setgid keeps entries in the group.
chmod 2770 "$cdc_raw"

exec docker-entrypoint.sh "$@"
