"""What the test tiers share, as one package (``from testkit.cluster import wait``), not loose modules.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so every tier (and bench/, hack/mutation's copy)
imports the same modules by the same names:

- ``clock``: the injected clock tests move by hand (``Clock``; the unit tier's ``clock`` fixture)
- ``cases``: pool specs and the table of invalid ones (the model's tests and the CRD's share it)
- ``measure``: ``record()``, figures a test measured, kept for the closing notes
- ``services``: real PostgreSQL and SMTP (aiosmtpd) processes the process and cluster tiers start
- ``skips``: the one place that says why a test cannot run here
- ``proc``: real worker subprocesses and the CLI (the process tier)
- ``cluster``: a handle on the cluster under test, kubectl, waiting (the cluster tier)
- ``hostile``: hostile pool specs, hand-written and generated (the cluster tier)
"""
