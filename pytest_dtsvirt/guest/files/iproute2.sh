# iproute2 over busybox applets (sourced by /bin/rootsh and /etc/profile)
[ -x /bin/ip ] && [ ! -L /bin/ip ] && ip() { /bin/ip "$@"; }
[ -x /sbin/bridge ] && bridge() { /sbin/bridge "$@"; }
