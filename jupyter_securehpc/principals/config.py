"""Site settings of the principals: their names' prefix and what makes their accounts."""

from __future__ import annotations

from traitlets import Enum, Float, List, Unicode, validate
from traitlets.config import Configurable

from .accounts import AccountProvisioner, CommandAccounts, LocalAccounts, RecordOnly
from .names import DEFAULT_PREFIX, InvalidAccountName, validate_prefix


class ProjectAccounts(Configurable):
    """The Unix accounts sessions and headless runs run as: one principal per person and project, in one group
    per project."""

    prefix = Unicode(
        DEFAULT_PREFIX,
        help="""Start of every principal's and project group's name (``<prefix><project>_<user>_<hash>``,
        ``<prefix><project>_<hash>``; at most 32 characters in all): 1-8 lower-case letters, digits or ``-``,
        starting with a letter. It keeps them apart from people's accounts and lets several hubs share one
        directory. A principal's name is recorded when the person joins the project; changing the prefix later
        renames nothing.""",
    ).tag(config=True)

    provisioner = Enum(
        ["local", "command", "none"],
        default_value="local",
        help="""What makes the accounts when ``securehpc project create``, ``member add``, ``member remove``,
        ``account sync``, the login's group sync or the project portal change members. ``local``: ``groupadd``,
        ``useradd`` and ``usermod`` on the host that runs the command, the hub or its portal (as root; for nodes
        that share its ``/etc/passwd``);
        ``command``: the site's ``command`` (its directory: LDAP, IPA, ...); ``none``: nothing is made, the
        site's directory creates them from ``securehpc account list --json``. Sessions refuse to start under
        an account that is missing or not as it must be (see the admin guide).""",
    ).tag(config=True)

    command = List(
        Unicode(),
        help="""The site's account command for ``provisioner = "command"``, an absolute path and fixed
        arguments, e.g. ``["/usr/local/sbin/securehpc-accounts"]``. It is called as ``COMMAND group-ensure
        GROUP PROJECT``, ``COMMAND principal-ensure PRINCIPAL GROUP PROJECT USER`` and ``COMMAND principal-lock
        PRINCIPAL PROJECT USER``; exit status 0 means done (also when nothing had to change).""",
    ).tag(config=True)

    timeout = Float(60.0, help="Seconds each account command may take before it counts as failed.").tag(config=True)

    lookup_wait = Float(
        30.0,
        help="""Seconds to wait, after the site's command made an account, until it resolves on this host
        (directory caches such as sssd's).""",
    ).tag(config=True)

    @validate("prefix")
    def _check_prefix(self, proposal: dict) -> str:
        try:
            return validate_prefix(proposal["value"])
        except InvalidAccountName as error:
            raise ValueError(f"ProjectAccounts.prefix: {error}") from None

    def make_provisioner(self) -> AccountProvisioner:
        """The provisioner these settings describe."""
        if self.provisioner == "command":
            return CommandAccounts(self.command, self.prefix, timeout=self.timeout, lookup_wait=self.lookup_wait)
        if self.provisioner == "local":
            return LocalAccounts(self.prefix, timeout=self.timeout)
        return RecordOnly(self.prefix)
