"""Decode: payload bytes → typed fields, driven by the provider definitions in providers/."""

from etwsensor.decode.decoder import Decoder, DecodeStats, EventCount
from etwsensor.decode.schema import EventDef, FieldDef, ProviderDef, VersionDef, load_providers

__all__ = [
    "DecodeStats",
    "Decoder",
    "EventCount",
    "EventDef",
    "FieldDef",
    "ProviderDef",
    "VersionDef",
    "load_providers",
]
