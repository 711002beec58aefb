# What %systemd_postun_with_restart does: forget the unit, and restart after an upgrade.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart stowage.service >/dev/null 2>&1 || :
fi
