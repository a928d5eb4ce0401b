// The local cluster's OpenID Connect provider: npm `oidc-provider` on loopback, for the demo and the tests.
//
// Everything secret (the hub's client secret, cookie keys, the signing key, the demo accounts' passwords) comes
// from JSON files named by environment variables that `securehpc dev up` writes mode 0600; nothing secret is
// on the command line or in the log.
//
//   SECUREHPC_OIDC_CONFIG    {issuer, port, clients: [...], cookie_keys: [...], jwks: {keys: [...]}}
//   SECUREHPC_OIDC_ACCOUNTS  {accounts: [{username, password, otp, groups, name, email, omit_amr}]}
//
// The accounts file is read again at every login, every claims lookup and every token request, so tests can
// change the "directory" while people are signed in:
//   - `groups`: the claims of the next ID token (also of a refreshed one);
//   - `disabled: true`: the account cannot sign in, and its refresh tokens are refused (invalid_grant);
//   - `sessions_revoked_at` (epoch seconds): every token issued to the account before then is refused, as an
//     admin's "sign out everywhere" would;
//   - `otp: null` for an account whose logins used it: the second factor was removed, so a refresh no longer
//     vouches for it: the refreshed ID token says amr ["pwd"] and the password-only acr.
//
// Refresh tokens are issued to clients allowed the refresh_token grant (the hub), without `offline_access`:
// they end with the provider session (Session TTL), or earlier through the rules above.
//
// Login is a minimal HTML form (oidc-provider's interaction API; its devInteractions accept any password and
// set no amr, so they are off). The form asks for a password and, optionally, a one-time code: with the right
// code the session's amr is ["pwd", "otp"] (multi-factor), without it ["pwd"]. An account with `omit_amr` gets
// no amr at all, to test a provider that does not say how the person signed in.
//
// Every sign-in shows the form (no single sign-on from an earlier sign-in of the same browser): otherwise a
// sign-in that the hub refused (no one-time code, no second factor at all) would stick in the provider's
// session, and every later "Sign in" would hand the hub the same refused login again without showing the
// form, whatever the person does (the hub's logout ends only the hub's own cookie).
import fs from 'node:fs';
import http from 'node:http';
import crypto from 'node:crypto';

import Provider, { interactionPolicy } from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.env.SECUREHPC_OIDC_CONFIG, 'utf8'));
const accountsFile = process.env.SECUREHPC_OIDC_ACCOUNTS;
const MFA_ACR = 'urn:securehpc:acr:mfa';
const PWD_ACR = 'urn:securehpc:acr:pwd';

function accounts() {
  return JSON.parse(fs.readFileSync(accountsFile, 'utf8')).accounts;
}

function findAccountByName(username) {
  return accounts().find((account) => account.username === username);
}

// What the directory says about a token issued earlier (a refresh token, a code): still good, or not.
function tokenStillValid(account, token) {
  if (account.disabled) return false;
  const revokedAt = Number(account.sessions_revoked_at || 0);
  const issuedAt = Math.min(token.iiat ?? Infinity, token.iat ?? Infinity);
  return !(revokedAt && issuedAt <= revokedAt);
}

// A token whose login used a second factor the account no longer has vouches for the password only.
function downgradeRemovedFactor(account, token) {
  if (!account.otp && Array.isArray(token.amr) && token.amr.includes('otp')) {
    token.amr = token.amr.filter((method) => method !== 'otp');
    token.acr = PWD_ACR;
  }
}

function sameSecret(given, expected) {
  // Constant time, so the demo does not teach a timing leak.
  const a = crypto.createHash('sha256').update(String(given)).digest();
  const b = crypto.createHash('sha256').update(String(expected)).digest();
  return crypto.timingSafeEqual(a, b);
}

