"""spec.retraining: the operator requests training (a Job or a signed webhook), it never trains.

:mod:`.core` decides (pure), :mod:`.objects` builds the Job and CronJob (pure), :mod:`.queries`
batches the triggers' PromQL (pure), :mod:`.requests` builds the CloudEvent (pure), :mod:`.monitor`
is the one shared evaluation loop and the webhook sender, :mod:`.shell` wires them into a tick.
"""
