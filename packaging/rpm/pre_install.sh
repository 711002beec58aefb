# The system user stowage runs as, before the files land (what %sysusers_create_compat does).
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers - <<'SYSUSERS'
u stowage - "stowage image-store daemon" /var/lib/stowage
m stowage docker
SYSUSERS
else
    getent group docker >/dev/null || groupadd -r docker
    getent passwd stowage >/dev/null ||
        useradd -r -M -d /var/lib/stowage -s /sbin/nologin -c "stowage image-store daemon" -U stowage
    usermod -a -G docker stowage
fi
