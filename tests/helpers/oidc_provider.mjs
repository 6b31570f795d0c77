// A real OpenID Connect provider (the certified `oidc-provider` npm package) on loopback,
// for tests. Usage: node oidc_provider.mjs CONFIG.json, where CONFIG holds
// {modules, port, client: {client_id, client_secret, redirect_uri},
//  accounts: {login: {password, claims: {...}}}}.
// Logins go through its interaction endpoints: GET /interaction/UID shows a form,
// POST /interaction/UID/login {login, password} checks the password. Consent is implied for
// the one (first-party) client. Prints "listening" when ready.
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { default: Provider } = await import(
  pathToFileURL(join(config.modules, 'oidc-provider', 'lib', 'index.js')).href);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client.client_id,
    client_secret: config.client.client_secret,
    redirect_uris: [config.client.redirect_uri],
  }],
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
    posix: ['uidNumber', 'gidNumber', 'gidNumbers', 'homeDirectory'],
  },
  features: { devInteractions: { enabled: false } },
  findAccount: (ctx, sub) => config.accounts[sub] && {
    accountId: sub,
    claims: () => ({ sub, preferred_username: sub, ...config.accounts[sub].claims }),
  },
  loadExistingGrant: async (ctx) => {
    const { client, session, provider: p } = ctx.oidc;
    const grant = new p.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
});

function passwordMatches(login, password) {
  const expected = Buffer.from(config.accounts[login]?.password ?? '');
  const given = Buffer.from(password ?? '');
  return expected.length > 0 && expected.length === given.length && timingSafeEqual(expected, given);
}

function page(res, status, uid, message = '') {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>Sign in</title><p>${message}</p>
<form method="post" action="/interaction/${uid}/login">
<input name="login"><input name="password" type="password"><button>Sign in</button></form>`);
}

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

async function interaction(req, res, isLogin) {
  const details = await provider.interactionDetails(req, res);
  if (!isLogin || req.method !== 'POST') return page(res, 200, details.uid);
  const { login, password } = await form(req);
  if (!passwordMatches(login, password)) return page(res, 401, details.uid, 'Wrong login or password');
  return provider.interactionFinished(req, res, { login: { accountId: login } },
    { mergeWithLastSubmission: false });
}

const callback = provider.callback();
http.createServer((req, res) => {
  const match = req.url.match(/^\/interaction\/[^/?]+(\/login)?(\?|$)/);
  if (!match) return callback(req, res);
  return interaction(req, res, Boolean(match[1])).catch((err) => {
    res.writeHead(400, { 'Content-Type': 'text/plain' });
    res.end(`interaction failed: ${err.message}\n`);
  });
}).listen(config.port, '127.0.0.1', () => console.log(`listening on ${issuer}`));
