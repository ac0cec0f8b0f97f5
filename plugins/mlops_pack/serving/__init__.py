"""The model server: one process per model spec, two slots (stable and candidate).

Modules: ``requests`` turns a JSON body into the model's input frame or a 4xx that names
the problem; ``slots`` loads verified models and routes traffic; ``telemetry`` keeps the
Prometheus metrics and the per-slot figures the deploy step compares; ``prediction_log``
appends every prediction to day partitions with retention; ``app`` is the HTTP surface;
``client`` is what the deploy step and people use to talk to it.
"""
