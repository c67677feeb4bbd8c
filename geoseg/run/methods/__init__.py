"""The segmentation methods as the run sees them: one module per ``method.kind``, each declaring its
``method:`` config model and a :class:`~geoseg.run.methodspec.MethodSpec` (``METHOD``) that
:mod:`geoseg.run.registry` lists. The per-chunk numerics stay in :mod:`geoseg.methods`. An instance method
(``maskrcnn``) declares its ``instances:`` config and a runner instead (:mod:`geoseg.run.modelinstances`)."""
