"""Pure planners: ``(object, observed world, clock) -> Plan``.

A plan says which step to start or stop, which children to create, the new status and
the Events to post. Planners do no I/O, so they carry most of the operator's tests; the
reconcilers (:mod:`bertops.operator.reconcile`) gather observations and apply plans.
"""
