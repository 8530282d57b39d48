"""bertops.modelio: how a model artifact becomes a torch (or onnxruntime) model, shared by
the trainer and the model server so that what is measured is what is served.

Modules: :mod:`~bertops.modelio.heads` (attention-head surgery: removing heads, and
rebuilding a head-pruned model before its weights load) and
:mod:`~bertops.modelio.recipe` (replaying a manifest's load recipe). Imported by
``bertops.trainer.compress`` and ``bertops.server.model``; it imports ``bertops.api`` only,
never the trainer or the server, and imports torch/transformers inside its functions.
"""
