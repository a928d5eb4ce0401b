"""Login through the institution's OpenID Connect provider, with multi-factor authentication enforced.

``SecureHPCAuthenticator`` is oauthenticator's ``GenericOAuthenticator`` (configured like it) with:

- **A validated ID token.** oauthenticator 17 reads ``id_token`` without checking its signature
  (``userdata_from_id_token``). Here the ID token is the only source of who signed in and how: its signature
  is checked against the provider's JWKS (asymmetric algorithms only, never ``none`` or a shared secret), and
  its issuer, audience (``azp`` when there are several), expiry, issue time and nonce. The nonce is made per
  login and kept in oauthenticator's signed state cookie beside the PKCE verifier.
- **MFA enforcement** (on by default): the ID token's ``amr`` must contain one of ``required_amr`` and,
  if ``required_acr`` is set, its ``acr`` must be one of those.
- **Project roles from the provider** (optional, ``project_roles_claim``): groups ``securehpc:PROJECT:ROLE``
  become memberships at every login, through the group sync of :mod:`jupyter_securehpc.projects.sync` (which
  goes through :class:`~jupyter_securehpc.projects.service.ProjectService`).
- **Deny by default**: nobody may log in unless ``allowed_users``/``allowed_groups``/``admin_groups`` or
  ``allow_all`` say so (oauthenticator's own allow rules); hub admins can come from ``admin_groups``. Group
  rules need ``manage_groups = True``; the groups are the ID token's ``groups`` claim
  (``auth_state_groups_key``, default ``oauth_user.groups``).

A site's ``jupyterhub_config.py``::

    c.JupyterHub.authenticator_class = "securehpc"
    c.SecureHPCAuthenticator.oidc_issuer = "https://idp.example.org/realms/research"
    c.SecureHPCAuthenticator.client_id = "jupyterhub"  # the secret: $OAUTH_CLIENT_SECRET
    c.SecureHPCAuthenticator.oauth_callback_url = "https://hub.example.org/hub/oauth_callback"
    c.SecureHPCAuthenticator.scope = ["openid", "profile", "email", "groups"]
    c.SecureHPCAuthenticator.manage_groups = True
    c.SecureHPCAuthenticator.allowed_groups = {"hpc-users"}
    c.SecureHPCAuthenticator.admin_groups = {"hpc-admins"}
    c.SecureHPCAuthenticator.project_roles_claim = "groups"  # securehpc:PROJECT:ROLE
    c.SecureHPCAuthenticator.support_contact = "the service desk (servicedesk@example.org)"

Every refusal is a 403 page that tells the person what to do, and an audit event (``login`` ``denied``). A
refusal happens before JupyterHub creates the user and before any membership changes: nothing about the
person changes when a login is refused.

Bad project groups refuse the whole login, on purpose: a group naming a project or role that does not exist
is a directory mistake (a typo, a deleted project), and applying the other groups would leave the person with
a partial set of roles that neither the directory nor the data owners asked for. The page names the groups, so
the directory can be fixed; nothing changes until it is.

**Login lifetime** (``refresh_with_provider``, on with ``enable_auth_state``): the hub keeps the login's refresh
token in its encrypted auth state and asks the provider again every ``auth_refresh_age`` seconds (default 15
minutes) and before every server start. Each renewal runs the login's checks again on the renewed ID token
(signature, issuer, audience, same ``sub``, MFA, groups, project roles, allow and block rules). When the provider
says no (refresh token refused or revoked: account disabled or deleted, sessions revoked) or a check fails, the
person is logged out (``refresh_user`` returns False; browser requests go to the login page and, with
``auth_refresh_strict``, API tokens are refused) and a ``login.refresh`` ``denied`` event is written. A provider
that does not answer keeps a login for ``refresh_outage_grace`` seconds after its last confirmation, then ends it.
"""

from .handlers import LoginRefused, SecureHPCCallbackHandler, SecureHPCLoginHandler
from .oidc import ASYMMETRIC_ALGORITHMS, SecureHPCAuthenticator
from .policy import mfa_problem
from .refresh import RefreshGate, TokenAnswer, outage_verdict, read_token_answer

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "LoginRefused",
    "RefreshGate",
    "SecureHPCAuthenticator",
    "SecureHPCCallbackHandler",
    "SecureHPCLoginHandler",
    "TokenAnswer",
    "mfa_problem",
    "outage_verdict",
    "read_token_answer",
]
