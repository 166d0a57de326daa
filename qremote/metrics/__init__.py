"""What qremote counts and how it is shown: a delivery's facts (:mod:`.trace`), the
counts kept since start (:mod:`.counts`), the Prometheus text (:mod:`.exposition`), the
``/metrics`` server (:mod:`.http`) and the JSON delivery record (:mod:`.record`).

One set of numbers: ``qremote status``, ``/metrics`` and the JSON records are all made
from the same :class:`~qremote.metrics.counts.Counts`, so they never disagree.
"""
