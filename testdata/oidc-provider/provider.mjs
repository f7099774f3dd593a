// A strict OpenID Provider for tokenkeep's conformance tests, built on the
// certified oidc-provider package. internal/certprovider starts it; nothing
// else should.
//
//	node provider.mjs
//
// It listens on a free loopback port and prints one JSON line on stdout once
// it is ready: {"issuer": "http://127.0.0.1:PORT"}. It exits when its stdin
// closes, so it cannot outlive the test that started it.
//
// Strict means: refresh tokens rotate on every use, and a spent one presented
// again revokes the whole grant (reuse detection); access tokens live 2 s;
// no clock tolerance; PKCE required for public clients.
//
// Routes under /test/ exist for the tests only: they approve logins without
// a browser, slow the token endpoint down, and report counters. Logins
// through the authorization endpoint are approved at once for the user
// "alice", after the usual login and consent redirects.
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

import { Provider } from 'oidc-provider';

const SUBJECT = 'alice';
const LOOPBACK_REDIRECT = 'http://127.0.0.1/callback';

// RESOURCE is the one resource server (RFC 8707) the provider knows.
const RESOURCE = 'urn:tokenkeep:test-api';

const clients = [
  {
    // A command-line tool: no secret, loopback redirect on any port
    // (RFC 8252), PKCE required.
    client_id: 'tokenkeep-public',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: [LOOPBACK_REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  },
  {
    // A server-side application authenticating with HTTP Basic.
    client_id: 'tokenkeep-basic',
    client_secret: 'tokenkeep-basic-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: [LOOPBACK_REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  },
  {
    // The same, with its credentials in the request body.
    client_id: 'tokenkeep-post',
    client_secret: 'tokenkeep-post-secret',
    token_endpoint_auth_method: 'client_secret_post',
    redirect_uris: [LOOPBACK_REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  },
  {
    // A device with no browser (RFC 8628): public, like most CLIs.
    client_id: 'tokenkeep-device',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    redirect_uris: [],
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
  },
];

// Store is an adapter that keeps everything in maps, for the life of the
// process, until it is destroyed or its grant revoked; the models check
// expiry themselves. The package's own memory adapter evicts entries beyond
// a thousand, which would turn a spent refresh token into an unknown one
// and hide reuse detection, and drops expired ones, which would keep the
// tests from asking about a token that has just expired.
const store = new Map(); // "Model:id" -> payload
const grantMembers = new Map(); // grantId -> Set of "Model:id"
const byUserCode = new Map(); // user code -> "DeviceCode:id"
const bySessionUid = new Map(); // session uid -> "Session:id"

class Store {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload) {
    const key = this.key(id);
    store.set(key, structuredClone(payload));
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (payload.userCode) byUserCode.set(payload.userCode, key);
    if (this.model === 'Session' && payload.uid) bySessionUid.set(payload.uid, key);
  }

  static get(key) {
    const payload = store.get(key);
    return payload && structuredClone(payload);
  }

  async find(id) {
    return Store.get(this.key(id));
  }

  async findByUserCode(userCode) {
    const key = byUserCode.get(userCode);
    return key && Store.get(key);
  }

  async findByUid(uid) {
    const key = bySessionUid.get(uid);
    return key && Store.get(key);
  }

  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// Counters the tests read through /test/stats. Per grant, through
// /test/grant.
const stats = {
  token_requests: 0, // POSTs to the token endpoint, any outcome
  grant_types: {}, // token requests by grant_type
  refresh_grants: 0, // refresh_token grants answered with new tokens
  reuse_detections: 0, // spent refresh tokens presented again
  grants_revoked: 0, // grants ended, by reuse detection or revocation
  revocation_requests: 0, // POSTs to the revocation endpoint
  token_errors: {}, // token endpoint errors by error code
  device_authorizations: 0,
  delayed: 0, // token requests the delay knob held back
};
const grants = new Map(); // grantId -> { refreshes, reuse_detections, revoked, revoked_by }
const latestAccess = new Map(); // grantId -> id of the last access token issued

function grantStats(id) {
  if (!grants.has(id)) grants.set(id, { refreshes: 0, reuse_detections: 0, revoked: false, revoked_by: '' });
  return grants.get(id);
}

// waiters are long polls on /test/stats, woken whenever a counter moves.
let waiters = [];
function changed() {
  const w = waiters;
  waiters = [];
  w.forEach((wake) => wake());
}

// delay holds back the next token requests: before the provider looks at
// them, or after it has answered (a refresh token has rotated, the answer
// has not left).
const delay = { before: 0, after: 0, count: 0 };

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// signingKeys are made afresh at every start: nothing outlives the process.
function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'conformance', use: 'sig', alg: 'RS256' }] };
}

