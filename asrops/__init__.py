"""How the daemons live under a service manager: structured logs, systemd notification
(READY/WATCHDOG/STOPPING), graceful stop on SIGTERM/SIGINT, Prometheus metrics."""
