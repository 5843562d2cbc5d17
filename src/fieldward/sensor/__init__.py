"""The live sensor: continuous capture from an interface, analysed segment by segment
(docs/sensor.md). ``fieldward sensor run`` / ``status`` live in :mod:`fieldward.sensor.cli`; the
publish hook is :class:`fieldward.sensor.sink.ResultSink`. Nothing is imported here, so that the
``fieldward`` command starts fast."""
