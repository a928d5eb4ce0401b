"""Projects, members, datasets, shares and policies: the database (``model``, ``db``), who may do what
(``authz``), and :class:`~jupyter_securehpc.projects.service.ProjectService`, the only door to the database
that the CLI, the spawner, the authenticator's group sync (``sync``) and the demo go through."""
