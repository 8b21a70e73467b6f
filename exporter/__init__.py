"""msgsms-exporter: Prometheus metrics for Huawei Cloud Message & SMS delivery."""

__version__ = "0.1.0"
