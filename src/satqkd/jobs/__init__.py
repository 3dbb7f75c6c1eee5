"""Jobs a user runs, composed from the stages; one module each, the one-pass job on its own.

- :mod:`.pass_simulation` — the physical layer of one pass (``satqkd simulate``);
- :mod:`.one_pass` — one pass simulated and post-processed (``satqkd run`` as a record), which the
  jobs below run per pass;
- :mod:`.relay` — the trusted relay over two passes and key stores (``satqkd relay``);
  :mod:`.kme_demo` — that relay filling the stores of the KME demo (``satqkd kme demo``);
- :mod:`.campaign`, :mod:`.relay_campaign` — every pass of N days at event level (``satqkd campaign``);
- :mod:`.plan` — a year of a constellation × station network with the fast key model
  (:mod:`.fastkey`, settings from :mod:`.optimise`; ``satqkd plan``).

No stage (``sky``, ``quantum``, ``postprocess``, ``protocol``, ``keys``) imports a job
(``tests/test_layout.py``).
"""