function configuration() {
  return {
    clients,
    jwks: signingKeys(),
    adapter: Store,
    clockTolerance: 0,
    rotateRefreshToken: true,
    // A refresh token lives as long as the grant; it ends by rotation,
    // reuse detection or revocation, not with a browser session.
    expiresWithSession: async () => false,
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    pkce: { methods: ['S256'], required: (ctx, client) => client.clientAuthMethod === 'none' },
    ttl: {
      AccessToken: 2,
      AuthorizationCode: 60,
      DeviceCode: 600,
      IdToken: 60,
      RefreshToken: 3600,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
    },
    cookies: { keys: ['tokenkeep-conformance-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (resource !== RESOURCE) throw new Error(`unknown resource ${resource}`);
          return { scope: 'api:read', accessTokenTTL: 2, accessTokenFormat: 'opaque' };
        },
      },
    },
  };
}

// approve completes an interaction at once: the user logs in, then grants
// everything the client asked for.
async function approve(provider, ctx) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  switch (prompt.name) {
    case 'login':
      result = { login: { accountId: SUBJECT } };
      break;
    case 'consent': {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
      break;
    }
    default:
      result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(to);
}

// approveDevice does what a user entering the code and consenting does.
async function approveDevice(provider, userCode) {
  const code = await provider.DeviceCode.findByUserCode(userCode.toUpperCase().replace(/\W/g, ''));
  if (!code || code.accountId || code.error) return false;
  const scope = (code.params.scope ?? '').split(' ').filter(Boolean);
  const grant = new provider.Grant({ accountId: SUBJECT, clientId: code.clientId });
  grant.addOIDCScope(scope.join(' '));
  Object.assign(code, {
    accountId: SUBJECT,
    authTime: Math.floor(Date.now() / 1000),
    grantId: await grant.save(),
    scope: scope.join(' '),
  });
  await code.save();
  return true;
}

