# TCP port checks for loadtests/run (sourced; Linux /proc only, no other tool needed).
# A load test must measure its own server: these tell a free port from a busy one and
# whose listening socket a port is.

# listener_inodes PORT: the inodes of the sockets listening on TCP PORT (IPv4 or IPv6,
# any address) in this network namespace, one a line.
listener_inodes() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v port="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == port { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# port_in_use PORT: status 0 when something listens on PORT.
port_in_use() {
    [ -n "$(listener_inodes "$1")" ]
}

# port_owned_by PID PORT: status 0 when process PID holds a socket listening on PORT.
port_owned_by() {
    local inode fd
    for inode in $(listener_inodes "$2"); do
        for fd in /proc/"$1"/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
        done
    done
    return 1
}

# port_holders PORT: "pid (command)" of each process this user may see listening on
# PORT, space-separated; empty when none is visible (another user's process).
port_holders() {
    local inode fd pid found=""
    for inode in $(listener_inodes "$1"); do
        for fd in /proc/[0-9]*/fd/*; do
            if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
                pid=${fd#/proc/}
                pid=${pid%%/*}
                found="$found $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?'))"
            fi
        done
    done
    echo "${found# }"
}

# refuse_busy_port PORT WHAT: exits with a message when PORT is taken.
refuse_busy_port() {
    if port_in_use "$1"; then
        local holders
        holders=$(port_holders "$1")
        echo "FAIL: port $1 ($2) is already in use${holders:+ by $holders}; a load test must talk to its own server only. Stop that process or set LOADTEST_PORT to a free port." >&2
        exit 1
    fi
}
