"""etwsensor: ETW events → Defender for Endpoint rows → KQL detections → JSON alerts."""

__version__ = "0.1.0"