function observe(provider) {
  provider.on('grant.success', (ctx) => {
    const at = ctx.oidc.entities.AccessToken;
    if (at?.grantId) latestAccess.set(at.grantId, at.jti);
    if (ctx.oidc.params.grant_type === 'refresh_token') {
      stats.refresh_grants += 1;
      grantStats(ctx.oidc.entities.RefreshToken.grantId).refreshes += 1;
    }
    changed();
  });
  provider.on('grant.error', (ctx, err) => {
    const code = err.error ?? 'server_error';
    stats.token_errors[code] = (stats.token_errors[code] ?? 0) + 1;
    if (err.error_detail === 'refresh token already used') {
      stats.reuse_detections += 1;
      const rt = ctx.oidc?.entities?.RefreshToken;
      if (rt) grantStats(rt.grantId).reuse_detections += 1;
    }
    changed();
  });
  provider.on('grant.revoked', (ctx, grantId) => {
    stats.grants_revoked += 1;
    const g = grantStats(grantId);
    g.revoked = true;
    g.revoked_by = ctx.oidc.route === 'revocation' ? 'revocation' : 'reuse';
    changed();
  });
  provider.on('device_authorization.success', () => {
    stats.device_authorizations += 1;
    changed();
  });
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// testRoute answers the test-only routes.
async function testRoute(provider, req, res, url) {
  const q = url.searchParams;
  switch (`${req.method} ${url.pathname}`) {
    case 'GET /test/stats': {
      // With wait_for=<counter>&at_least=<n>, a long poll: it answers when
      // the counter reaches n, or after timeout_ms with status 408.
      const name = q.get('wait_for');
      if (name) {
        const atLeast = Number(q.get('at_least') ?? 1);
        const deadline = Date.now() + Number(q.get('timeout_ms') ?? 30000);
        while (!(stats[name] >= atLeast)) {
          const left = deadline - Date.now();
          if (left <= 0) return json(res, 408, stats);
          await new Promise((wake) => {
            waiters.push(wake);
            setTimeout(wake, left);
          });
        }
      }
      return json(res, 200, stats);
    }
    case 'GET /test/grant': {
      // By refresh token (its grant's id) or by id (its counters).
      let id = q.get('id');
      const rt = q.get('refresh_token');
      if (rt) {
        const found = await provider.RefreshToken.find(rt, { ignoreExpiration: true });
        if (!found) return json(res, 404, { error: 'unknown refresh token' });
        id = found.grantId;
      }
      const live = Boolean(id && await provider.Grant.find(id));
      return json(res, 200, { id, live, ...grantStats(id) });
    }
    case 'GET /test/access-token': {
      // Whether the provider issued an access token, for which grant, and
      // whether it is that grant's latest; expired or not.
      const at = await provider.AccessToken.find(q.get('value') ?? '', { ignoreExpiration: true });
      if (!at) return json(res, 404, { error: 'unknown access token' });
      return json(res, 200, {
        grant_id: at.grantId,
        latest: latestAccess.get(at.grantId) === at.jti,
        expired: at.isExpired,
        audience: at.aud ?? '',
        scope: at.scope ?? '',
      });
    }
    case 'POST /test/device/approve': {
      const form = await readForm(req);
      const ok = await approveDevice(provider, form.get('user_code') ?? '');
      return json(res, ok ? 200 : 404, { approved: ok });
    }
    case 'POST /test/token-delay': {
      const form = await readForm(req);
      delay.before = Number(form.get('before_ms') ?? 0);
      delay.after = Number(form.get('after_ms') ?? 0);
      delay.count = Number(form.get('count') ?? 1);
      return json(res, 200, delay);
    }
    default:
      return json(res, 404, { error: 'no such test route' });
  }
}

// holdBack counts token requests and holds back the next delay.count of
// them.
async function holdBack(ctx, next) {
  if (ctx.method !== 'POST' || ctx.path !== '/token') return next();
  stats.token_requests += 1;
  changed();
  let held = false;
  if (delay.count > 0) {
    delay.count -= 1;
    held = true;
    stats.delayed += 1;
  }
  if (held && delay.before) await sleep(delay.before);
  await next();
  const gt = ctx.oidc?.params?.grant_type ?? 'unknown';
  stats.grant_types[gt] = (stats.grant_types[gt] ?? 0) + 1;
  if (held && delay.after) await sleep(delay.after);
}

// pollEverySecond advertises a 1 s polling interval for the device flow
// (RFC 8628 section 3.2), where clients would otherwise wait 5 s.
async function pollEverySecond(ctx, next) {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/device/auth' && ctx.status === 200 && ctx.body) {
    ctx.body = { ...ctx.body, interval: 1 };
  }
}

async function countRevocations(ctx, next) {
  if (ctx.method === 'POST' && ctx.path === '/token/revocation') {
    stats.revocation_requests += 1;
    changed();
  }
  return next();
}

async function interactions(provider, ctx, next) {
  if (ctx.method === 'GET' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
    return approve(provider, ctx);
  }
  return next();
}

function main() {
  const server = http.createServer();
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    const issuer = `http://127.0.0.1:${port}`;
    const provider = new Provider(issuer, configuration());
    observe(provider);
    provider.use(holdBack);
    provider.use(countRevocations);
    provider.use(pollEverySecond);
    provider.use((ctx, next) => interactions(provider, ctx, next));
    const app = provider.callback();
    server.on('request', (req, res) => {
      const url = new URL(req.url, issuer);
      if (url.pathname.startsWith('/test/')) {
        testRoute(provider, req, res, url).catch((err) => json(res, 500, { error: String(err) }));
        return;
      }
      app(req, res);
    });
    process.stdout.write(`${JSON.stringify({ issuer })}\n`);
  });
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
}

main();
