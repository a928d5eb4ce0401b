"""The session contract: every value that crosses the process boundaries of a session, defined once.

- ``spec``: ``SessionSpec``, what the hub signs (``jobspec``) and the node launcher verifies and parses;
- ``sessionfile``: ``SessionFile``, what the launcher writes into the sandbox and the server extension reads;
- ``reports``: the payloads the launcher posts to the hub (port, stages, audit events, activity);
- ``env``: the ``SECUREHPC_*`` environment variables between the hub, the launcher and the sandbox.

Untrusted policy data is parsed by ``Policy.from_untrusted`` (``projects.policy``) on every side.

Nothing is imported here: the sandbox's first step and the store sandbox read ``env`` only, and start fast.
"""
