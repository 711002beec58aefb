# What %systemd_preun does: on the last removal, disable and stop.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now stowage.service >/dev/null 2>&1 || :
fi
