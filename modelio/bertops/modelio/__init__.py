"""bertops.modelio: how a model artifact becomes a torch (or onnxruntime) model, shared by
the trainer and the model server so that what is measured is what is served; and how an
artifact folder is published, shared by the trainer and the drift monitor so that there is
one atomic publication.

Modules: :mod:`~bertops.modelio.heads` (attention-head surgery: removing heads, and
rebuilding a head-pruned model before its weights load),
:mod:`~bertops.modelio.recipe` (replaying a manifest's load recipe) and
:mod:`~bertops.modelio.publish` (atomic publication of an artifact folder, local copies of
input folders). Imported by ``bertops.trainer.compress``, ``bertops.trainer.artifacts_io``,
``bertops.server.model`` and ``bertops.server.monitor.store``; it imports ``bertops.api``
only, never the trainer or the server, and imports torch/transformers/fsspec inside its
functions.
"""
