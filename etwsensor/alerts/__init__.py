"""Alerts: the JSON object a rule match becomes, and the noise controls applied before it is sent."""

from etwsensor.alerts.allowlist import AllowEntry, Allowlist
from etwsensor.alerts.model import SCHEMA_VERSION, Alert, build_alert
from etwsensor.alerts.suppress import SuppressionPolicy, Suppressor

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AllowEntry",
    "Allowlist",
    "SuppressionPolicy",
    "Suppressor",
    "build_alert",
]
