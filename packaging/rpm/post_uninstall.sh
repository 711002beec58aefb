# What %systemd_postun_with_restart does: forget the unit, and restart after an upgrade.
# Without waiting: the unit is Type=notify and is ready only once every required image is
# present, which the package manager should not wait for.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl --no-block try-restart stowage.service >/dev/null 2>&1 || :
fi
