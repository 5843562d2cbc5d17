"""The console's REST API (``/api/v1``): dependencies (:mod:`.deps`), schemas (:mod:`.schemas`) and
one router per domain (:mod:`.routes`)."""
