"""Pipeline engines other than the native one (a Job per step, run by the planners):
:mod:`.argo` builds the training pipeline as an Argo Workflow."""
