"""The instance methods as the run sees them: one module per ``instances.method.kind``, each declaring its
config model and an :class:`~geoseg.run.instancespec.InstanceMethodSpec` (``INSTANCE_METHOD``) that
:mod:`geoseg.run.instanceregistry` lists. The per-window numerics stay in :mod:`geoseg.methods`."""