// The login prompt, plus one rule: an authorization request that did not come straight from the form (the
// interaction's own result) asks for it, whatever session the browser still has.
const policy = interactionPolicy.base();
policy.get('login').checks.add(
  new interactionPolicy.Check(
    'every_sign_in',
    'this provider asks for the password (and one-time code) at every sign-in',
    'login_required',
    (ctx) => {
      const { Check } = interactionPolicy;
      return ctx.oidc.result?.login ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
    },
  ),
);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  cookies: { keys: config.cookie_keys },
  jwks: config.jwks,
  // The hub asks for `openid profile email groups`; groups carry `securehpc:PROJECT:ROLE` strings.
  claims: {
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    amr: null,
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
  },
  // The hub reads everything from the ID token (it is the signed statement of how the person signed in), so
  // the ID token carries the scope's claims too, not only the userinfo endpoint.
  conformIdTokenClaims: false,
  acrValues: [PWD_ACR, MFA_ACR],
  features: {
    devInteractions: { enabled: false },
  },
  // PKCE for every client, also confidential ones (the hub is one): a stolen code is useless without the
  // verifier that only the hub's state cookie holds.
  pkce: { required: () => true },
  interactions: {
    policy,
    url(_ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  ttl: {
    AuthorizationCode: 60,
    IdToken: 300,
    AccessToken: 300,
    RefreshToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  // The hub keeps logins alive by refreshing them; oidc-provider's default wants `offline_access` (and a consent
  // prompt) first. The refresh tokens still end with the provider session (expiresWithSession's default).
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // Called with the token being used (a code at login, a refresh token at refresh): the directory decides.
  async findAccount(_ctx, sub, token) {
    const account = findAccountByName(sub);
    if (!account || account.disabled) return undefined;
    if (token) {
      if (!tokenStillValid(account, token)) {
        console.log(`refused a ${token.kind || 'token'} of ${sub}: account disabled or sessions revoked`);
        return undefined;
      }
      downgradeRemovedFactor(account, token);
    }
    return {
      accountId: sub,
      async claims() {
        // Read again: the groups may have changed since the session started.
        const current = findAccountByName(sub) || account;
        return {
          sub,
          preferred_username: current.username,
          name: current.name,
          email: current.email,
          groups: current.groups || [],
        };
      },
    };
  },
  // The hub is a first-party client: no consent screen, the grant is created when the person has signed in.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['preferred_username', 'name', 'email', 'groups']);
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p id="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
});
provider.proxy = false;

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginForm(uid, message) {
  return page(
    'Sign in to the SecureHPC demo provider',
    `${message ? `<p id="error">${escape(message)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escape(uid)}/login">
  <label>User name <input name="login" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <label>One-time code (second factor) <input name="otp" autocomplete="one-time-code"></label>
  <button type="submit">Sign in</button>
</form>`,
  );
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Sign-in error', '<p id="error">this sign-in belongs to another browser session</p>'));
    return;
  }
  if (details.prompt.name !== 'login') {
    // Only the login prompt exists (consent is implied for the first-party hub, see loadExistingGrant).
    await provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
    return;
  }
  if (req.method === 'GET' && !action) {
    send(res, 200, loginForm(uid));
    return;
  }
  if (req.method !== 'POST' || action !== 'login') {
    send(res, 405, page('Sign-in error', '<p id="error">method not allowed</p>'));
    return;
  }
  const form = await readForm(req);
  const account = findAccountByName(form.get('login') || '');
  if (!account || !sameSecret(form.get('password') || '', account.password)) {
    send(res, 200, loginForm(uid, 'Unknown user name or wrong password.'));
    return;
  }
  if (account.disabled) {
    send(res, 200, loginForm(uid, 'This account is disabled.'));
    return;
  }
  const otp = form.get('otp') || '';
  if (otp && !(account.otp && sameSecret(otp, account.otp))) {
    send(res, 200, loginForm(uid, 'Wrong one-time code.'));
    return;
  }
  const login = { accountId: account.username, remember: false };
  if (!account.omit_amr) {
    login.amr = otp ? ['pwd', 'otp'] : ['pwd'];
    login.acr = otp ? MFA_ACR : PWD_ACR;
  }
  // The log names the person and how they signed in, never what they typed.
  console.log(`login ${account.username} amr=${(login.amr || []).join(',') || '-'}`);
  await provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/;

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, config.issuer).pathname;
  const match = INTERACTION.exec(path);
  if (!match) {
    callback(req, res);
    return;
  }
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (error) {
    // Expired or unknown interactions end here: say so, without the request's cookies or query.
    console.log(`interaction error: ${error.name}: ${error.message}`);
    if (!res.headersSent) {
      send(res, 400, page('Sign-in error', `<p id="error">${escape(error.message)}: start again from the hub</p>`));
    }
  }
});

server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
