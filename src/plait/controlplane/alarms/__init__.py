"""Alarms: governance events and telemetry in, webhook notifications out.

`AlarmHub` (hub.py) is the one object the API and `plait control` use; the parts beside
it are small and clock-injectable: telemetry windows, the event ring, rule evaluation,
the SQLite alarm log and webhook delivery with retries.
"""

from plait.controlplane.alarms.events import GovernanceEvent
from plait.controlplane.alarms.hub import AlarmHub, open_alarm_hub
from plait.controlplane.alarms.log import AlarmLog, DeliveryState
from plait.controlplane.alarms.telemetry import TelemetryReport, UpstreamStats

__all__ = ["AlarmHub", "AlarmLog", "DeliveryState", "GovernanceEvent", "TelemetryReport",
           "UpstreamStats", "open_alarm_hub"]  # fmt: skip
