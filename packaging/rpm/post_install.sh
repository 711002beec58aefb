# What %systemd_post does: on a first install, enable or not as the system's preset says.
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset stowage.service >/dev/null 2>&1 || :
fi
