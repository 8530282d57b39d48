"""The embedded default: the control plane's build and launch, and ``bertops demo``.

Kept apart from :mod:`bertops.operator` (the operator proper) so that the operator image
and its import rules stay about reconciling; this package may import ``bertops.api`` and
``bertops.operator``, never torch (the demo starts trainer steps as processes).
"""
