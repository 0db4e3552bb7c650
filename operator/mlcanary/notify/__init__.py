"""Notifications: the engine's Events routed to Slack, Microsoft Teams or a CloudEvents receiver.

:mod:`.messages` builds and signs the payloads (pure); :mod:`.dispatch` delivers them from a bounded
queue in the background, so a slow or dead receiver never delays a tick.
"""
